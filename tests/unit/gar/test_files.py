"""The GAR files: built from records, split every N elements, named, checked against the
schema, archived with their md5 and delivered (folder, SFTP with its host key checked)."""

from __future__ import annotations

import datetime as dt
import hashlib
import tarfile
from pathlib import Path

import pytest
from lxml import etree

from etl.config import GarSettings
from etl.errors import ConfigError, GarDeliveryError, GarExportInvalid
from etl.gar import build
from etl.gar.deliver import deliver, parse_target
from etl.gar.read import GarGroup, GarPerson, GarSchool
from etl.gar.validate import validate_files, xsd_path
from etl.gar.write import KindWriter, prefix_of, stamp_of, write_archive
from tests.paths import SAMPLES

XSD = SAMPLES / "gar" / "GAR-ENT.xsd"
BASE = "dc=ent,dc=test"
WHEN = dt.datetime(2026, 10, 2, 21, 0, 5)


@pytest.fixture
def xsd() -> Path:
    if not XSD.is_file():
        pytest.skip("../shared/samples/gar is not present")
    return XSD


def pupil(i: int) -> GarPerson:
    return GarPerson(f"e{i:05d}", f"uid=e{i:05d},ou=people,{BASE}", True, "NOM", "Prénom",
                     (("0510001Z", "National_elv"),), ("0510001Z",), main="0510001Z")


