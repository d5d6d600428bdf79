"""Settings: environment variables, overridden by CLI flags, plus the academies file."""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from etl.errors import ConfigError

ACADEMIES_FILE = Path(__file__).with_name("academies.toml")
DEFAULT_BASE = "dc=ent,dc=grandest,dc=fr"
MODES = ("normal", "create_only", "no_disable")
#: the sources a school's records may come from (``source``, ``school_sources``): its own
#: SIECLE and STS-web exports, or the academy's AAF feed
SOURCES = ("siecle", "aaf")


@dataclass(frozen=True)
class Academy:
    """An academy as ``academies.toml`` describes it: its ``[defaults]`` (the one place for
    every default) overridden by its own ``[[academy]]`` table."""

    code: str
    name: str
    jointure_prefix: str
    departments: tuple[str, ...]
    schedule: str
    timezone: str
    record_error_budget: float
    record_error_budget_min: int
    guardian_levels: tuple[int, ...]
    max_disable_share: float
    max_update_share: float
    max_disable_count: int
    max_pupil_drop_share: float
    guard_min_changes: int
    #: a new school year in normal mode holds the school (``school_year_advance``)
    hold_school_year_advance: bool
    retention_days: tuple[tuple[str, int], ...]
    mode: str
    rollover_window: tuple[str, str] | None
    rollover_mode: str
    rollover_max_update_share: float
    rollover_archive: str
    #: the authoritative source of its schools when both feed one on one night (``SOURCES``)
    source: str = "siecle"
    #: UAI -> its own authoritative source, over ``source``
    school_sources: tuple[tuple[str, str], ...] = ()

    def source_for(self, uai: str) -> str:
        """The source that wins for a school both feed on one night (``etl.discover.aaf``):
        its own entry of ``school_sources``, else the academy's ``source``."""
        return dict(self.school_sources).get(uai.upper(), self.source)
    #: the GAR export (``etl.gar``): the ENT's id at the GAR (file names; empty: not set up),
    #: where the export is delivered (a folder or ``sftp://host[:port]/dir``; empty: kept in
    #: ``--out`` only), and who assigns resources (``GARRespAff``): the staff of these profiles
    #: and the members of the group of this name each school manages (empty: none)
    gar_ent_id: str = ""
    gar_target: str = ""
    gar_resp_aff_profiles: tuple[str, ...] = ("DIR",)
    gar_resp_aff_group: str = ""
    #: the export's nightly fallback (cron, the academy's timezone), besides the runs the
    #: sync's directory asset triggers
    gar_schedule: str = "0 21 * * *"

    @property
    def dag_id(self) -> str:
        return "ent_sync__" + self.code.replace("-", "_")

    @property
    def gar_dag_id(self) -> str:
        return "gar_export__" + self.code.replace("-", "_")

    @property
    def approval_dag_id(self) -> str:
        """The DAG deciding the academy's held plans, one run per held school."""
        return "ent_approval__" + self.code.replace("-", "_")

    def owns_uai(self, uai: str) -> bool:
        return uai[:3] in self.departments

    def retention_for(self, profile: str) -> int:
        days = dict(self.retention_days)
        if profile not in days:
            raise ConfigError(f"academy {self.code}: retention_days has no {profile}")
        return days[profile]

    def in_rollover(self, day: dt.date) -> bool:
        if not self.rollover_window:
            return False
        start, end = self.rollover_window
        return start <= day.strftime("%m-%d") <= end

    def effective_mode(self, day: dt.date, override: str | None = None) -> str:
        """The operation mode of a run: an explicit override, the roll-over window, config."""
        if override:
            return override
        if self.mode == "normal" and self.in_rollover(day):
            return self.rollover_mode
        return self.mode


