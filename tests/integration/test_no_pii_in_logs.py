"""No personal data in logs: a full verbose sync (CLI, DEBUG level) on generated exports logs
no surname, first name, birth date (dd/mm/yyyy or ISO), email, nor the LDAP password."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from etl.devtools.generate import generate_academy
from etl.devtools.slapd import LdapServer, start_slapd, stop_slapd

pytestmark = pytest.mark.ldap
ACADEMY = "ac-reims"
NAME_TAGS = {"NOM_DE_FAMILLE", "NOM_USAGE", "NOM_PATRONYMIQUE", "PRENOM", "PRENOM2",
             "PRENOM3", "NOM"}
DATE_TAGS = {"DATE_NAISS", "DATE_NAISSANCE"}
MAIL_TAGS = {"MEL", "MAIL", "COURRIEL"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LdapServer]:
    info = start_slapd(tmp_path / "slapd")
    yield info
    stop_slapd(tmp_path / "slapd")


def _documents(root: Path) -> Iterator[bytes]:
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as zf:
                for member in zf.namelist():
                    if member.lower().endswith(".xml"):
                        yield zf.read(member)
        elif path.suffix.lower() == ".xml":
            yield path.read_bytes()


def personal_values(root: Path) -> dict[str, set[str]]:
    """Names, birth dates (both forms) and emails found in every generated export."""
    out: dict[str, set[str]] = {"name": set(), "date": set(), "email": set()}
    for data in _documents(root):
        for el in etree.fromstring(data).iter():
            if not isinstance(el.tag, str) or not (el.text or "").strip():
                continue
            text = el.text.strip()
            if el.tag in NAME_TAGS:
                out["name"].add(text)
            elif el.tag in DATE_TAGS:
                if "/" in text:
                    d = dt.datetime.strptime(text, "%d/%m/%Y").date()
                else:
                    d = dt.date.fromisoformat(text[:10])
                out["date"] |= {d.strftime("%d/%m/%Y"), d.isoformat()}
            elif el.tag in MAIL_TAGS:
                out["email"].add(text)
    return out


def test_full_sync_logs_no_personal_data(tmp_path: Path, server: LdapServer) -> None:
    landing = tmp_path / "landing"
    gen = generate_academy(landing, ACADEMY, schools=2, pupils_per_school=40, seed=11)
    values = personal_values(landing / ACADEMY)
    assert len(values["name"]) > 50 and len(values["date"]) > 50 and values["email"]
    env = {**os.environ, "ENTSYNC_LANDING": str(landing), "ENTSYNC_WORKDIR":
           str(tmp_path / "work"), "ENTSYNC_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
           **server.env()}
    r = subprocess.run([sys.executable, "-m", "etl.cli", "-v", "sync", "--academy", ACADEMY,
                        "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["status"] == "success" and set(summary["schools"]) == set(gen.schools)
    log = r.stderr
    assert "INFO etl.run" in log  # the (verbose, DEBUG level) log was captured
    # names: whole words only (a 2-letter first name may be inside any word)
    words = set(log.replace("'", " ").replace('"', " ").replace(",", " ").split())
    leaked = sorted(n for n in values["name"] if n in words or (len(n) >= 5 and n in log))
    assert not leaked, leaked[:10]
    assert not [d for d in values["date"] if d in log][:10]
    assert not [m for m in values["email"] if m in log][:10]
    for secret in (server.password, server.root_password, server.reader_password):
        assert secret not in log and secret not in r.stdout
