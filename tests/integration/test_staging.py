"""The staging area is a URL reached through a path object (UPath, or Airflow's
ObjectStoragePath): tasks hand each other references into it, never local paths."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest

from etl import run as pipeline
from etl import staging
from etl.config import Settings
from etl.contracts import RunRequest
from etl.plan import files as plan_files
from etl.read.canonical import Tables, frame
from tests.integration.test_sync import ACADEMY, UAI_A, UAI_B, school_a, school_b
from tests.paths import REPO


def _tables() -> Tables:
    t = Tables()
    t.frames["persons"] = frame("persons", {"person_key": ["SIECLE$X$1", "SIECLE$X$2"],
                                            "uai": ["0510001Z", "0510001Z"]})
    return t


def test_default_staging_is_a_file_url_under_the_workdir(tmp_path: Path) -> None:
    st = Settings.from_env({"ENTSYNC_WORKDIR": str(tmp_path / "w")})
    assert st.staging_url == (tmp_path / "w" / "staging").as_uri()
    ref = staging.write_bytes(st, "run1/plan.json", b"{}")
    assert ref == "run1/plan.json"
    assert (tmp_path / "w" / "staging" / "run1" / "plan.json").read_bytes() == b"{}"
    assert staging.read_bytes(st, ref) == b"{}" and staging.exists(st, ref)
    assert not staging.exists(st, "run1/other.json")
    # an absolute local path (what runs before the staging URL recorded) is read as is
    assert staging.read_bytes(st, str(tmp_path / "w" / "staging" / "run1" / "plan.json")) == b"{}"
    staged = staging.path(st, "run1/0510001Z")
    _tables().save(staged)
    back = Tables.load(staged)
    assert back["persons"]["person_key"].tolist() == ["SIECLE$X$1", "SIECLE$X$2"]
    assert (tmp_path / "w" / "staging" / "run1" / "0510001Z" / "persons.pkl").is_file()


def test_memory_staging_round_trip() -> None:
    root = f"memory://entsync-{secrets.token_hex(4)}/staging"
    st = Settings.from_env({"ENTSYNC_WORKDIR": "/nonexistent", "ENTSYNC_STAGING_URL": root})
    assert st.staging_url == root
    staging.write_bytes(st, "r/held/X.json", b'{"a": 1}')
    assert staging.read_bytes(st, "r/held/X.json") == b'{"a": 1}'
    _tables().save(staging.path(st, "r/U"))
    assert Tables.load(staging.path(st, "r/U"))["persons"].shape[0] == 2
    fs = fsspec.filesystem("memory")
    assert fs.exists("/" + root.removeprefix("memory://") + "/r/U/persons.pkl")
    assert not Path("/nonexistent").exists()


def test_remove_tree_and_children_on_a_remote_url() -> None:
    """What the staging retention uses, through fsspec (s3:// goes the same way)."""
    root = f"memory://entsync-{secrets.token_hex(4)}/staging"
    st = Settings.from_env({"ENTSYNC_WORKDIR": "/nonexistent", "ENTSYNC_STAGING_URL": root})
    staging.write_bytes(st, "r/plan.json", b"{}")
    staging.write_bytes(st, "r/reports/summary.json", b"{}")
    _tables().save(staging.path(st, "r/U"))
    assert staging.children(st, "r") == ["U", "plan.json", "reports"]
    assert staging.remove_tree(st, "r/U") and staging.remove_tree(st, "r/plan.json")
    assert not staging.remove_tree(st, "r/U")  # already gone
    assert staging.children(st, "r") == ["reports"] and staging.children(st, "nope") == []
    assert staging.read_bytes(st, "r/reports/summary.json") == b"{}"


@pytest.mark.ldap
def test_a_whole_sync_stages_nothing_on_local_disk(env: Settings) -> None:
    """Staging on memory://: the run succeeds, so every stage found what the previous one
    staged there; the workdir holds reports, quarantine and the schools' delivered pages
    only, no staged file."""
    root = f"memory://entsync-{secrets.token_hex(4)}/staging"
    st = dataclasses.replace(env, staging_url=root)
    school_a(st.landing)
    school_b(st.landing)
    summary = pipeline.run_sync(st, RunRequest(ACADEMY))
    assert summary["status"] == "success" and summary["applied"] > 0
    rid = summary["run_id"]
    fs = fsspec.filesystem("memory")
    base = "/" + root.removeprefix("memory://") + f"/{rid}"
    staged = {p.removeprefix(base + "/") for p in fs.find(base)}
    assert {"plan.json", f"{UAI_A}/persons.pkl", f"{UAI_B}/persons.pkl",
            "reports/summary.json", "reports/report.html",
            f"reports/schools/{UAI_A}/validation_{UAI_A}.html",
            f"reports/schools/{UAI_A}/retours_{UAI_A}.html"} <= staged
    lines = fs.cat(f"{base}/plan.json").splitlines()  # a header, then one change a line
    assert json.loads(lines[0])["change_count"] == summary["changes"] == len(lines) - 1
    header, planned = plan_files.read_plan_file(st, f"{rid}/plan.json")
    assert header["run_id"] == rid and len(list(planned)) == summary["changes"]
    assert json.loads(fs.cat(f"{base}/reports/summary.json"))["run_id"] == rid
    assert summary["staged_reports"] == f"{rid}/reports"
    local = [p.relative_to(st.workdir) for p in st.workdir.rglob("*") if p.is_file()]
    assert not (st.workdir / "staging").exists()
    assert all(p.parts[0] in ("reports", "quarantine", "schools")
               or p.name.startswith("state.db")
               for p in local), local
    assert not [p for p in local if p.suffix == ".pkl" or p.name == "plan.json"]


def test_airflow_object_storage_path_as_staging_root(tmp_path: Path) -> None:
    """What the DAG does when the `entsync_staging` connection exists: Settings.staging_path
    is an ObjectStoragePath (run in a subprocess: Airflow never runs in the test process)."""
    code = f"""
import json, sys
from airflow.sdk import ObjectStoragePath
from etl import staging
from etl.read.canonical import Tables, frame
from etl.config import Settings
root = ObjectStoragePath({(tmp_path / 'osp').as_uri()!r}, conn_id=None)
st = Settings.from_env({{"ENTSYNC_WORKDIR": {str(tmp_path / 'w')!r}}}, staging_path=root)
staging.write_bytes(st, "r1/plan.json", b'{{"changes": []}}')
t = Tables(); t.frames["persons"] = frame("persons", {{"person_key": ["K1"]}})
t.save(staging.path(st, "r1/U"))
keys = Tables.load(staging.path(st, "r1/U"))["persons"]["person_key"].tolist()
print(json.dumps({{"plan": staging.read_bytes(st, "r1/plan.json").decode(),
                   "type": type(staging.path(st, "r1/U")).__name__, "keys": keys}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ENTSYNC_"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=False, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"plan": '{"changes": []}', "type": "ObjectStoragePath", "keys": ["K1"]}
    assert (tmp_path / "osp" / "r1" / "plan.json").is_file()
    assert (tmp_path / "osp" / "r1" / "U" / "persons.pkl").is_file()
    assert not (tmp_path / "w" / "staging").exists()


def test_plans_are_written_as_a_stream_and_hashed_as_written(tmp_path: Path) -> None:
    """The plan file is encoded change by change, handed to staging in chunks (never one
    string of the whole plan); the digest is that of the bytes written, whatever the chunk
    size, and it reads back as written."""
    import hashlib

    from etl.config import Settings
    from etl.plan.diff import Change, plan_lines
    from etl.plan.files import _write_plan, read_plan_file

    attrs = [{"cn": ["Éloïse ß 漢"], "a": [str(i)]} for i in range(50)]
    changes = [Change("add", f"uid={i},ou=people", "person", "0671234X", "create",
                      attrs=a, after=a, uid=str(i)) for i, a in enumerate(attrs)]
    header = {"run_id": "r", "docs": {"0671234X": []}, "n": 3, "none": None}
    whole = b"".join(plan_lines(header, changes, size=1 << 20))
    small = list(plan_lines(header, changes, size=7))
    assert b"".join(small) == whole and len(small) >= 50
    st = Settings.from_env({"ENTSYNC_WORKDIR": str(tmp_path / "w"),
                            "ENTSYNC_LANDING": str(tmp_path / "l")})
    digest = _write_plan(st, "run/plan.json", header, changes)
    written = (tmp_path / "w" / "staging" / "run" / "plan.json").read_bytes()
    assert written == whole and digest == hashlib.sha256(whole).hexdigest()
    back_header, back = read_plan_file(st, "run/plan.json")
    assert back_header["change_count"] == 50 and back_header["docs"] == header["docs"]
    assert list(back) == changes
