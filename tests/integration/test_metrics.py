"""Per-run metrics: rows in the state DB after a sync, and StatsD datagrams on a UDP socket."""

from __future__ import annotations

import dataclasses
import socket
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.report.metrics import StatsdClient, metric_part, run_metrics, statsd_lines
from tests.integration.test_sync import ACADEMY, NASTY, UAI_A, school_a

STAGES = ("discover", "read_validate", "reconcile", "apply", "report")


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    """A StatsD server: a bound UDP socket the test reads datagrams from."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    yield sock
    sock.close()


def _received(sock: socket.socket) -> list[str]:
    lines: list[str] = []
    while True:
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return lines
        lines.extend(data.decode("ascii").splitlines())


def _by(rows: list[dict[str, object]]) -> dict[tuple[str, str | None], dict[str, float]]:
    out: dict[tuple[str, str | None], dict[str, float]] = defaultdict(dict)
    for r in rows:
        out[(str(r["stage"]), r["uai"])][str(r["name"])] = float(r["value"])  # type: ignore[arg-type]
    return out


@pytest.mark.ldap
def test_a_sync_records_its_metrics_per_stage(env: Settings) -> None:
    school_a(env.landing)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert summary["status"] == "success"
    m = _by(run_metrics(env, summary["run_id"]))
    assert set(m) == {("discover", None), ("read_validate", UAI_A), ("reconcile", None),
                      ("apply", None), ("report", None), ("report", UAI_A)}
    # what each school had written, by category (the school's own numbers)
    written = m[("report", UAI_A)]
    assert written["written"] == summary["schools"][UAI_A]["written"] > 0
    assert written["written.created"] == summary["schools"][UAI_A]["created"] > 0
    assert written["failed"] == 0 and written["pending"] == 0
    for key, values in m.items():
        if key != ("report", UAI_A):  # counts only
            assert values["duration_s"] >= 0, key
    assert m[("discover", None)]["schools"] == 1
    school = m[("read_validate", UAI_A)]
    assert school["records_read"] > school["persons"] > 0
    assert school["status.ok"] == 1 and school["files_quarantined"] == 0
    rec = m[("reconcile", None)]
    by_kind_op = {k: v for k, v in rec.items() if k.startswith("changes.")}
    assert by_kind_op["changes.person.add"] > 0
    assert sum(by_kind_op.values()) == rec["changes"] == summary["changes"]
    assert m[("apply", None)]["applied"] == summary["applied"] > 0
    assert m[("apply", None)]["failed"] == 0
    report = m[("report", None)]
    assert report["run_duration_s"] >= sum(m[(s, None)]["duration_s"]
                                           for s in ("discover", "reconcile", "apply"))
    assert report["schools.ok"] == 1 and report["records_read"] == school["records_read"]
    # each stage also says how much memory it needed (its own peak) and the process had
    # needed by its end (one process here: never less than at the stage before)
    stages = (("discover", None), ("read_validate", UAI_A), ("reconcile", None),
              ("apply", None), ("report", None))
    process = [m[k]["process_peak_rss_mib"] for k in stages]
    assert process == sorted(process) and process[0] > 20
    for k in stages:
        assert 20 < m[k]["peak_rss_mib"] <= m[k]["process_peak_rss_mib"], k

    # the same exports again: a quiet night, recorded as such
    school_a(env.landing, date="05/10/2026")
    again = pipeline.run_sync(env, RunRequest(ACADEMY))
    m2 = _by(run_metrics(env, again["run_id"]))
    # (same records in a new export: recognised by content in discovery, not even read)
    assert ("read_validate", UAI_A) not in m2
    assert m2[("report", None)]["schools.already_applied"] == 1
    assert m2[("reconcile", None)]["changes"] == 0
    assert m2[("apply", None)]["applied"] == 0


@pytest.mark.ldap
def test_statsd_receives_the_stage_metrics_and_no_personal_data(
        env: Settings, udp: socket.socket) -> None:
    port = udp.getsockname()[1]
    st = dataclasses.replace(env, statsd_host="127.0.0.1", statsd_port=port,
                             statsd_prefix="ent.test")
    school_a(st.landing)
    summary = pipeline.run_sync(st, RunRequest(ACADEMY))
    lines = _received(udp)
    assert lines, "no StatsD datagram received"
    names: dict[str, str] = {}
    for line in lines:
        name, rest = line.split(":", 1)
        value, kind = rest.split("|", 1)
        float(value)
        assert kind in ("g", "ms", "c"), line
        names[name] = kind
    aca = metric_part(ACADEMY)
    for stage in STAGES:
        prefix = f"ent.test.{aca}.{stage}."
        if stage == "read_validate":
            prefix += f"{UAI_A}."
        assert names.get(prefix + "duration_ms") == "ms", (stage, sorted(names))
    assert names[f"ent.test.{aca}.reconcile.changes.person.add"] == "g"
    assert names[f"ent.test.{aca}.read_validate.{UAI_A}.records_read"] == "g"
    assert names[f"ent.test.{aca}.read_validate.records_read"] == "c"
    assert names[f"ent.test.{aca}.runs.success"] == "c"
    applied = [line for line in lines if line.startswith(f"ent.test.{aca}.apply.applied:")]
    assert applied == [f"ent.test.{aca}.apply.applied:{summary['applied']}|g"]
    text = "\n".join(lines)
    for personal in ("MARTIN", "Zoé", "Zoe", "DIAYE", "Moussa", NASTY[:6], "070876696HA"):
        assert personal.lower() not in text.lower()


def test_no_statsd_host_sends_nothing(env: Settings, udp: socket.socket) -> None:
    assert env.statsd_host is None
    from etl.report import metrics

    sent: list[list[str]] = []
    orig = StatsdClient.send
    StatsdClient.send = lambda self, lines: sent.append(lines)  # type: ignore[method-assign]
    try:
        metrics.record(env, pipeline.start_run(env, ACADEMY, dry_run=True), ACADEMY,
                       "discover", {"duration_s": 0.1})
        metrics.count_run(env, ACADEMY, "success")
    finally:
        StatsdClient.send = orig  # type: ignore[method-assign]
    assert sent == [] and _received(udp) == []


def test_statsd_lines_and_datagram_split(udp: socket.socket) -> None:
    c = StatsdClient("127.0.0.1", udp.getsockname()[1], "entsync")
    lines = statsd_lines(c, "ac-nancy-metz", "read_validate",
                         {"duration_s": 1.5, "records_read": 10}, uai="0540001A")
    assert lines == ["entsync.ac_nancy_metz.read_validate.0540001A.duration_ms:1500|ms",
                     "entsync.ac_nancy_metz.read_validate.0540001A.records_read:10|g",
                     "entsync.ac_nancy_metz.read_validate.records_read:10|c"]
    many = [c.gauge(c.name("ac-reims", "x", f"m{i}"), i) for i in range(200)]
    c.send(many)
    got = []
    while True:
        try:
            data, _ = udp.recvfrom(65535)
        except TimeoutError:
            break
        assert len(data) <= 1400
        got.extend(data.decode().splitlines())
    assert got == many


def test_each_stage_reports_its_own_memory_peak_and_the_process_keeps_its_own(
        tmp_path: Path) -> None:
    """A stage's peak_rss_mib is its own (measured from stage_start), not an earlier stage's
    (the process's high-water mark only grows); process_peak_rss_mib keeps the latter."""
    from etl.report import metrics

    st = Settings.from_env({"ENTSYNC_WORKDIR": str(tmp_path / "w"),
                            "ENTSYNC_LANDING": str(tmp_path / "l")})
    rid = pipeline.start_run(st, ACADEMY, dry_run=True)
    metrics.record(st, rid, ACADEMY, "warmup", {})  # the state DB's own memory first
    metrics.stage_start()
    big = bytearray(192 << 20)
    big[::4096] = b"\1" * len(big[::4096])  # touched: resident
    metrics.record(st, rid, ACADEMY, "heavy", {"n": 1})
    del big  # one mapping: given back to the system at once
    metrics.stage_start()
    metrics.record(st, rid, ACADEMY, "light", {"n": 1})
    m = _by(run_metrics(st, rid))
    heavy, light = m[("heavy", None)], m[("light", None)]
    assert heavy["peak_rss_mib"] - light["peak_rss_mib"] > 150
    assert light["process_peak_rss_mib"] >= heavy["peak_rss_mib"]
