"""Every subcommand says what it does and shows an example; tabular ones take -o json."""

from __future__ import annotations

import pytest

from etl import cli


def _subcommands() -> dict[str, object]:
    p = cli.build_parser()
    sub = next(a for a in p._actions if a.dest == "cmd")
    return dict(sub.choices)  # type: ignore[arg-type]


def test_every_subcommand_has_a_description_and_an_example() -> None:
    subs = _subcommands()
    assert {"sync", "check", "undo", "show", "status"} <= set(subs)
    for name, sp in subs.items():
        assert sp.description, name  # type: ignore[attr-defined]
        assert (sp.epilog or "").startswith(f"example: entsync {name}"), name  # type: ignore[attr-defined]


def test_o_json_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    a = cli.build_parser().parse_args(["status", "-o", "json"])
    assert a.output == "json"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["status", "-o", "yaml"])
    capsys.readouterr()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("entsync ")
