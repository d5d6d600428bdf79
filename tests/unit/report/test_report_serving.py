"""etl.report.page's side of the Airflow plugin that serves the run reports: which file a URL may
reach (only a run's own .html/.json files), which academy a run is, the report's address."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from etl.errors import ReportNotFound
from etl.report.assets import directory_asset_name, directory_asset_uri
from etl.report.page import (
    academy_of_run,
    media_type,
    report_url,
    resolve_report_file,
)

RUN = "ac-reims-20261128T201500-ab12"


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    root = tmp_path / "work" / "reports"
    run = root / RUN
    (run / "schools" / "0510001A").mkdir(parents=True)
    (run / "report.html").write_text("<h1>run</h1>", "utf-8")
    (run / "summary.json").write_text("{}", "utf-8")
    (run / "schools" / "0510001A" / "validation_0510001A.html").write_text("v", "utf-8")
    (run / "plan.pickle").write_bytes(b"x")
    (root / "other.html").write_text("not this run's", "utf-8")
    (tmp_path / "work" / "state.db").write_bytes(b"secret")
    (tmp_path / "work" / "secret.html").write_text("outside", "utf-8")
    return root


def test_a_runs_pages_and_json_are_served(reports: Path) -> None:
    run = (reports / RUN).resolve()
    assert resolve_report_file(reports, RUN, "report.html") == run / "report.html"
    assert resolve_report_file(reports, RUN, "summary.json") == run / "summary.json"
    page = resolve_report_file(reports, RUN, "schools/0510001A/validation_0510001A.html")
    assert page == run / "schools" / "0510001A" / "validation_0510001A.html"
    assert media_type(page) == "text/html; charset=utf-8"
    assert media_type(run / "summary.json") == "application/json"


@pytest.mark.parametrize("run_id, rel", [
    (RUN, "../other.html"),
    (RUN, "../../secret.html"),
    (RUN, "../../state.db"),
    (RUN, "schools/../report.html"),
    (RUN, "./report.html"),
    (RUN, "/etc/passwd"),
    (RUN, "schools//0510001A/validation_0510001A.html"),
    (RUN, ""),
    (RUN, "schools"),  # a folder
    (RUN, "plan.pickle"),  # not a page
    (RUN, "missing.html"),
    (RUN, "report.html\x00.json"),
    (RUN, "..%2Fother.html"),
    ("..", "other.html"),
    ("..", "secret.html"),
    (".", "report.html"),
    ("", "other.html"),
    (f"{RUN}/..", "other.html"),
    ("ac-reims-nope", "report.html"),
])
def test_nothing_else_is(reports: Path, run_id: str, rel: str) -> None:
    with pytest.raises(ReportNotFound):
        resolve_report_file(reports, run_id, rel)


def test_a_symbolic_link_out_of_the_run_is_refused(reports: Path) -> None:
    os.symlink(reports.parent / "secret.html", reports / RUN / "link.html")
    with pytest.raises(ReportNotFound):
        resolve_report_file(reports, RUN, "link.html")
    os.symlink(reports / RUN / "report.html", reports / RUN / "inside.html")
    assert resolve_report_file(reports, RUN, "inside.html").name == "report.html"


def test_the_academy_of_a_run() -> None:
    codes = ["ac-reims", "ac-nancy-metz", "ac-strasbourg"]
    assert academy_of_run(RUN, codes) == "ac-reims"
    assert academy_of_run("ac-nancy-metz-20261128T201500-ab12", codes) == "ac-nancy-metz"
    assert academy_of_run("ac-lille-20261128T201500-ab12", codes) is None
    assert academy_of_run("ac-reims", codes) == "ac-reims"  # its folder: history.html
    assert academy_of_run("ac-reimsx", codes) is None
    # the longest code wins when one is a prefix of another
    assert academy_of_run("ac-x-y-2026-ab", ["ac-x", "ac-x-y"]) == "ac-x-y"


def test_report_url() -> None:
    assert report_url("http://127.0.0.1:8080/", RUN) == (
        f"http://127.0.0.1:8080/entsync/reports/{RUN}/report.html")
    assert report_url("https://airflow.example/sub", RUN, "summary.json") == (
        f"https://airflow.example/sub/entsync/reports/{RUN}/summary.json")
    assert report_url("/", "a/b") == "/entsync/reports/a%2Fb/report.html"


def test_directory_asset_names() -> None:
    assert directory_asset_name("ac-nancy-metz") == "entsync_directory_ac_nancy_metz"
    assert directory_asset_uri("ac-reims") == "x-entsync://directory/ac-reims"


def test_a_schools_name_comes_from_its_sts_export(tmp_path: Path) -> None:
    from etl.config import get_academy
    from etl.devtools.generate import generate_academy
    from etl.discover.landing import discover
    from etl.report.page import school_name

    gen = generate_academy(tmp_path, "ac-reims", 2, 10, 3)
    docs = [d.as_dict() for d in discover(tmp_path, get_academy("ac-reims"))]
    for uai in gen.schools:
        mine = [d for d in docs if d["uai"] == uai]
        name = school_name(mine)
        assert name is not None and name.startswith(("COLLEGE ", "LYCEE ")), name
        assert uai not in name
        # SIECLE exports carry no name: without the STS-web export, no name
        assert school_name([d for d in mine if d["kind"] != "STS"]) is None
    sts = next(d for d in docs if d["kind"] == "STS")
    Path(sts["path"]).write_bytes(b"<STS_EDT><PARAMETRES><UAJ")  # truncated: no name
    assert school_name([sts]) is None
    assert school_name([{**sts, "path": str(tmp_path / "gone.xml")}]) is None
