"""The layout's two rules, read from the code's syntax trees (not its text, so a comment or a
string naming airflow is no import, and an import inside a function is one):

- ``etl/`` never imports airflow: the CLI, the tests and a worker without Airflow import it,
  and the DAGs stay a thin shell over it;
- the DAGs and the Airflow plugin use etl's public names only (no ``from etl.x import _y``,
  no ``etl.x._y``, no ``run._y`` on a module they imported): what they call is what etl keeps
  stable.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.paths import REPO

ETL_FILES = sorted(p for p in (REPO / "etl").rglob("*.py") if "__pycache__" not in p.parts)
AIRFLOW_SIDE = sorted([*(REPO / "dags").glob("*.py"), *(REPO / "plugins").glob("*.py")])


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _is_airflow(module: str) -> bool:
    return module == "airflow" or module.startswith("airflow.")


def airflow_imports(path: Path) -> Iterator[str]:
    """``file:line: what`` for each import of airflow in ``path``: ``import``/``from`` statements
    anywhere in the file, and ``importlib.import_module``/``__import__`` of a literal name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_airflow(alias.name):
                    yield f"{_rel(path)}:{node.lineno}: import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and _is_airflow(node.module):
                yield f"{_rel(path)}:{node.lineno}: from {node.module} import ..."
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = (func.attr if isinstance(func, ast.Attribute)
                    else func.id if isinstance(func, ast.Name) else "")
            first = node.args[0]
            if (name in ("import_module", "__import__") and isinstance(first, ast.Constant)
                    and isinstance(first.value, str) and _is_airflow(first.value)):
                yield f"{_rel(path)}:{node.lineno}: {name}({first.value!r})"


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def private_etl_uses(path: Path) -> Iterator[str]:
    """``file:line: what`` for each use of a private etl name in ``path``: imported by name, a
    private module, or an attribute taken from an etl module it imported."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    etl_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "etl" or alias.name.startswith("etl."):
                    if _private(alias.name):
                        yield f"{_rel(path)}:{node.lineno}: import {alias.name}"
                    etl_aliases.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "etl" or node.module.startswith("etl."):
                for alias in node.names:
                    if _private(f"{node.module}.{alias.name}"):
                        yield f"{_rel(path)}:{node.lineno}: from {node.module} import {alias.name}"
                    etl_aliases.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in etl_aliases:
                yield f"{_rel(path)}:{node.lineno}: {ast.unparse(node)}"


def test_the_files_are_found() -> None:
    assert len(ETL_FILES) > 30 and (REPO / "etl" / "run.py") in ETL_FILES
    assert (REPO / "dags" / "ent_sync.py") in AIRFLOW_SIDE


def test_etl_never_imports_airflow() -> None:
    found = [hit for path in ETL_FILES for hit in airflow_imports(path)]
    assert not found, "etl/ imports airflow:\n" + "\n".join(found)


def test_dags_use_only_etls_public_names() -> None:
    found = [hit for path in AIRFLOW_SIDE for hit in private_etl_uses(path)]
    assert not found, "private etl names used by the Airflow side:\n" + "\n".join(found)


@pytest.mark.parametrize("source, hits", [
    ("import airflow\n", 1),
    ("def f():\n    from airflow.sdk import dag\n", 1),
    ("import importlib\nm = importlib.import_module('airflow.models')\n", 1),
    ("x = 'import airflow'  # airflow\nimport airflowish\n", 0),
    ("from . import airflow\n", 0),
])
def test_airflow_import_detection(tmp_path: Path, source: str, hits: int,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.unit.test_layout.REPO", tmp_path)
    f = tmp_path / "m.py"
    f.write_text(source)
    found = list(airflow_imports(f))
    assert len(found) == hits, found
    assert all(h.startswith("m.py:") for h in found)


@pytest.mark.parametrize("source, hits", [
    ("from etl.run import _apply_changes\n", 1),
    ("def t():\n    from etl import run as pipeline\n    pipeline._apply_changes()\n", 1),
    ("import etl.apply.stage\netl.apply.stage._journal_rows()\n", 1),
    ("from etl._private import x\n", 1),
    ("from etl.run import run_sync, __all__\nfrom dags import _settings\n", 0),
    ("from etl import run as pipeline\npipeline.run_sync()\nx._y\n", 0),
])
def test_private_name_detection(tmp_path: Path, source: str, hits: int,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.unit.test_layout.REPO", tmp_path)
    f = tmp_path / "d.py"
    f.write_text(source)
    found = list(private_etl_uses(f))
    assert len(found) == hits, found
