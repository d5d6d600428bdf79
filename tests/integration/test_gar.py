"""The GAR export end to end: academies synced into a real slapd, then exported, every file
checked against the Ministry's schema (the shared samples' copy), archived and delivered."""

from __future__ import annotations

import datetime as dt
import hashlib
import tarfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import ldap3
import pytest
from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session

from etl import cli
from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.generate import generate_academy, uai_check_letter
from etl.devtools.slapd import LdapServer
from etl.errors import GarExportInvalid
from etl.gar import export_academy
from etl.gar.build import NS
from etl.store.db import get_engine
from etl.store.models import Account, Entry
from tests.builders import Pupil, Teacher, write_school
from tests.paths import SAMPLES

pytestmark = pytest.mark.ldap
ACADEMY = "ac-reims"
UAI_A = "0510001" + uai_check_letter("0510001")
UAI_B = "0080002" + uai_check_letter("0080002")
XSD = SAMPLES / "gar" / "GAR-ENT.xsd"
M = f"{{{NS}}}"


@pytest.fixture
def gar_env(env: Settings) -> Settings:
    if not XSD.is_file():
        pytest.skip("../shared/samples/gar is not present")
    return replace(env, gar=replace(env.gar, ent_id="ENTTEST", xsd=str(XSD)))


def conn_of(server: LdapServer) -> ldap3.Connection:
    return ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE), server.bind_dn,
                            server.password, auto_bind=True)


def two_schools(landing: Path, night: int) -> None:
    """School A: five pupils (one leaves after night 1, so 3B keeps only its teacher),
    a teacher also in school B, a head; school B: one pupil, the same teacher."""
    date = f"0{night}/10/2026"
    pupils = [Pupil("1001", "MARTIN", "Zoé", "3A", ine="070876696HA", groups=["3LV2ESP"]),
              Pupil("1002", "DUPONT", "Paul", "3A"), Pupil("1004", "DURAND", "Eva", "3A"),
              Pupil("1005", "LEROY", "Inès", "3A")]
    if night == 1:
        pupils.append(Pupil("1003", "PETIT", "Léo", "3B", ine="123456789AB"))
    write_school(landing, ACADEMY, UAI_A, pupils, [],
                 [Teacher("9001", "LEBLANC", "Henri", ["3A", "3B"], birth="1975-03-12"),
                  Teacher("9003", "CHEF", "Hélène", [], function="DIR")], date=date)
    write_school(landing, ACADEMY, UAI_B, [Pupil("2001", "ROBERT", "Jules", "6A")], [],
                 [Teacher("7001", "LEBLANC", "Henri", ["6A"], birth="1975-03-12")], date=date)


def uid_of(server: LdapServer, last: str) -> str:
    c = conn_of(server)
    c.search(f"ou=people,{server.base}", f"(sn={last})", attributes=["uid"])
    [e] = c.entries
    c.unbind()
    return str(e.uid)


def synced(env: Settings) -> None:
    two_schools(env.landing, 1)
    assert pipeline.run_sync(env, RunRequest(ACADEMY))["status"] == "success"
    two_schools(env.landing, 2)
    assert pipeline.run_sync(env, RunRequest(ACADEMY))["status"] == "success"


def parsed(folder: Path, kind: str) -> list[etree._Element]:
    """The records of every file of a kind, in file order, each file valid."""
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    out: list[etree._Element] = []
    for f in sorted(folder.glob(f"*_2D_{kind}_*.xml")):
        tree = etree.parse(str(f))
        assert schema.validate(tree), (f.name, schema.error_log)
        out.extend(tree.getroot())
    return out


def tags(records: list[etree._Element]) -> Counter[str]:
    return Counter(etree.QName(r).localname for r in records)


