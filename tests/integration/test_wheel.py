"""The wheel runs outside the checkout: ``pip wheel .`` ships every module and the data files
(GE suites, LDAP schema, slapd template as ``etl/_schemas``), so a worker image can
``pip install`` it and run validation and the embedded slapd with no ``schemas/`` beside it.

The wheel is built from a copy of what the build reads (pyproject.toml, README.md, etl/,
schemas/): setuptools builds in the source folder and keeps ``build/lib`` between builds, so a
build in the checkout could ship a module deleted since, or race another run. It is installed
with ``--no-deps`` into a venv made in a temp folder; the dependencies come from the running
venv's site-packages through a path in a ``.pth`` file, which adds the folder without running
its own ``.pth`` files: the editable install's finder (``__editable__*entsync*``) never loads,
and the test checks ``etl`` is the wheel's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.paths import REPO

pytestmark = pytest.mark.ldap

#: what the build reads (pyproject.toml's packages and package-dir)
BUILD_INPUTS = ("pyproject.toml", "README.md", "etl", "schemas")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def _shipped_files() -> set[str]:
    """Every file of ``etl/`` and ``schemas/`` as the wheel names it."""
    files = set()
    for folder, prefix in (("etl", "etl"), ("schemas", "etl/_schemas")):
        for p in (REPO / folder).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                files.add(f"{prefix}/{p.relative_to(REPO / folder).as_posix()}")
    return files


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, (f"{' '.join(map(str, cmd))} exited {p.returncode}\n"
                               f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}")
    return p.stdout


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=IGNORE)
        else:
            shutil.copy2(REPO / name, src / name)
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", str(dist)],
        cwd=src, capture_output=True, text=True, timeout=600)
    out = build.stdout + build.stderr
    assert build.returncode == 0, out[-4000:]
    assert "would be ignored" not in out, f"setuptools ignores a folder:\n{out[-4000:]}"
    (wheel,) = dist.glob("entsync-*.whl")

    with zipfile.ZipFile(wheel) as z:
        in_wheel = {n for n in z.namelist() if n.startswith("etl/")}
    expected = _shipped_files()
    assert not expected - in_wheel, f"missing from the wheel: {sorted(expected - in_wheel)}"
    extra = sorted(in_wheel - expected)
    assert not extra, f"in the wheel, not in the checkout: {extra}"

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, dict(os.environ))
    bindir = venv / "bin"
    _run([sys.executable, "-m", "pip", "--python", bindir / "python", "install", "-q",
          "--no-deps", "--no-index", wheel], tmp_path, dict(os.environ))
    purelib = Path(_run([bindir / "python", "-c",
                         "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        tmp_path, dict(os.environ)).strip())
    (purelib / "_entsync_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "ENTSYNC_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join([str(bindir), "/usr/bin", "/bin", "/usr/sbin", "/sbin"])
    env["ENTSYNC_WORKDIR"] = str(tmp_path / "work")
    env["ENTSYNC_LANDING"] = str(tmp_path / "landing")

    where = _run([bindir / "python", "-c",
                  "import etl, etl.resources as r; print(etl.__file__); print(r.schemas_dir())"],
                 cwd, env).split()
    assert all(Path(w).is_relative_to(venv) for w in where), where
    assert Path(where[1]).name == "_schemas"

    entsync = bindir / "entsync"
    slapd = tmp_path / "slapd"
    exports = _run([entsync, "ldap", "up", "--dir", slapd], cwd, env)
    try:
        assert "export ENTSYNC_LDAP_URL=ldap://" in exports
        _run([entsync, "generate", "--academy", "ac-reims", "--schools", "1",
              "--pupils-per-school", "20", "--seed", "1", "--out", tmp_path / "landing"],
             cwd, env)
        report = _run([entsync, "check", "--academy", "ac-reims"], cwd, env)
        assert " ok " in report, report
    finally:
        _run([entsync, "ldap", "down", "--dir", slapd], cwd, env)
    assert (tmp_path / "work" / "state.db").is_file()
    assert not any(cwd.iterdir()), "the commands wrote into their working folder"
