"""Per-run metrics: rows in the state DB (``run_metrics``) and, when configured, StatsD.

Each stage records, when it ends, its duration and its counts (records read and rejected,
changes by kind and operation, ...). Only numbers, stage names, academy codes and UAIs (school
identifiers, public) go out: never a name, a birth date, a login or a password.

StatsD (``ENTSYNC_STATSD_HOST``, ``ENTSYNC_STATSD_PORT`` (8125), ``ENTSYNC_STATSD_PREFIX``
(``entsync``)): a few UDP datagrams per stage, fire and forget; without a host, nothing is
sent. Names: ``<prefix>.<academy>.<stage>.<name>`` for the academy's numbers and
``<prefix>.<academy>.<stage>.<UAI>.<name>`` for a school's; durations are timers (ms), counts
gauges, and ``<prefix>.<academy>.runs.<status>`` / ``<prefix>.<academy>.read_validate.<name>``
counters add up across runs and schools.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: keep each datagram under a safe MTU
MAX_DATAGRAM = 1400
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def metric_part(s: str) -> str:
    """One dot-separated component of a StatsD name (``ac-reims`` -> ``ac_reims``)."""
    return _UNSAFE.sub("_", s) or "_"


@dataclass(frozen=True)
class StatsdClient:
    """A tiny StatsD client over UDP: gauges, timers and counters, batched in datagrams."""

    host: str
    port: int = 8125
    prefix: str = "entsync"

    def name(self, *parts: str) -> str:
        return ".".join([*(p for p in self.prefix.split(".") if p),
                         *(metric_part(p) for p in parts)])

    def send(self, lines: list[str]) -> None:
        """Send metric lines; a network error is logged and forgotten (metrics never stop a
        run)."""
        if not lines:
            return
        packets: list[str] = []
        cur = ""
        for line in lines:
            if cur and len(cur) + 1 + len(line) > MAX_DATAGRAM:
                packets.append(cur)
                cur = ""
            cur = f"{cur}\n{line}" if cur else line
        packets.append(cur)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for p in packets:
                    sock.sendto(p.encode("ascii", "replace"), (self.host, self.port))
        except OSError as e:
            log.warning("statsd %s:%d unreachable: %s", self.host, self.port, type(e).__name__)

    @staticmethod
    def gauge(name: str, value: float) -> str:
        return f"{name}:{_num(value)}|g"

    @staticmethod
    def timer(name: str, ms: float) -> str:
        return f"{name}:{_num(ms)}|ms"

    @staticmethod
    def counter(name: str, n: float = 1) -> str:
        return f"{name}:{_num(n)}|c"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.3f}"


def statsd_client(host: str | None, port: int | None = None,
                  prefix: str | None = None) -> StatsdClient | None:
    if not host:
        return None
    return StatsdClient(host=host, port=port or 8125, prefix=prefix or "entsync")


#: academy-wide counters summed over the schools of a stage
SUMMED = ("records_read", "records_rejected", "files_quarantined")


def statsd_lines(client: StatsdClient, academy: str, stage: str,
                 values: Mapping[str, float], uai: str | None = None) -> list[str]:
    lines = []
    for name, v in values.items():
        parts = (academy, stage, *([uai] if uai else []), *name.split("."))
        full = client.name(*parts)
        if name.endswith("duration_s"):
            lines.append(client.timer(full[:-len("_s")] + "_ms", v * 1000.0))
        else:
            lines.append(client.gauge(full, v))
        if uai and name in SUMMED:
            lines.append(client.counter(client.name(academy, stage, *name.split(".")), v))
    return lines


def peak_rss_mib() -> float:
    """This process's peak resident memory (Linux: ru_maxrss in KiB), in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mib() -> float | None:
    """This process's resident memory now (Linux ``/proc/self/statm``), in MiB; None
    elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * _PAGE / 2**20


class StagePeak(threading.Thread):
    """The peak resident memory of one stage, sampled every ``interval`` seconds from its
    start (``stage_start``) until it records its numbers (``record``).

    Why not the kernel's high-water mark: ru_maxrss / VmHWM only grow over a process's
    life, so in the CLI (every stage in one process) a stage reported the peak of an earlier
    one. Resetting VmHWM (``/proc/self/clear_refs``) would make it per stage but also erase
    the process's peak for good: ``wait4``'s ru_maxrss of the finished process (what
    ``bench.run`` and a supervisor measure) would then be the last stage's peak only (checked
    on Linux 6.x). Sampling leaves it alone; a spike shorter than ``interval`` may be missed.
    """

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(name="entsync-rss", daemon=True)
        self.interval = interval
        self.peak = rss_mib() or 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            now = rss_mib()
            if now is not None and now > self.peak:
                self.peak = now

    def finish(self) -> float:
        """Stop sampling; the stage's peak in MiB."""
        self._stop_event.set()
        self.join(timeout=1.0)
        now = rss_mib()
        if now is not None and now > self.peak:
            self.peak = now
        return self.peak


