"""etl.config's academies: ``academies.toml``'s ``[defaults]`` is the one place for defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.config import ACADEMIES_FILE, load_academies
from etl.errors import ConfigError


def test_the_packaged_academies_take_every_default_from_the_file() -> None:
    academies = load_academies()
    assert list(academies) == ["ac-nancy-metz", "ac-reims", "ac-strasbourg"]
    a = academies["ac-reims"]
    assert (a.timezone, a.max_disable_count, a.max_pupil_drop_share, a.guard_min_changes,
            a.mode, a.rollover_window, a.rollover_mode, a.rollover_archive) == (
        "Europe/Paris", 300, 0.30, 5, "normal", ("08-20", "09-30"), "no_disable", "archive")
    assert a.schedule == "0 2 * * *" and a.departments == ("008", "010", "051", "052")
    assert all(a.retention_for(p) == 90 for p in ("ELV", "TUT", "ENS", "DIR", "EVS", "DOC",
                                                   "ETA"))


def test_another_academies_file_is_read_over_the_packaged_defaults(tmp_path: Path) -> None:
    f = tmp_path / "academies.toml"
    f.write_text('[defaults]\nmax_disable_count = 50\n\n[[academy]]\ncode = "ac-x"\n'
                 'name = "X"\njointure_prefix = "AC-X"\ndepartments = ["099"]\n'
                 'retention_days = { ELV = 30 }\n', "utf-8")
    (x,) = load_academies(f).values()
    assert x.max_disable_count == 50 and x.schedule == "30 1 * * *"  # its own, the packaged
    assert x.retention_for("ELV") == 30 and x.retention_for("TUT") == 90  # per profile
    assert load_academies(ACADEMIES_FILE) == load_academies()


def test_an_academy_entry_without_its_identity_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "academies.toml"
    f.write_text('[[academy]]\ncode = "ac-x"\nname = "X"\ndepartments = ["099"]\n', "utf-8")
    with pytest.raises(ConfigError, match="lacks 'jointure_prefix'"):
        load_academies(f)


def test_the_source_of_a_school_is_the_academy_s_or_its_own(tmp_path: Path) -> None:
    assert all(a.source == "siecle" and a.source_for("0510001Z") == "siecle"
               for a in load_academies().values())
    f = tmp_path / "academies.toml"
    f.write_text('[[academy]]\ncode = "ac-x"\nname = "X"\njointure_prefix = "AC-X"\n'
                 'departments = ["099"]\nsource = "aaf"\n'
                 '[academy.school_sources]\n"0990001a" = "SIECLE"\n', "utf-8")
    (x,) = load_academies(f).values()
    assert x.source_for("0990002B") == "aaf" and x.source_for("0990001A") == "siecle"
    f.write_text(f.read_text("utf-8").replace('source = "aaf"', 'source = "sts"'), "utf-8")
    with pytest.raises(ConfigError, match="source must be one of siecle, aaf, not 'sts'"):
        load_academies(f)
