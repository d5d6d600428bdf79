"""Issue 25: the pages tell the whole night. Each school's French page (``retours_<UAI>.html``)
for a quarantined file, a held plan, a missing export and nothing to fix; the academy's index
of those pages; each school's delivery folder; the run report's names, times and links; the
academy's history after two nights; no name nor birth date on any page. End to end, against
a real slapd (the ``env`` fixture).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.slapd import LdapServer
from etl.report.schools import refresh_school_pages
from tests.builders import Guardian, Pupil, Teacher, write_school

pytestmark = pytest.mark.ldap
ACADEMY = "ac-reims"
UAI = "0510001Z"
NOV = dt.date(2026, 11, 16)  # outside the September roll-over window (no disabling then)
TEACHERS = [Teacher("9001", "LEBLANC", "Henri", ["5A", "5B"])]
NAME = "COLLEGE JEAN MOULIN"
#: names and birth dates of the builders' people: never on a page
SECRETS = (r"ELEVE\d+", "LEBLANC", "Henri", r"TUTEUR\d+", "Marc", "Léa", "01/02/2012",
           "2012-02-01")


def roster(n: int, skip: set[int] | None = None) -> list[Pupil]:
    return [Pupil(str(1000 + i), f"ELEVE{i}", "Léa", "5A" if i % 2 else "5B",
                  ine=f"05100{i:04d}AB") for i in range(n) if i not in (skip or set())]


def drop(env: Settings, pupils: list[Pupil], day: int, with_sts: bool = True) -> Path:
    """The school's exports of the ``day``-th of October, its STS-web export naming it."""
    guardians = [Guardian(str(5000 + int(p.eleve_id)), f"TUTEUR{p.eleve_id}", "Marc",
                          [p.eleve_id]) for p in pupils]
    d = write_school(env.landing, ACADEMY, UAI, pupils, guardians, TEACHERS,
                     date=f"{day:02d}/10/2026")
    sts = d / f"sts_emp_{UAI}_2026.xml"
    if not with_sts:
        sts.unlink()
        return d
    text = sts.read_text("utf-8").replace(
        f'<UAJ CODE="{UAI}"/>', f'<UAJ CODE="{UAI}"><DENOM_PRINC>COLLEGE</DENOM_PRINC>'
        "<DENOM_COMPL>JEAN MOULIN</DENOM_COMPL></UAJ>")
    assert "DENOM_PRINC" in text
    sts.write_text(text, "utf-8")
    return d


def sync(env: Settings) -> dict[str, Any]:
    return pipeline.run_sync(env, RunRequest(ACADEMY, today=NOV))


def page(env: Settings, summary: dict[str, Any], uai: str = UAI) -> str:
    """The school's French page, as text (tags kept, entities decoded)."""
    rel = summary["schools"][uai]["retours"]
    return html.unescape((env.reports_dir / summary["run_id"] / rel).read_text("utf-8"))


def section(text: str, title: str) -> str:
    parts = text.split(f"<h2>{title}", 1)
    assert len(parts) == 2, f"no section {title!r}"
    return parts[1].split("<h2>", 1)[0]


def no_personal_data(*texts: str) -> None:
    for t in texts:
        plain = re.sub(r"<[^>]+>", " ", t)
        for s in SECRETS:
            assert not re.search(rf"\b{s}\b", plain), s


def test_nothing_to_fix_then_a_missing_export(env: Settings, server: LdapServer) -> None:
    """A clean night: the school's name, the run's date, its four exports with their SIECLE
    names, dates and counts, and "rien à corriger". The next night comes without STS-web: the
    page says which export is missing, and nothing-to-fix is no longer said."""
    drop(env, roster(6), day=1)
    s1 = sync(env)
    assert s1["schools"][UAI]["status"] == "ok"
    text = page(env, s1)
    assert f"{NAME} ({UAI})" in text
    assert re.search(r"Synchronisation du \d\d/\d\d/\d{4} à \d\d:\d\d", text)
    exports = section(text, "Exports reçus ce soir")
    for label, kind in (("ElevesSansAdresses", "élèves"),
                        ("ResponsablesAvecAdresses", "responsables"),
                        ("Structures", "structures (divisions et groupes)"),
                        ("emploi du temps STS-web", "personnels et services (STS-web)")):
        assert label in exports and f"<td>{kind}</td>" in exports, label
    assert exports.count("<td>01/10/2026</td>") == 3  # the SIECLE exports' date
    assert "<td>6</td>" in exports  # 6 pupils read
    assert exports.count("pris en compte") == 4
    assert "Les exports de ce soir ont été pris en compte dans l'ENT." in text
    assert "Aucun enregistrement écarté : rien à corriger." in text
    assert "Export manquant" not in text
    assert "ELEVE_ID" not in text and "!" not in re.sub(r"<[^>]+>", "", exports)
    no_personal_data(text)

    # night 2: the STS-web export did not come
    for f in (env.landing / ACADEMY / UAI).iterdir():
        f.unlink()
    drop(env, [*roster(6), Pupil("1100", "ELEVE100", "Léa", "5A", ine="051001100AB")], day=2,
         with_sts=False)
    s2 = sync(env)
    assert s2["schools"][UAI]["status"] == "ok"
    text = page(env, s2)
    assert NAME in text  # the name, from an earlier night's STS-web export
    missing = section(text, "Export manquant")
    assert "Export personnels et services (STS-web)" in missing and "STS-web › Exports" in missing
    assert "rien à corriger" not in text
    assert "emploi du temps STS-web" not in section(text, "Exports reçus ce soir")
    index = html.unescape((env.reports_dir / s2["run_id"] / "schools" / "index.html")
                          .read_text("utf-8"))
    assert NAME in index and "déposer l'export manquant" in index
    assert f"{UAI}/retours_{UAI}.html" in index