def _defaults(data: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """The ``[defaults]`` of the packaged academies file, overridden by those of another file
    (``path``) if one is read: the packaged file is where every default is written."""
    if path is None or path.resolve() == ACADEMIES_FILE.resolve():
        return dict(data.get("defaults", {}))
    packaged: dict[str, Any] = tomllib.loads(ACADEMIES_FILE.read_text("utf-8"))["defaults"]
    return _merge(packaged, data.get("defaults", {}))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``; ``retention_days`` per profile (naming one profile keeps the
    others' default)."""
    out = {**base, **over}
    out["retention_days"] = {**base.get("retention_days", {}), **over.get("retention_days", {})}
    return out


def load_academies(path: Path | None = None) -> dict[str, Academy]:
    """Read the academies config (order kept)."""
    data: dict[str, Any] = tomllib.loads((path or ACADEMIES_FILE).read_text("utf-8"))
    defaults = _defaults(data, path)
    out: dict[str, Academy] = {}
    for raw in data.get("academy", []):
        merged = _merge(defaults, raw)
        try:
            out[merged["code"]] = Academy(
                code=merged["code"],
                name=merged["name"],
                jointure_prefix=merged["jointure_prefix"],
                departments=tuple(merged["departments"]),
                schedule=merged["schedule"],
                timezone=merged["timezone"],
                record_error_budget=float(merged["record_error_budget"]),
                record_error_budget_min=int(merged["record_error_budget_min"]),
                guardian_levels=tuple(int(x) for x in merged["guardian_levels"]),
                max_disable_share=float(merged["max_disable_share"]),
                max_update_share=float(merged["max_update_share"]),
                max_disable_count=int(merged["max_disable_count"]),
                max_pupil_drop_share=float(merged["max_pupil_drop_share"]),
                guard_min_changes=int(merged["guard_min_changes"]),
                hold_school_year_advance=bool(merged["hold_school_year_advance"]),
                retention_days=tuple(sorted(
                    (str(k), int(v)) for k, v in merged["retention_days"].items())),
                mode=str(merged["mode"]),
                rollover_window=(tuple(merged["rollover_window"])
                                 if merged["rollover_window"] else None),
                rollover_mode=str(merged["rollover_mode"]),
                rollover_max_update_share=float(merged["rollover_max_update_share"]),
                rollover_archive=str(merged["rollover_archive"]),
                source=str(merged.get("source", "siecle")).lower(),
                school_sources=tuple(sorted(
                    (str(k).upper(), str(v).lower())
                    for k, v in (merged.get("school_sources") or {}).items())),
                gar_ent_id=str(merged["gar_ent_id"]),
                gar_target=str(merged["gar_target"]),
                gar_resp_aff_profiles=tuple(str(x) for x in merged["gar_resp_aff_profiles"]),
                gar_resp_aff_group=str(merged["gar_resp_aff_group"]),
                gar_schedule=str(merged["gar_schedule"]),
            )
            if out[merged["code"]].mode not in MODES:
                raise ConfigError(f"academy {merged['code']}: mode must be one of {MODES}")
            bad = [v for v in (out[merged["code"]].source,
                               *dict(out[merged["code"]].school_sources).values())
                   if v not in SOURCES]
            if bad:
                raise ConfigError(f"academy {merged['code']}: source must be one of "
                                  f"{', '.join(SOURCES)}, not {bad[0]!r}")
        except KeyError as e:
            raise ConfigError(f"academies config: academy entry lacks {e}") from e
    return out


def get_academy(code: str) -> Academy:
    academies = load_academies()
    if code not in academies:
        raise ConfigError(f"unknown academy {code!r}; known: {', '.join(academies)}")
    return academies[code]


@dataclass(frozen=True)
class LdapSettings:
    url: str | None = None
    bind_dn: str | None = None
    password: str | None = field(default=None, repr=False)
    base: str = DEFAULT_BASE
    ca_file: str | None = None
    #: consecutive connection failures (``ENTSYNC_LDAP_MAX_CONNECT_FAILURES``) after which the
    #: directory is taken for down: the apply stops and the run fails with what is left
    max_connect_failures: int = 5
    #: RFC 5805 transactions for the writes (``ENTSYNC_LDAP_TRANSACTIONS``): ``off``, ``auto``
    #: (when the server announces them) or ``on``; off by default (``etl.apply.writer``)
    transactions: str = "off"
    #: operations per transaction (``ENTSYNC_LDAP_TXN_SIZE``; below 1: 1)
    txn_size: int = 500


def _txn_size(raw: str | None) -> int:
    """``ENTSYNC_LDAP_TXN_SIZE``: 500 when unset, at least 1."""
    try:
        return max(1, int(raw if raw is not None else "500"))
    except ValueError:
        raise ConfigError(f"ENTSYNC_LDAP_TXN_SIZE must be a number of operations, "
                          f"not {raw!r}") from None


def _port(raw: str | None) -> int:
    if not raw:
        return 8125
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"ENTSYNC_STATSD_PORT must be a port number, not {raw!r}") from None


def _int_setting(name: str, raw: str | None, default: int, low: int, high: int | None,
                 what: str) -> int:
    """An integer ``ENTSYNC_*`` variable: ``default`` when unset or blank, else an int from
    ``low`` to ``high`` (None: no upper bound); anything else is a ConfigError naming it."""
    if raw is None or not raw.strip():
        return default
    try:
        n = int(raw)
    except ValueError:
        n = None
    if n is None or n < low or (high is not None and n > high):
        raise ConfigError(f"{name} must be {what}, not {raw!r}")
    return n


def _slots_setting(raw: str | None) -> int:
    from etl.runtime.cpuslots import default_slots

    if raw is None or raw.strip().lower() in ("", "auto"):
        return default_slots()
    return _int_setting("ENTSYNC_CPU_SLOTS", raw, 0, 0, 1024, "auto or a number, 0: no slots")


def _choice_setting(name: str, raw: str | None, choices: tuple[str, ...]) -> str:
    """An ``ENTSYNC_*`` variable taking one of ``choices`` (the first when unset or blank);
    anything else is a ConfigError naming it."""
    if raw is None or not raw.strip():
        return choices[0]
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
    return value


@dataclass(frozen=True)
class GarSettings:
    """The GAR export's machine settings (``etl.gar``); what differs per academy (ENT id,
    target, RespAff policy) is in ``academies.toml``."""

    #: elements per file before the next file begins (``ENTSYNC_GAR_MAX_NODES``)
    max_nodes: int = 10000
    #: the ENT's id at the GAR for an academy that sets none (``ENTSYNC_GAR_ENT_ID``)
    ent_id: str | None = None
    #: the Ministry's GAR-ENT.xsd (``ENTSYNC_GAR_XSD``; unset: the samples' copy when present)
    xsd: str | None = None
    #: overrides the academy's ``gar_target`` (``ENTSYNC_GAR_TARGET``)
    target: str | None = None
    #: SFTP login (``ENTSYNC_GAR_SFTP_USER``), password or private key file, and the
    #: known_hosts file the server's host key must be in (``ENTSYNC_GAR_SFTP_KNOWN_HOSTS``)
    sftp_user: str | None = None
    sftp_password: str | None = field(default=None, repr=False)
    sftp_key_file: str | None = None
    sftp_known_hosts: str | None = None
    #: the server's host key itself, ``<type> <base64>`` (``ENTSYNC_GAR_SFTP_HOST_KEY``)
    sftp_host_key: str | None = None


@dataclass(frozen=True)
class Settings:
    landing: Path
    workdir: Path
    state_url: str
    ldap: LdapSettings
    #: where tasks hand each other files (tables, plans, held plans, report copies): any
    #: fsspec URL (file://, s3://, memory://); default file://<workdir>/staging
    staging_url: str = ""
    #: a path object for the staging root (an Airflow ObjectStoragePath with its connection)
    #: that takes precedence over staging_url; None: universal_pathlib's UPath(staging_url)
    staging_path: Any = field(default=None, compare=False, repr=False)
    statsd_host: str | None = None
    statsd_port: int = 8125
    statsd_prefix: str = "entsync"
    #: the CPU niceness the sync runs at (``ENTSYNC_NICE``; 0: as started): a batch job
    #: yields the CPU to the directory server when they share a machine, so that slapd's
    #: commits (and the ENT's readers) are not queued behind reading and planning
    nice: int = 10
    #: how reading, validating and planning take the CPU (``ENTSYNC_CPU_POLICY``): ``idle``
    #: runs them in Linux's ``SCHED_IDLE`` (they get a core only when nothing else wants it:
    #: slapd's commits and the sync's own writes preempt them at once, where niceness alone
    #: still slowed slapd's adds: ``python -m bench.sched``), ``nice`` at ``nice`` only;
    #: ``auto``: ``idle`` when the directory is on this machine (ldapi://, a loopback address)
    cpu_policy: str = "auto"
    #: CPU-bound stages (reading, validating, planning) of academies' first loads that go
    #: first on this machine, whichever processes run them (``ENTSYNC_CPU_SLOTS``; ``auto``:
    #: one per core; 0: no slots): ``etl.runtime.cpuslots``
    cpu_slots: int = 0
    #: schools read per task (``ENTSYNC_READ_GROUP``): their validation rules run together
    #: (GX's cost is mostly fixed per run); smaller groups spread a DAG's reading over more
    #: workers
    read_group: int = 16
    #: schools planned and written together in a sync (``ENTSYNC_PLAN_GROUP``): each group is
    #: read, planned and written before the next is read, the absences judged after the last
    #: (``etl.plan.stream``); 0: the whole academy read, then planned, then written. A dry run
    #: (``entsync check``) always plans the academy whole
    plan_group: int = 16
    #: a streamed night's next group read in a process of its own while this one is planned
    #: and written (``ENTSYNC_READ_AHEAD``, 1 or 0; ``etl.runtime.ahead``): the CLI's; the
    #: DAG's mapped ``read_validate`` tasks read ahead by themselves
    read_ahead: bool = True
    #: the order the groups go in (``ENTSYNC_PLAN_ORDER``): ``uai`` (as discovered),
    #: ``reverse`` or ``shuffle`` (seeded by the run): the directory is the same whichever
    plan_order: str = "uai"
    #: days a finished run's staged files (tables, plans) are kept (``ENTSYNC_STAGING_KEEP_DAYS``;
    #: the daily ``ent_lifecycle`` run deletes older ones): a night of the region stages its
    #: tables and plans anew, which would fill the staging area in weeks
    staging_keep_days: int = 14
    #: seconds without a heartbeat after which a run's process on another host is dead
    #: (``ENTSYNC_LOCK_STALE_AFTER``; on the same host its pid tells at once): ``etl.store.locks``
    lock_stale_after: int = 300
    #: the same for an Airflow DAG run, which lives between its tasks (queues, retry delays)
    #: with no process to look at (``ENTSYNC_LOCK_DAG_STALE_AFTER``)
    lock_dag_stale_after: int = 1800

    @property
    def heartbeat_every(self) -> float:
        """Seconds between a holder's heartbeats: 15 (well within the 30 s promised, a late
        beat behind a busy SQLite writer included), or four per stale period."""
        return min(15.0, self.lock_stale_after / 4)
    #: days a run's quarantined files are kept (``ENTSYNC_QUARANTINE_KEEP_DAYS``; the daily
    #: ``ent_lifecycle`` run deletes older run folders)
    quarantine_keep_days: int = 90
    #: how far past now an export's date may be (clocks differ) before the export is refused
    #: as dated in the future (``ENTSYNC_EXPORT_FUTURE_TOLERANCE_MINUTES``)
    export_future_tolerance_minutes: int = 60
    gar: GarSettings = field(default_factory=GarSettings)
    #: where each school's French page is delivered, one folder per school
    #: (``ENTSYNC_SCHOOL_PAGES_DIR``; default ``<workdir>/schools``): ``etl.report.schools``
    school_pages: Path | None = None
    #: the Airflow UI's address (``ENTSYNC_AIRFLOW_URL``, e.g. ``https://airflow.example``):
    #: the run report links back to its DAG run; unset, the link is relative to the api-server
    #: that serves the report
    airflow_url: str | None = None

    @staticmethod
    def from_env(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Environment first (ENTSYNC_*), then explicit overrides (CLI flags) win."""
        e = dict(os.environ if env is None else env)
        workdir = Path(e.get("ENTSYNC_WORKDIR", "var"))
        s = Settings(
            landing=Path(e.get("ENTSYNC_LANDING", str(workdir / "landing"))),
            workdir=workdir,
            state_url=e.get("ENTSYNC_STATE_URL", ""),
            ldap=LdapSettings(
                url=e.get("ENTSYNC_LDAP_URL") or None,
                bind_dn=e.get("ENTSYNC_LDAP_BIND_DN") or None,
                password=e.get("ENTSYNC_LDAP_PASSWORD") or None,
                base=e.get("ENTSYNC_LDAP_BASE") or DEFAULT_BASE,
                ca_file=e.get("ENTSYNC_LDAP_CA_FILE") or None,
                max_connect_failures=_int_setting(
                    "ENTSYNC_LDAP_MAX_CONNECT_FAILURES",
                    e.get("ENTSYNC_LDAP_MAX_CONNECT_FAILURES"), 5, 1, 1000,
                    "a number of consecutive failures, 1 to 1000"),
                transactions=e.get("ENTSYNC_LDAP_TRANSACTIONS", "off").strip().lower() or "off",
                txn_size=_txn_size(e.get("ENTSYNC_LDAP_TXN_SIZE")),
            ),
            staging_url=e.get("ENTSYNC_STAGING_URL", ""),
            statsd_host=e.get("ENTSYNC_STATSD_HOST") or None,
            statsd_port=_port(e.get("ENTSYNC_STATSD_PORT")),
            statsd_prefix=e.get("ENTSYNC_STATSD_PREFIX") or "entsync",
            nice=_int_setting("ENTSYNC_NICE", e.get("ENTSYNC_NICE"), 10, 0, 19,
                              "a niceness, 0 to 19"),
            cpu_policy=_choice_setting("ENTSYNC_CPU_POLICY", e.get("ENTSYNC_CPU_POLICY"),
                                       ("auto", "idle", "nice")),
            cpu_slots=_slots_setting(e.get("ENTSYNC_CPU_SLOTS")),
            read_group=_int_setting("ENTSYNC_READ_GROUP", e.get("ENTSYNC_READ_GROUP"), 16, 1,
                                    None, "a number of schools, 1 or more"),
            plan_group=_int_setting("ENTSYNC_PLAN_GROUP", e.get("ENTSYNC_PLAN_GROUP"), 16, 0,
                                    None, "a number of schools, 0 for the whole academy"),
            read_ahead=_int_setting("ENTSYNC_READ_AHEAD", e.get("ENTSYNC_READ_AHEAD"), 1, 0, 1,
                                    "1 (read the next group ahead) or 0") == 1,
            plan_order=_choice_setting("ENTSYNC_PLAN_ORDER", e.get("ENTSYNC_PLAN_ORDER"),
                                       ("uai", "reverse", "shuffle")),
            staging_keep_days=_int_setting(
                "ENTSYNC_STAGING_KEEP_DAYS", e.get("ENTSYNC_STAGING_KEEP_DAYS"), 14, 1, None,
                "a number of days, 1 or more"),
            lock_stale_after=_int_setting(
                "ENTSYNC_LOCK_STALE_AFTER", e.get("ENTSYNC_LOCK_STALE_AFTER"), 300, 60, None,
                "a number of seconds, 60 or more"),
            lock_dag_stale_after=_int_setting(
                "ENTSYNC_LOCK_DAG_STALE_AFTER", e.get("ENTSYNC_LOCK_DAG_STALE_AFTER"), 1800, 60,
                None, "a number of seconds, 60 or more"),
            quarantine_keep_days=_int_setting(
                "ENTSYNC_QUARANTINE_KEEP_DAYS", e.get("ENTSYNC_QUARANTINE_KEEP_DAYS"), 90, 1,
                None, "a number of days, 1 or more"),
            export_future_tolerance_minutes=_int_setting(
                "ENTSYNC_EXPORT_FUTURE_TOLERANCE_MINUTES",
                e.get("ENTSYNC_EXPORT_FUTURE_TOLERANCE_MINUTES"), 60, 0, None,
                "a number of minutes, 0 or more"),
            gar=GarSettings(
                max_nodes=_int_setting("ENTSYNC_GAR_MAX_NODES", e.get("ENTSYNC_GAR_MAX_NODES"),
                                       10000, 1, None, "a number of elements, 1 or more"),
                ent_id=e.get("ENTSYNC_GAR_ENT_ID") or None,
                xsd=e.get("ENTSYNC_GAR_XSD") or None,
                target=e.get("ENTSYNC_GAR_TARGET") or None,
                sftp_user=e.get("ENTSYNC_GAR_SFTP_USER") or None,
                sftp_password=e.get("ENTSYNC_GAR_SFTP_PASSWORD") or None,
                sftp_key_file=e.get("ENTSYNC_GAR_SFTP_KEY_FILE") or None,
                sftp_known_hosts=e.get("ENTSYNC_GAR_SFTP_KNOWN_HOSTS") or None,
                sftp_host_key=e.get("ENTSYNC_GAR_SFTP_HOST_KEY") or None,
            ),
            school_pages=(Path(e["ENTSYNC_SCHOOL_PAGES_DIR"])
                          if e.get("ENTSYNC_SCHOOL_PAGES_DIR") else None),
            airflow_url=e.get("ENTSYNC_AIRFLOW_URL") or None,
        )
        ldap_over = {k[5:]: v for k, v in overrides.items() if k.startswith("ldap_") and v}
        plain: dict[str, Any] = {
            k: (Path(v) if k in ("landing", "workdir") else v)
            for k, v in overrides.items()
            if not k.startswith("ldap_") and v is not None
        }
        if ldap_over:
            s = replace(s, ldap=replace(s.ldap, **ldap_over))
        if plain:
            s = replace(s, **plain)
        if not s.state_url:
            s = replace(s, state_url=f"sqlite:///{(s.workdir / 'state.db').resolve()}")
        if not s.staging_url:
            s = replace(s, staging_url=(s.workdir / "staging").resolve().as_uri())
        return s

    @property
    def quarantine_dir(self) -> Path:
        return self.workdir / "quarantine"

    @property
    def reports_dir(self) -> Path:
        return self.workdir / "reports"

    @property
    def school_pages_dir(self) -> Path:
        return self.school_pages or self.workdir / "schools"