def test_export_of_two_schools(gar_env: Settings, server: LdapServer, tmp_path: Path) -> None:
    synced(gar_env)
    head, teacher = uid_of(server, "CHEF"), uid_of(server, "LEBLANC")
    gone = uid_of(server, "PETIT")
    c = conn_of(server)  # the ENT set academic mails; school B designates the teacher
    for uid in (head, teacher):
        c.modify(f"uid={uid},ou=people,{server.base}",
                 {"mail": [(ldap3.MODIFY_REPLACE, [f"{uid}@ac-reims.fr"])]})
    c.add(f"cn=RESP-AFFECT-GAR,ou=groups,ENTStructureUAI={UAI_B},ou=structures,{server.base}",
          ["groupOfNames"], {"member": [f"uid={teacher},ou=people,{server.base}"]})
    c.unbind()

    out, dest = tmp_path / "out", tmp_path / "gar-inbox"
    res = export_academy(gar_env, ACADEMY, out, target=str(dest))
    folder = Path(res["folder"])
    prefix = f"ENTTEST_GAR-ENT_Complet_{res['stamp']}_2D"
    assert [f.name for f in sorted(folder.iterdir())] == sorted(
        f"{prefix}_{k}_0000.xml" for k in ("Etab", "Eleve", "Enseignant", "Groupe", "RespAff"))

    etabs = parsed(folder, "Etab")
    assert [r.findtext(f"{M}GARStructureUAI") for r in etabs] == sorted([UAI_A, UAI_B])
    eleves = parsed(folder, "Eleve")
    assert tags(eleves) == {"GAREleve": 5, "GARPersonMEF": 5}
    ids = [r.findtext(f"{M}GARPersonIdentifiant") for r in eleves if r.tag == f"{M}GAREleve"]
    assert gone not in ids and ids == sorted(ids)  # the disabled pupil is absent; by uid
    assert {r.findtext(f"{M}GARPersonProfils/{M}GARPersonProfil") for r in eleves
            if r.tag == f"{M}GAREleve"} == {"National_elv"}

    staff = parsed(folder, "Enseignant")
    assert tags(staff) == {"GAREnseignant": 2}
    by_uid = {r.findtext(f"{M}GARPersonIdentifiant"): r for r in staff}
    t = by_uid[teacher]  # in two schools: once, with each school and its profile there
    assert [e.text for e in t.iterfind(f"{M}GARPersonEtab")] == sorted([UAI_A, UAI_B])
    assert sorted((p.findtext(f"{M}GARStructureUAI"), p.findtext(f"{M}GARPersonProfil"))
                  for p in t.iterfind(f"{M}GARPersonProfils")) == sorted(
        [(UAI_A, "National_ens"), (UAI_B, "National_ens")])
    assert by_uid[head].findtext(f"{M}GARPersonProfils/{M}GARPersonProfil") == "National_dir"
    assert t.find(f"{M}GARPersonMail") is None  # a mail only where the schema requires it

    groupes = parsed(folder, "Groupe")
    got = {(r.findtext(f"{M}GARStructureUAI"), r.findtext(f"{M}GARGroupeCode"),
            r.findtext(f"{M}GARGroupeStatut")) for r in groupes if r.tag == f"{M}GARGroupe"}
    # 3B lost its only pupil: not exported
    assert got == {(UAI_A, "3A", "DIVISION"), (UAI_A, "3LV2ESP", "GROUPE"),
                   (UAI_B, "6A", "DIVISION")}
    links = {(r.findtext(f"{M}GARStructureUAI"), r.findtext(f"{M}GARPersonIdentifiant"),
              r.findtext(f"{M}GARGroupeCode")) for r in groupes
             if r.tag == f"{M}GARPersonGroupe"}
    assert (UAI_A, teacher, "3A") in links and (UAI_B, teacher, "6A") in links
    assert not any(uid == gone for _, uid, _ in links)
    assert len(links) == 4 + 1 + 1 + 2  # 3A: 4 pupils; 3LV2ESP: 1; 6A: 1 pupil; teacher x2
    teach = {(r.findtext(f"{M}GARStructureUAI"), r.findtext(f"{M}GARGroupeCode"),
              tuple(e.text for e in r.iterfind(f"{M}GARMatiereCode"))) for r in groupes
             if r.tag == f"{M}GAREnsClasseMatiere"}
    assert teach == {(UAI_A, "3A", ("030101",)), (UAI_B, "6A", ("030101",))}
    order = [etree.QName(r).localname for r in groupes]  # the schema's sequence
    assert order == sorted(order, key=["GARGroupe", "GARPersonGroupe", "GAREnsGroupeMatiere",
                                       "GAREnsClasseMatiere"].index)

    resp = {r.findtext(f"{M}GARPersonIdentifiant"):
            ([e.text for e in r.iterfind(f"{M}GARRespAffEtab")], r.findtext(f"{M}GARPersonMail"))
            for r in parsed(folder, "RespAff")}
    assert resp == {head: ([UAI_A], f"{head}@ac-reims.fr"),
                    teacher: ([UAI_B], f"{teacher}@ac-reims.fr")}

    # the archive holds exactly the files; the md5 is its digest; both were delivered
    archive, md5 = Path(res["archive"]), Path(res["md5"])
    assert archive.name == f"{prefix}.tar.gz" and md5.name == f"{prefix}.md5"
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert members == {f.name: f.read_bytes() for f in folder.iterdir()}
    assert md5.read_text("ascii") == hashlib.md5(archive.read_bytes()).hexdigest()
    assert sorted(p.name for p in dest.iterdir()) == sorted([archive.name, md5.name])
    assert (dest / archive.name).read_bytes() == archive.read_bytes()


def test_a_head_without_mail_is_reported_not_exported(gar_env: Settings, server: LdapServer,
                                                      tmp_path: Path) -> None:
    synced(gar_env)
    res = export_academy(gar_env, ACADEMY, tmp_path / "out")
    assert res["resp_aff_without_mail"] == [uid_of(server, "CHEF")]
    assert parsed(Path(res["folder"]), "RespAff") == []
    assert res["delivered"] is None