_stage: StagePeak | None = None
_stage_lock = threading.Lock()


def stage_start() -> None:
    """A stage begins: its own memory peak is measured from here (``record`` reports it as
    ``peak_rss_mib``). Without /proc (not Linux), ``record`` reports the process's peak."""
    global _stage
    if rss_mib() is None:
        return
    sampler = StagePeak()
    with _stage_lock:
        old, _stage = _stage, sampler
    if old is not None:
        old.finish()
    sampler.start()


def stage_peak() -> float | None:
    """The current stage's own memory peak so far (MiB), sampling on; None when no stage
    is measured."""
    with _stage_lock:
        sampler = _stage
    if sampler is None:
        return None
    now = rss_mib()
    if now is not None and now > sampler.peak:
        sampler.peak = now
    return sampler.peak


def _stage_peak() -> float | None:
    global _stage
    with _stage_lock:
        sampler, _stage = _stage, None
    return None if sampler is None else sampler.finish()


def record(settings: Any, run_id: str, academy: str, stage: str,
           values: Mapping[str, float], uai: str | None = None) -> None:
    """Keep a stage's numbers in the state DB and send them to StatsD when configured.

    Memory: ``peak_rss_mib`` is the stage's own peak when it called ``stage_start`` (else the
    process's peak so far), ``process_peak_rss_mib`` the process's peak so far (in the CLI
    every stage runs in one process; Airflow runs each in a process of its own)."""
    from etl.store.db import session_factory
    from etl.store.models import RunMetric

    clean = {k: float(v) for k, v in values.items() if v is not None}
    process_peak = peak_rss_mib()
    own = _stage_peak()
    clean.setdefault("peak_rss_mib", round(min(own, process_peak) if own is not None
                                           else process_peak, 1))
    clean.setdefault("process_peak_rss_mib", round(process_peak, 1))
    with session_factory(settings.state_url)() as s, s.begin():
        s.add_all(RunMetric(run_id=run_id, academy=academy, stage=stage, uai=uai, name=k,
                            value=v) for k, v in clean.items())
    client = statsd_client(settings.statsd_host, settings.statsd_port, settings.statsd_prefix)
    if client is not None:
        client.send(statsd_lines(client, academy, stage, clean, uai))


def record_schools(settings: Any, run_id: str, academy: str, stage: str,
                   per_school: Mapping[str, Mapping[str, float]]) -> None:
    """A stage's numbers for each school (``<stage>.<UAI>.<name>``), in one transaction and
    one StatsD send: the writes of a run, per school (what was written, failed, pending)."""
    from etl.store.db import session_factory
    from etl.store.models import RunMetric

    rows = [(uai, k, float(v)) for uai, values in sorted(per_school.items())
            for k, v in values.items() if v is not None]
    if not rows:
        return
    with session_factory(settings.state_url)() as s, s.begin():
        s.add_all(RunMetric(run_id=run_id, academy=academy, stage=stage, uai=uai, name=k,
                            value=v) for uai, k, v in rows)
    client = statsd_client(settings.statsd_host, settings.statsd_port, settings.statsd_prefix)
    if client is not None:
        lines: list[str] = []
        for uai, values in sorted(per_school.items()):
            lines += statsd_lines(client, academy, stage,
                                  {k: float(v) for k, v in values.items() if v is not None},
                                  uai)
        client.send(lines)


def record_audit(settings: Any, run_id: str, academy: str, counts: Mapping[str, Any],
                 values: Mapping[str, float]) -> None:
    """An audit's numbers (``etl.audit.stage``, stage ``audit``): ``values`` and the
    differences found per kind (``differences.<kind>``, and ``differences`` in all), then
    per school (``audit.<UAI>.differences.<kind>``). Counts only, never a DN."""
    total = counts.get("total") or {}
    record(settings, run_id, academy, "audit", {
        **values, "differences": float(counts.get("differences") or 0),
        **{f"differences.{k}": float(n) for k, n in total.items()}})
    record_schools(settings, run_id, academy, "audit", {
        uai: {f"differences.{k}": float(n) for k, n in per.items() if n}
        for uai, per in (counts.get("per_school") or {}).items() if uai != "-"})


def count_run(settings: Any, academy: str, status: str) -> None:
    """A run ended: ``<prefix>.<academy>.runs.<status>`` counter."""
    client = statsd_client(settings.statsd_host, settings.statsd_port, settings.statsd_prefix)
    if client is not None:
        client.send([client.counter(client.name(academy, "runs", status))])


def run_metrics(settings: Any, run_id: str) -> list[dict[str, Any]]:
    """A run's recorded metrics, in the order recorded."""
    from sqlalchemy import select

    from etl.store.db import session_factory
    from etl.store.models import RunMetric

    with session_factory(settings.state_url)() as s:
        return [{"stage": m.stage, "uai": m.uai, "name": m.name, "value": m.value}
                for m in s.scalars(select(RunMetric).where(RunMetric.run_id == run_id)
                                   .order_by(RunMetric.id))]