def test_a_rejected_pupil_is_named_by_class_and_ine(env: Settings, server: LdapServer) -> None:
    """A pupil whose birth date a reader rejects has no row tonight: the page names him by his
    class (from his inscription) and the INE the directory holds for him, not by ELEVE_ID
    (a technical detail) nor by name; what hung on him is named the same way."""
    drop(env, roster(6), day=1)
    sync(env)
    pupils = roster(6)
    pupils[2] = dataclasses.replace(pupils[2], birth="2012-04-03")
    drop(env, pupils, day=2)
    s = sync(env)
    text = page(env, s)
    sec = section(text, "Date de naissance invalide")
    who = sec.split("<td>", 1)[1].split("</td>", 1)[0]
    assert who == "élève de 5B, INE 051000002AB"  # pupil 1002: i = 2, class 5B
    assert "ELEVE_ID 1002" in sec.split("class=tech>", 1)[1]
    assert "ElevesSansAdresses (export SIECLE du 02/10/2026)" in sec
    consequences = section(text, "Conséquences des problèmes ci-dessus")
    assert "élève de 5B, INE 051000002AB" in consequences
    assert "rien à corriger" not in text
    no_personal_data(text)
    assert "2012-04-03" not in text and "03/04/2012" not in text


def test_quarantined_file_page_says_why_and_what_to_do(env: Settings,
                                                       server: LdapServer) -> None:
    """A truncated pupils export: the page names it by its SIECLE export name and date, says
    why in French and what to do, that nothing changed, and never "rien à corriger"; the
    index says to export again; the school's folder holds the page."""
    d = drop(env, roster(6), day=1)
    p = d / "ExportXML_ElevesSansAdresses.zip"
    with zipfile.ZipFile(p) as zf:
        (member,) = zf.namelist()
        data = zf.read(member)
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr(member, data[: len(data) // 2])
    s = sync(env)
    assert s["schools"][UAI]["status"] == "quarantined"
    text = page(env, s)
    assert "rien à corriger" not in text
    assert "rien n'a été modifié dans l'ENT pour l'établissement ce soir" in text
    q = section(text, "Fichiers non traités")
    assert "ElevesSansAdresses (export SIECLE du 01/10/2026)" in q
    assert "incomplet ou abîmé" in q and "refaire l'export et le déposer de nouveau" in q
    received = section(text, "Exports reçus ce soir")
    assert "non traité" in received and "lu, non appliqué ce soir" in received
    # the technical name stays a detail, not the locator
    assert re.search(r"class=tech><code>ExportXML_ElevesSansAdresses\.zip!", q)
    no_personal_data(text)
    index = html.unescape((env.reports_dir / s["run_id"] / "schools" / "index.html")
                          .read_text("utf-8"))
    assert "fichier non traité" in index and "refaire un export" in index
    # delivery: the school's own folder, a dated page and the latest
    day = s["schools"][UAI]["retours"]
    folder = env.workdir / "schools" / UAI
    [dated] = sorted(folder.glob("retours_*.html"))
    assert re.fullmatch(r"retours_\d{4}-\d{2}-\d{2}\.html", dated.name)
    mine = (env.reports_dir / s["run_id"] / day).read_bytes()
    assert dated.read_bytes() == mine == (folder / "latest.html").read_bytes()


def test_held_plan_page_says_what_would_change_and_why(env: Settings,
                                                       server: LdapServer) -> None:
    """A third of the pupils vanish: the plan is held. The page says what would change
    (counts per action), why (the guard, in French), that nothing was applied; after the
    academy's decision it says that decision. The run report names the school, links its
    page and shows the decision."""
    drop(env, roster(30), day=1)
    sync(env)
    drop(env, roster(30, skip=set(range(0, 30, 3))), day=2)
    s = sync(env)
    assert s["schools"][UAI]["status"] == "awaiting_approval"
    text = page(env, s)
    assert "rien à corriger" not in text
    assert "attendent la validation de l'académie" in text
    held = section(text, "Changements en attente de validation")
    assert "20 désactivation(s)" in held  # 10 pupils and their 10 guardians
    assert ("33 % des élèves ont disparu de l'export : il compte 20 élèves, le dernier pris "
            "en compte en comptait 30") in held
    # 61 accounts: 30 pupils, their 30 guardians and the teacher
    assert "20 des 61 comptes de l'établissement seraient désactivés (33 %" in held
    assert "Que faire" in held
    assert "en attente de validation" in section(text, "Exports reçus ce soir")
    no_personal_data(text)
    # the academy decides; the summary says so (``decisions``) and the pages are rewritten
    pipeline.decide(env, s["run_id"], approve=True, by="ops")
    s["decisions"] = {UAI: {"decision": "approved", "by": "ops", "at": "2026-11-16T09:00:00"}}
    refresh_school_pages(env, s)
    text = page(env, s)
    assert "Ces changements ont été validés par l'académie et appliqués le 16/11/2026" in text
    assert "Que faire" not in text
    from etl.report.page import render_run_report

    report = html.unescape(render_run_report(s))
    assert f"<td>{UAI}</td><td>{NAME}</td>" in report
    assert "awaiting_approval → approved by ops" in report
    assert "Decisions on held plans" in report
    assert f"href='schools/{UAI}/retours_{UAI}.html'" in report


def test_run_report_names_times_links_and_history(env: Settings, server: LdapServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The run report: the school's name beside its UAI, the run's start, end and stage
    durations, a link to its Airflow DAG run, to the French pages and their index, to the
    history; the history after two nights lists both, with their counts and trends."""
    drop(env, roster(4), day=1)
    s1 = sync(env)
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "ent_sync__ac_reims")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__2026-11-16T02:00:00+00:00")
    drop(env, roster(6), day=2)
    s2 = pipeline.run_sync(dataclasses.replace(env, airflow_url="https://airflow.example/"),
                           RunRequest(ACADEMY, today=NOV))
    assert s2["schools"][UAI]["created"] > 0
    out = env.reports_dir / s2["run_id"]
    report = html.unescape((out / "report.html").read_text("utf-8"))
    assert f"<td>{UAI}</td><td>{NAME}</td>" in report
    assert re.search(r"Started \d{4}-\d\d-\d\dT[\d:]+Z, ended \d{4}-\d\d-\d\dT[\d:]+Z \(", report)
    for stage in ("discover", "read_validate", "reconcile", "apply"):
        assert re.search(rf"{stage} [\d.]+ s", report), stage
    assert ("href='https://airflow.example/dags/ent_sync__ac_reims/runs/"
            "manual__2026-11-16T02%3A00%3A00%2B00%3A00'") in report
    assert "href='schools/index.html'" in report and "href='history.html'" in report
    assert f"href='schools/{UAI}/retours_{UAI}.html'" in report
    assert "Airflow" not in html.unescape((env.reports_dir / s1["run_id"] / "report.html")
                                          .read_text("utf-8"))
    # the history: both nights, newest first, linked; created counts and their trend
    for hist in (env.reports_dir / ACADEMY / "history.html", out / "history.html"):
        text = hist.read_text("utf-8")
        assert text.index(s2["run_id"]) < text.index(s1["run_id"])
        assert f"href='../{s1['run_id']}/report.html'" in text
    text = (out / "history.html").read_text("utf-8")
    assert "tr class=here" in text
    row2 = text.split(f"'../{s2['run_id']}/report.html'", 1)[1].split("</tr>", 1)[0]
    now, before = s2["written"]["created"], s1["written"]["created"]
    assert 0 < now < before  # two newcomers and their guardians; the first night's load
    assert f"<td class=n>{now} <span class=down>▼{before - now}</span>" in row2
    no_personal_data(report, text)


def test_no_personal_data_on_any_page(env: Settings, server: LdapServer) -> None:
    """A generated academy with its usual flaws: no name, birth date or e-mail on any page
    written (the run's, the schools', the index, the history, the delivered ones)."""
    from etl.devtools.generate import generate_academy
    from tests.integration.test_no_pii_in_logs import personal_values

    generate_academy(env.landing, ACADEMY, schools=2, pupils_per_school=40, seed=11)
    values = personal_values(env.landing / ACADEMY)
    assert len(values["name"]) > 50 and values["date"]
    s = sync(env)
    assert s["status"] == "success"
    pages = [*env.reports_dir.rglob("*.html"), *(env.workdir / "schools").rglob("*.html")]
    assert len([p for p in pages if p.name.startswith("retours_")]) >= 4  # run's + delivered
    for p in pages:
        text = html.unescape(re.sub(r"<[^>]+>", " ", p.read_text("utf-8")))
        words = set(re.split(r"[\s,;:()'\"]+", text))
        leaked = sorted(n for n in values["name"] if n in words or (len(n) >= 5 and n in text))
        assert not leaked, (p.name, leaked[:5])
        assert not [d for d in values["date"] if d in text], p.name
        assert not [m for m in values["email"] if m in text], p.name