def write(folder: Path, n: int, max_nodes: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    with KindWriter(folder, prefix_of("ENT1", stamp_of(WHEN)), "Eleve", max_nodes) as w:
        for i in range(n):
            w.write(build.eleve(pupil(i)))
    return w.files


def test_names_and_splitting_at_n_elements(tmp_path: Path, xsd: Path) -> None:
    files = write(tmp_path, 7, 3)
    assert [f.name for f in files] == [
        f"ENT1_GAR-ENT_Complet_20261002_210005_2D_Eleve_{i:04d}.xml" for i in range(3)]
    sizes = [len(etree.parse(str(f)).getroot()) for f in files]
    assert sizes == [3, 3, 1]
    assert validate_files(files, xsd, BASE) == 3
    # exactly N: one file, no empty second one
    assert len(write(tmp_path / "exact", 3, 3)) == 1


def test_a_kind_with_nothing_is_one_valid_empty_file(tmp_path: Path, xsd: Path) -> None:
    with KindWriter(tmp_path, "P", "RespAff", 10) as w:
        pass
    [f] = w.files
    assert f.name == "P_RespAff_0000.xml"
    root = etree.parse(str(f)).getroot()
    assert root.tag == build.q("GAR-ENT-RespAff") and root.get("Version") == build.VERSION
    assert len(root) == 0
    validate_files([f], xsd, BASE)


def test_same_records_same_bytes_and_the_namespace_declared_once(tmp_path: Path) -> None:
    a, b = write(tmp_path / "a", 4, 10), write(tmp_path / "b", 4, 10)
    assert a[0].read_bytes() == b[0].read_bytes()
    assert a[0].read_bytes().count(b"xmlns:men=") == 1


def test_a_group_code_the_schema_refuses_names_the_record_and_rule(tmp_path: Path,
                                                                   xsd: Path) -> None:
    code = "C" * 256
    with KindWriter(tmp_path, "P", "Groupe", 10) as w:
        w.write(build.groupe(GarGroup("0510001Z", "3A", "3A", True, "cn=3A")))
        w.write(build.groupe(GarGroup("0510001Z", code, "long", True, "cn=x")))
    with pytest.raises(GarExportInvalid) as err:
        validate_files(w.files, xsd, BASE)
    e = err.value
    assert e.file == "P_Groupe_0000.xml" and e.line is not None
    assert e.record == f"GARGroupe cn={code},ou=groups,ENTStructureUAI=0510001Z," \
                       f"ou=structures,{BASE}"
    assert "men:GARGroupeCode" in e.rule and "maxLength" in e.rule


def test_a_name_too_long_is_refused_without_quoting_it(tmp_path: Path, xsd: Path) -> None:
    p = pupil(1)
    long = GarPerson(p.uid, p.dn, True, "N" * 501, p.first, p.profiles, p.schools)
    with KindWriter(tmp_path, "P", "Eleve", 10) as w:
        w.write(build.eleve(long))
    with pytest.raises(GarExportInvalid) as err:
        validate_files(w.files, xsd, BASE)
    assert err.value.record == f"GAREleve uid={p.uid},ou=people,{BASE}"
    assert "N" * 20 not in str(err.value)


def test_schema_path_env_then_samples(tmp_path: Path, xsd: Path) -> None:
    assert xsd_path(None).samefile(xsd)
    assert xsd_path(str(xsd)) == xsd
    with pytest.raises(ConfigError, match="ENTSYNC_GAR_XSD"):
        xsd_path(str(tmp_path / "none.xsd"))


def test_archive_holds_the_files_and_the_md5_its_digest(tmp_path: Path) -> None:
    files = [*write(tmp_path / "x", 5, 2), tmp_path / "x" / "extra.xml"]
    files[-1].write_text("<a/>")
    prefix = prefix_of("ENT1", stamp_of(WHEN))
    archive, md5 = write_archive(files, tmp_path, prefix, WHEN)
    assert archive.name == "ENT1_GAR-ENT_Complet_20261002_210005_2D.tar.gz"
    assert md5.name == "ENT1_GAR-ENT_Complet_20261002_210005_2D.md5"
    assert md5.read_text() == hashlib.md5(archive.read_bytes()).hexdigest()  # alone
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert {m.mtime for m in tar.getmembers()} == {int(WHEN.timestamp())}
        assert all(tar.extractfile(n).read() == (tmp_path / "x" / n).read_bytes()  # type: ignore[union-attr]
                   for n in names)
    assert names == sorted(f.name for f in files)
    (tmp_path / "again").mkdir()
    again, _ = write_archive(files, tmp_path / "again", prefix, WHEN)
    assert again.read_bytes() == archive.read_bytes()  # the same bytes every time


def test_folder_delivery_and_targets(tmp_path: Path) -> None:
    src = tmp_path / "a.tar.gz"
    src.write_bytes(b"x")
    res = deliver([src], str(tmp_path / "inbox" / "gar"), GarSettings())
    assert (tmp_path / "inbox" / "gar" / "a.tar.gz").read_bytes() == b"x"
    assert res["files"] == ["a.tar.gz"] and not list((tmp_path / "inbox" / "gar").glob("*.part"))
    assert parse_target("sftp://gar@sftp.example.org:2222/in") == (
        "sftp", {"host": "sftp.example.org", "port": 2222, "user": "gar", "path": "/in"})
    assert parse_target(f"file://{tmp_path}")[1]["path"] == tmp_path
    with pytest.raises(ConfigError):
        parse_target("ftp://x/y")
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(GarDeliveryError):
        deliver([src], str(blocked / "sub"), GarSettings())


def test_sftp_needs_a_host_key(tmp_path: Path) -> None:
    pytest.importorskip("paramiko")
    with pytest.raises(ConfigError, match="host key"):
        deliver([tmp_path], "sftp://u@127.0.0.1:1/in", GarSettings())


def test_build_etab(xsd: Path, tmp_path: Path) -> None:
    with KindWriter(tmp_path, "P", "Etab", 10) as w:
        w.write(build.etab(GarSchool("0510001Z", "Collège <Jean> & Co")))
    validate_files(w.files, xsd, BASE)
    assert etree.parse(str(w.files[0])).findtext(
        f"{{{build.NS}}}GAREtab/{{{build.NS}}}GARStructureNomCourant") == "Collège <Jean> & Co"


def test_prune_keeps_the_newest_exports(tmp_path: Path) -> None:
    from etl.gar.export import prune

    for day in (1, 2, 3):
        prefix = prefix_of("ENT1", stamp_of(WHEN.replace(day=day)))
        (tmp_path / prefix).mkdir()
        (tmp_path / f"{prefix}.tar.gz").write_bytes(b"")
        (tmp_path / f"{prefix}.md5").write_text("")
    (tmp_path / "other.txt").write_text("")
    removed = prune(tmp_path, "ENT1", 2)
    assert removed == sorted(f"ENT1_GAR-ENT_Complet_20261001_210005_2D{x}"
                             for x in ("", ".md5", ".tar.gz"))
    assert len(list(tmp_path.iterdir())) == 7