def test_generated_academy_exports_valid_split_and_deterministic_files(
        gar_env: Settings, tmp_path: Path) -> None:
    generate_academy(gar_env.landing, ACADEMY, 3, 40, seed=3)
    assert pipeline.run_sync(gar_env, RunRequest(ACADEMY))["status"] == "success"
    small = replace(gar_env, gar=replace(gar_env.gar, max_nodes=25))
    one = export_academy(small, ACADEMY, tmp_path / "a", now=dt.datetime(2026, 10, 2, 21))
    two = export_academy(small, ACADEMY, tmp_path / "b", now=dt.datetime(2026, 10, 3, 21, 5))
    fa, fb = Path(one["folder"]), Path(two["folder"])
    # the same directory: the same files, byte for byte, only the time in their names differs
    assert one["stamp"] != two["stamp"]
    assert {f.name.replace(one["stamp"], "T"): f.read_bytes() for f in fa.iterdir()} == {
        f.name.replace(two["stamp"], "T"): f.read_bytes() for f in fb.iterdir()}

    with Session(get_engine(gar_env.state_url)) as s:
        pupils = s.scalar(select(Account.uid).where(Account.profile == "ELV").limit(1))
        n_pupils = len(list(s.scalars(select(Account.uid).where(
            Account.profile == "ELV", Account.status == "ACTIVE"))))
        n_staff = len(list(s.scalars(select(Account.uid).where(
            Account.profile.not_in(("ELV", "TUT")), Account.status == "ACTIVE"))))
    assert pupils
    eleves = parsed(fa, "Eleve")
    assert tags(eleves)["GAREleve"] == n_pupils
    assert tags(parsed(fa, "Enseignant"))["GAREnseignant"] == n_staff
    assert tags(parsed(fa, "Etab"))["GAREtab"] == 3
    # split every 25 elements, numbered from 0000, none over
    for kind, n in (("Eleve", len(eleves)), ("Groupe", len(parsed(fa, "Groupe")))):
        files = sorted(fa.glob(f"*_2D_{kind}_*.xml"))
        assert [f.name[-8:-4] for f in files] == [f"{i:04d}" for i in range(-(-n // 25))]
        sizes = [len(etree.parse(str(f)).getroot()) for f in files]
        assert all(x == 25 for x in sizes[:-1]) and 0 < sizes[-1] <= 25


def test_a_class_code_the_schema_refuses_stops_delivery(
        gar_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    synced(gar_env)
    with Session(get_engine(gar_env.state_url)) as s:
        e = s.scalars(select(Entry).where(Entry.kind == "class", Entry.uai == UAI_A,
                                          Entry.dn.like("cn=3A,%"))).one()
        e.attrs = {**e.attrs, "cn": ["X" * 300]}  # GARGroupeCode: 255 characters at most
        dn = e.dn
        s.commit()
    dest = tmp_path / "inbox"
    with pytest.raises(GarExportInvalid) as err:
        export_academy(gar_env, ACADEMY, tmp_path / "out", target=str(dest))
    msg = str(err.value)
    assert "GARGroupeCode" in msg and "maxLength" in msg and "_Groupe_0000.xml" in msg
    assert dn.replace("cn=3A", "cn=" + "X" * 300) in msg  # the record, by its DN
    assert not dest.exists() and not list((tmp_path / "out").glob("*.tar.gz"))

    # the command: exit 4, one line naming the record, nothing sent
    env: dict[str, Any] = {"ENTSYNC_STATE_URL": gar_env.state_url, "ENTSYNC_GAR_XSD": str(XSD),
                           "ENTSYNC_GAR_ENT_ID": "ENTTEST", "ENTSYNC_LDAP_URL": gar_env.ldap.url,
                           "ENTSYNC_LDAP_BIND_DN": gar_env.ldap.bind_dn,
                           "ENTSYNC_LDAP_PASSWORD": gar_env.ldap.password,
                           "ENTSYNC_LDAP_BASE": gar_env.ldap.base}
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    rc = cli.main(["gar", "export", "--academy", ACADEMY, "--out", str(tmp_path / "cli"),
                   "--target", str(dest)])
    assert rc == 4
    line = capsys.readouterr().err.strip()
    assert line.startswith("entsync: GAR export invalid, not delivered:") and "\n" not in line
    assert not dest.exists()


def test_an_academy_with_no_school_yet_exports_nothing(gar_env: Settings,
                                                       tmp_path: Path) -> None:
    """Before the first sync: a complete export of nothing would empty the GAR's copy."""
    dest = tmp_path / "inbox"
    res = export_academy(gar_env, ACADEMY, tmp_path / "out", target=str(dest))
    assert res["skipped"] and res["files"] == [] and res["delivered"] is None
    assert not (tmp_path / "out").exists() and not dest.exists()
