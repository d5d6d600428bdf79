"""Validation of one school's canonical tables, between reading and planning.

Why: a bad record must be skipped and reported (file, school, line, rule) without stopping
the school, and a file that is mostly bad must not reach the directory at all (quarantine),
because applying half a broken export would delete or orphan accounts.

- Column rules live as great-expectations suites in ``schemas/expectations/<table>.json``
  and run through a GX 1.x ephemeral context built once per process. Each expectation's
  ``meta`` says which rule it is (``rule``), whether a failure drops the row (default) or
  only blanks the value (``action: blank``, e.g. a malformed INE or email), whether it
  blocks the whole file (``severity: file``, duplicate person keys) and which profiles it
  applies to (``profiles``, a row filter).
- Cross-table references (pupil -> division, link -> pupil/guardian, membership -> person,
  teacher -> structure) are vectorized pandas ``isin`` checks.
- Error budget: a file whose rejected records exceed ``max(budget_min, budget * records)``
  is quarantined and all its rows are removed. Rows that only fail because what they point
  at was rejected or quarantined are removed too, reported, but not counted against their
  own file's budget.

Messages never carry personal data (names, birth dates, emails, INE): only keys and codes.
GX is imported inside functions so that importing this module stays cheap (DAG parsing).
"""

from __future__ import annotations

import functools
import html
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from etl.discover.landing import uai_is_valid
from etl.errors import RecordRejected, RecordWarning
from etl.read import canonical as C
from etl.read.canonical import Tables, isin
from etl.resources import schemas_dir

log = logging.getLogger(__name__)

SUITE_DIR: Final = schemas_dir() / "expectations"
#: tables that have a suite, in the order they are checked and reported
VALIDATED: Final = ("persons", "structures", "memberships", "guardian_links")
#: columns whose values may appear in a message (keys and codes, never personal data)
SAFE_COLUMNS: Final = frozenset(
    {"person_key", "pupil_key", "guardian_key", "code", "kind", "role", "level", "uai",
     "profile", "source", "source_id"}
)
UAI_SHAPE: Final = r"^[0-9]{7}[A-Z]$"
#: how many rejected records the HTML page lists (the JSON has them all)
HTML_MAX_REJECTED: Final = 2000


@dataclass
class ValidationOutcome:
    """What validation of one school yields: clean tables plus everything it found."""

    uai: str
    tables: Tables
    rejected: list[RecordRejected]
    quarantine: dict[str, str]
    checks: list[dict[str, object]]
    input_counts: dict[str, int] = field(default_factory=dict)
    #: what was worked around and reported, not rejected (unknown elements, invisible
    #: characters removed from a name)
    warnings: list[RecordWarning] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        kept = self.tables.counts()
        return {
            "uai": self.uai,
            "summary": {
                t: {
                    "input": self.input_counts.get(t, 0),
                    "kept": kept.get(t, 0),
                    "removed": self.input_counts.get(t, 0) - kept.get(t, 0),
                }
                for t in VALIDATED
            },
            "rejected_count": len(self.rejected),
            "rules": dict(Counter(r.rule for r in self.rejected).most_common()),
            "quarantine": dict(self.quarantine),
            "checks": [dict(c) for c in self.checks],
            "rejected": [r.as_dict() for r in self.rejected],
            "warning_count": len(self.warnings),
            "warnings": [w.as_dict() for w in self.warnings],
        }


# --------------------------------------------------------------------------- suites


@dataclass(frozen=True)
class CheckSpec:
    """One expectation of a suite file, with our meta decoded."""

    table: str
    check_id: str
    type: str
    kwargs: dict[str, Any]
    rule: str
    severity: str  # record | file
    action: str  # drop | blank
    profiles: tuple[str, ...] | None
    message: str
    #: severity file: ``duplicates`` blocks the file of every row but the first sharing a
    #: value (duplicate keys); ``every_row`` blocks the file of every failing row (a wrong
    #: encoding declaration is wrong for the whole file)
    blocks: str = "duplicates"

    @property
    def column(self) -> str:
        return str(self.kwargs["column"])


@functools.cache
def load_specs(table: str) -> tuple[CheckSpec, ...]:
    """Read ``schemas/expectations/<table>.json`` (cached per process)."""
    doc = json.loads((SUITE_DIR / f"{table}.json").read_text(encoding="utf-8"))
    specs = []
    for i, e in enumerate(doc["expectations"]):
        meta = e.get("meta", {})
        severity = meta.get("severity", "record")
        action = meta.get("action", "drop")
        if severity not in ("record", "file") or action not in ("drop", "blank") or meta.get(
                "blocks", "duplicates") not in ("duplicates", "every_row"):
            raise ValueError(f"{table}.json expectation {i}: bad severity/action/blocks")
        profiles = meta.get("profiles")
        specs.append(CheckSpec(
            table=table, check_id=f"{table}:{i}", type=e["type"], kwargs=dict(e["kwargs"]),
            rule=meta["rule"], severity=severity, action=action,
            profiles=tuple(profiles) if profiles else None,
            message=meta.get("message") or f"{meta['rule']} failed on {e['kwargs']['column']}",
            blocks=meta.get("blocks", "duplicates"),
        ))
    return tuple(specs)


@dataclass
class _Gx:
    """The process-wide GX objects: one context, one batch definition and suite per table."""

    context: Any
    batch_definitions: dict[str, Any]
    suites: dict[str, Any]


@functools.cache
def _gx() -> _Gx:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.registry import get_expectation_impl
    from great_expectations.expectations.row_conditions import Column

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("entsync_canonical")
    batch_definitions: dict[str, Any] = {}
    suites: dict[str, Any] = {}
    for table in VALIDATED:
        asset = source.add_dataframe_asset(table)
        batch_definitions[table] = asset.add_batch_definition_whole_dataframe("whole")
        expectations = []
        for spec in load_specs(table):
            extra: dict[str, Any] = {}
            if spec.profiles:
                extra["row_condition"] = Column("profile").is_in(list(spec.profiles))
            cls = get_expectation_impl(spec.type)
            expectations.append(cls(**spec.kwargs, **extra, meta={"check_id": spec.check_id}))
        suites[table] = gx.ExpectationSuite(name=f"entsync_{table}", expectations=expectations)
    return _Gx(context, batch_definitions, suites)


def _run_suite(table: str, df: pd.DataFrame) -> dict[str, tuple[bool, list[int]]]:
    """check_id -> (success, failing row positions). ``df`` must have a RangeIndex.

    Two passes: the whole suite with ``BOOLEAN_ONLY`` (pass or fail: half the time of
    ``COMPLETE``, which also computes every failing value and index), then only the failed
    expectations again with ``COMPLETE`` for their rows. Most schools pass every rule, and
    GX's fixed cost per school was most of the read stage at region scale."""
    specs = load_specs(table)
    if df.empty:
        return {s.check_id: (True, []) for s in specs}
    return _rows_failing(table, df, _passed_checks(table, df))


def _rows_failing(table: str, df: pd.DataFrame,
                  passed: set[str]) -> dict[str, tuple[bool, list[int]]]:
    """``_run_suite``'s answer once the checks ``df`` passes are known: the others run
    again, one by one, with ``COMPLETE`` for their failing rows."""
    out: dict[str, tuple[bool, list[int]]] = {s.check_id: (True, []) for s in load_specs(table)
                                              if s.check_id in passed}
    g = _gx()
    failed = [e for e in g.suites[table].expectations if e.meta["check_id"] not in passed]
    if failed:
        batch = g.batch_definitions[table].get_batch(batch_parameters={"dataframe": df})
        for e in failed:
            r = batch.validate(e, result_format={"result_format": "COMPLETE"})
            out[_checked(r)] = (bool(r.success), [int(i) for i in
                                                  r.result.get("unexpected_index_list") or []])
    return out


def _checked(r: Any) -> str:
    """The check id of a GX result; an expectation that crashed raises."""
    check_id = str(r.expectation_config.meta["check_id"])
    info = r.exception_info or {}
    if info.get("raised_exception"):
        raise RuntimeError(f"expectation {check_id} crashed: {info.get('exception_message')}")
    return check_id


# --------------------------------------------------------------------------- findings


@dataclass
class _Finding:
    """Rows of one table failing one rule (positions in the RangeIndexed input)."""

    table: str
    rows: np.ndarray
    rule: str
    column: str | None
    message: str
    action: str = "drop"  # drop | blank | none
    counted: bool = True  # against the row's file budget
    blocking: bool = False  # quarantines the rows' files


_ELEMENT_BY_PROFILE = {"ELV": "ELEVE", "TUT": "PERSONNE"}


def _col(df: pd.DataFrame, c: str, rows: np.ndarray) -> list[Any]:
    """Column ``c`` at positions ``rows`` as Python values, a missing one as None."""
    return C.values(df[c].iloc[rows])


def _elements(table: str, df: pd.DataFrame, rows: np.ndarray) -> list[str]:
    """The source XML element a canonical row came from, for the report."""
    if table == "persons":
        src = _col(df, "source", rows)
        prof = _col(df, "profile", rows)
        return ["INDIVIDU" if s == "STS" else _ELEMENT_BY_PROFILE.get(str(p), "PERSONNE")
                for s, p in zip(src, prof, strict=True)]
    if table == "memberships":
        return ["ENSEIGNANT" if r == "teacher" else "STRUCTURE"
                for r in _col(df, "role", rows)]
    if table == "structures":
        return ["GROUPE" if k == "G" else "DIVISION" for k in _col(df, "kind", rows)]
    return ["RESPONSABLE_ELEVE"] * len(rows)


def _idents(table: str, df: pd.DataFrame, rows: np.ndarray) -> list[str]:
    """Who/what a row is, by keys and codes only."""
    def col(c: str) -> list[Any]:
        return _col(df, c, rows)

    if table == "persons":
        return [f"person {k}" if k is not None else f"person with source_id {s}"
                for k, s in zip(col("person_key"), col("source_id"), strict=True)]
    if table == "memberships":
        return [f"membership {p} in {c}" for p, c in zip(col("person_key"), col("code"),
                                                          strict=True)]
    if table == "guardian_links":
        return [f"link {p} -> {g}" for p, g in zip(col("pupil_key"), col("guardian_key"),
                                                    strict=True)]
    return [f"structure {c}" for c in col("code")]


def _line(v: object) -> int | None:
    if C.missing(v):
        return None
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    try:
        return int(str(v))
    except ValueError:
        return None


def _records(f: _Finding, df: pd.DataFrame, uai: str, suffix: str = "") -> list[RecordRejected]:
    rows = f.rows
    files = _col(df, "file", rows)
    lines = _col(df, "line", rows)
    elements = _elements(f.table, df, rows)
    idents = _idents(f.table, df, rows)
    if f.column in SAFE_COLUMNS and "{value}" in f.message:
        values = [str(v) for v in _col(df, f.column, rows)]
    else:
        values = ["?"] * len(rows)
    return [
        RecordRejected(str(fi) if fi is not None else "?", uai, _line(li), el, f.rule,
                       f"{ident}: {f.message.replace('{value}', v)}{suffix}",
                       cascade=not f.counted)
        for fi, li, el, ident, v in zip(files, lines, elements, idents, values, strict=True)
    ]


def _first_dup_blocking(df: pd.DataFrame, rows: list[int], col: str) -> np.ndarray:
    """Of rows sharing a key, every one but the first (in table order) blocks its file."""
    if not rows:
        return np.array([], dtype=np.int64)
    sub = df[col].iloc[rows]
    later = sub.duplicated(keep="first").to_numpy(dtype=bool)
    out: np.ndarray = np.asarray(rows, dtype=np.int64)[later]
    return out


# --------------------------------------------------------------------------- cross checks


def _positions(mask: pd.Series) -> np.ndarray:
    return np.flatnonzero(mask.to_numpy(dtype=bool))


def _reference_findings(frames: dict[str, pd.DataFrame], alive: dict[str, np.ndarray]
                        ) -> list[tuple[str, str, str, str, np.ndarray]]:
    """(table, rule, column, message, failing positions) for the reference checks.

    ``alive`` is the per-table boolean mask of rows that count as present; only alive rows
    of the referencing table are checked.
    """
    persons = frames["persons"][alive["persons"]]
    structures = frames["structures"][alive["structures"]]
    m = frames["memberships"]
    gl = frames["guardian_links"]
    pupils = persons.loc[persons["profile"] == C.PROFILE_PUPIL, "person_key"]
    guardians = persons.loc[persons["profile"] == C.PROFILE_GUARDIAN, "person_key"]
    codes = structures["code"].dropna()
    # a pupil's division is checked against the lists of divisions (BEE_STRUCTURES, STS-web);
    # a group is never refused for not being listed (SIECLE says the pupil is in it, and
    # which files came tonight must not decide it): ``group_warnings``
    divisions = structures.loc[structures["kind"] == "D", "code"].dropna()
    m_alive = pd.Series(alive["memberships"], index=m.index)
    gl_alive = pd.Series(alive["guardian_links"], index=gl.index)
    m_has_code = m["code"].notna()
    is_pupil = (m["role"] == "pupil") & (m["kind"] == "D")
    in_structures = isin(m["code"], codes)
    out: list[tuple[str, str, str, str, np.ndarray]] = [
        ("memberships", "unknown_person", "person_key", "no such person in the school",
         _positions(m_alive & m["person_key"].notna() & ~isin(
             m["person_key"], persons["person_key"].dropna()))),
        ("memberships", "unknown_division", "code",
         "no division {value} in the school's structures",
         _positions(m_alive & is_pupil & m_has_code & ~isin(m["code"], divisions))
         if len(divisions) else np.array([], dtype=np.int64)),
        ("memberships", "unknown_structure", "code",
         "teacher linked to {value}, which is not in the school's structures",
         _positions(m_alive & (m["role"] == "teacher") & m_has_code & ~in_structures)),
        ("guardian_links", "unknown_pupil", "pupil_key", "no such pupil in the school",
         _positions(gl_alive & gl["pupil_key"].notna() & ~isin(gl["pupil_key"], pupils))),
        ("guardian_links", "unknown_guardian", "guardian_key", "no such guardian in the school",
         _positions(gl_alive & gl["guardian_key"].notna() & ~isin(gl["guardian_key"], guardians))),
    ]
    return out


def _as_warnings(rows: list[RecordRejected]) -> list[RecordWarning]:
    return [RecordWarning(r.file, r.uai, r.line, r.element, r.rule, r.message) for r in rows]


def group_warnings(frames: dict[str, pd.DataFrame], uai: str) -> list[RecordWarning]:
    """What is kept but told to the school about its groups (warnings, never rejections):

    - ``unknown_group``: a pupil's group that no list of the school's groups read tonight
      has (BEE_STRUCTURES, STS-web), when one came; without one there is nothing to check
      against, and the group is written as the pupils export has it either way;
    - ``group_code_is_division``: a group with the code of a division of the school: both are
      written, the group apart (``cn=<CODE> (groupe)``, docs/directory.md), once per code.
    """
    st, m = frames["structures"], frames["memberships"]
    out: list[RecordWarning] = []
    groups = st.loc[st["kind"] == "G", "code"].dropna()
    if len(groups) and len(m):
        bad = _positions((m["role"] == "pupil") & (m["kind"] == "G") & m["code"].notna()
                         & ~isin(m["code"], groups))
        out += _as_warnings(_records(_Finding(
            "memberships", bad, "unknown_group", "code",
            "group {value} is in none of the school's lists of groups read tonight "
            "(BEE_STRUCTURES, STS-web); kept, as the pupils export has it", action="none"),
            m, uai))

    def codes(kind: str) -> set[str]:
        return {str(c) for df in (st, m) if len(df)
                for c in df.loc[df["kind"] == kind, "code"].dropna().unique()}

    clash = codes("G") & codes("D")  # almost always empty: only then are rows looked at
    first: dict[str, tuple[Any, Any, str]] = {}  # group code -> its first row
    for df in (st, m):
        if not clash or not len(df):
            continue
        rows = df[(df["kind"] == "G") & isin(df["code"], clash)]
        roles = C.values(rows["role"]) if "role" in rows else [None] * len(rows)
        for code, fi, li, role in zip(C.values(rows["code"]), C.values(rows["file"]),
                                      C.values(rows["line"]), roles, strict=True):
            el = "ENSEIGNANT" if role == "teacher" else "STRUCTURE" if role else "GROUPE"
            first.setdefault(str(code), (fi, li, el))
    for code, (fi, li, el) in sorted(first.items()):
        out.append(RecordWarning(
            str(fi) if fi is not None else "?", uai, _line(li), el, "group_code_is_division",
            f"group {code}: a division has the same code; both are kept, the group apart "
            f"(cn={code} (groupe))"))
    return out


def _school_findings(frames: dict[str, pd.DataFrame], uai: str) -> list[_Finding]:
    """Rows whose well-formed uai is another school's (a null uai counts as another's)."""
    out = []
    for t in VALIDATED:
        u = frames[t]["uai"]
        well_formed = u.notna() & u.astype("string").str.fullmatch(UAI_SHAPE).fillna(False)
        bad = (u != uai) & (well_formed | u.isna())
        out.append(_Finding(t, _positions(bad), "wrong_school", "uai",
                            f"row belongs to another school than {uai}"))
    return out


# --------------------------------------------------------------------------- main


def _prepare(tables: Tables) -> dict[str, pd.DataFrame]:
    frames: dict[str, pd.DataFrame] = {}
    for t in C.TABLES:
        # a fresh RangeIndex: GX reports failing rows by index label, we use them as positions
        frames[t] = tables[t].reset_index(drop=True)
        for c in C.TABLES[t]:
            if c not in frames[t].columns:
                frames[t][c] = pd.Series([None] * len(frames[t]), dtype="object")
    return frames


SuiteResults = dict[str, dict[str, tuple[bool, list[int]]]]
"""A school's GX results: table -> check_id -> (success, failing row positions)."""


def run_suites(schools: list[Tables]) -> list[SuiteResults]:
    """The GX column rules of several schools, one suite run per table for all of them.

    GX's cost is mostly fixed per expectation run, whatever the rows, which made it the
    largest part of reading a school. Here each table of the schools is concatenated and
    checked once with ``BOOLEAN_ONLY``; an expectation that passes there passes for every
    school (row rules hold row by row, and a column unique over all the schools is unique in
    each). Only the expectations that failed are run again, school by school, for their
    failing rows, exactly as ``validate_school`` alone would (a key repeated across two
    schools fails the concatenation but neither school). Same results as one
    ``_run_suite`` per school and table, for a fraction of the calls."""
    prepared = [_prepare(t) for t in schools]
    out: list[SuiteResults] = [{} for _ in schools]
    for t in VALIDATED:
        specs = load_specs(t)
        frames = [p[t] for p in prepared]
        present = [i for i, f in enumerate(frames) if not f.empty]
        for i, f in enumerate(frames):
            if f.empty:
                out[i][t] = {s.check_id: (True, []) for s in specs}
        if not present:
            continue
        passed = _passed_checks(t, pd.concat([frames[i] for i in present], ignore_index=True))
        for i in present:
            out[i][t] = _rows_failing(t, frames[i], passed)
    return out


def _passed_checks(table: str, df: pd.DataFrame) -> set[str]:
    """The check ids of ``table``'s suite that ``df`` passes (one ``BOOLEAN_ONLY`` run)."""
    g = _gx()
    batch = g.batch_definitions[table].get_batch(batch_parameters={"dataframe": df})
    res = batch.validate(g.suites[table], result_format={"result_format": "BOOLEAN_ONLY"})
    return {_checked(r) for r in res.results if r.success}


#: reference rule -> (column, kinds of export whose absence explains it): a row pointing
#: into a document that could not be read is that document's problem, not its own
_TARGETS: Final[dict[tuple[str, str], tuple[str, frozenset[str]]]] = {
    ("memberships", "unknown_division"): ("code", frozenset({"STRUCTURES", "STS"})),
    ("memberships", "unknown_structure"): ("code", frozenset({"STRUCTURES", "STS"})),
    ("guardian_links", "unknown_pupil"): ("pupil_key", frozenset({"ELEVES"})),
    ("guardian_links", "unknown_guardian"): ("guardian_key", frozenset({"RESPONSABLES"})),
}


def _excused(frames: dict[str, pd.DataFrame], t: str, rule: str, pos: np.ndarray,
             rejected_keys: set[str], unread: set[str]) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """Split a reference check's failing rows: (their own problem, pointing at a record a
    reader rejected, pointing into an export that could not be read)."""
    if not len(pos):
        return pos, pos, pos
    df = frames[t]
    if (t, rule) == ("memberships", "unknown_person"):
        roles = np.asarray(_col(df, "role", pos), dtype=object)
        quiet = (("ELEVES" in unread) & (roles == "pupil")) | (("STS" in unread)
                                                               & (roles == "teacher"))
        col = "person_key"
    elif (t, rule) in _TARGETS:
        col, kinds = _TARGETS[(t, rule)]
        quiet = np.full(len(pos), bool(kinds & unread))
    else:
        return pos, pos[:0], pos[:0]
    named = np.zeros(len(pos), dtype=bool)
    if rejected_keys and col != "code":
        named = np.array([k in rejected_keys for k in _col(df, col, pos)], dtype=bool)
    named &= ~quiet
    return pos[~named & ~quiet], pos[named], pos[quiet]


def validate_school(tables: Tables, uai: str, *, budget: float = 0.02, budget_min: int = 5,
                    file_records: dict[str, int] | None = None,
                    suite_results: SuiteResults | None = None,
                    read_rejected: Sequence[RecordRejected] = (),
                    rejected_keys: Iterable[str] = (), unread: Iterable[str] = (),
                    warnings: Sequence[RecordWarning] = ()) -> ValidationOutcome:
    """Check one school's tables; drop bad rows, quarantine files past the error budget.
    ``suite_results``: the school's GX results when already computed with other schools'
    (``run_suites``).

    What the readers found comes too, so that the school's report holds every problem once:
    ``read_rejected`` (reported first, and against their file's budget), ``rejected_keys``
    (the person keys of those records: rows pointing at them are removed as their
    consequence, uncounted), ``unread`` (kinds of export that could not be read: rows
    pointing into one are removed silently, that file is the one problem) and ``warnings``.
    """
    rejected_keys = set(rejected_keys)
    unread = set(unread)
    frames = _prepare(tables)
    n = {t: len(frames[t]) for t in C.TABLES}
    checks: list[dict[str, object]] = []
    findings: list[_Finding] = []
    if not uai_is_valid(uai):
        log.warning("school %s: uai check letter does not match", uai)
    checks.append({"table": "school", "rule": "uai_check_letter", "column": "uai",
                   "check": "uai_is_valid", "success": uai_is_valid(uai),
                   "unexpected_count": 0 if uai_is_valid(uai) else 1})

    # 1. column rules (GX)
    for t in VALIDATED:
        results = suite_results[t] if suite_results is not None else _run_suite(t, frames[t])
        for spec in load_specs(t):
            success, rows = results[spec.check_id]
            checks.append({"table": t, "rule": spec.rule, "column": spec.column,
                           "check": spec.type, "success": success,
                           "unexpected_count": len(rows)})
            if not rows:
                continue
            pos = np.asarray(rows, dtype=np.int64)
            if spec.severity == "file":
                if spec.blocks != "every_row":
                    pos = _first_dup_blocking(frames[t], rows, spec.column)
                findings.append(_Finding(t, pos, spec.rule, spec.column, spec.message,
                                         blocking=True))
            else:
                findings.append(_Finding(t, pos, spec.rule, spec.column, spec.message,
                                         action=spec.action))
    for f in _school_findings(frames, uai):
        checks.append({"table": f.table, "rule": f.rule, "column": f.column,
                       "check": "uai_equals_school", "success": len(f.rows) == 0,
                       "unexpected_count": len(f.rows)})
        if len(f.rows):
            findings.append(f)

    # 2. references, against everything that was read; a row pointing at what a reader
    # rejected is left for step 4 (a consequence), one pointing into an unread export goes
    everything = {t: np.ones(n[t], dtype=bool) for t in C.TABLES}
    silent = {t: np.zeros(n[t], dtype=bool) for t in C.TABLES}
    ref_checks: dict[tuple[str, str], dict[str, Any]] = {}
    for t, rule, col, msg, pos in _reference_findings(frames, everything):
        pos, _named, quiet = _excused(frames, t, rule, pos, rejected_keys, unread)
        silent[t][quiet] = True
        chk: dict[str, Any] = {"table": t, "rule": rule, "column": col, "check": "reference",
                               "success": len(pos) == 0, "unexpected_count": len(pos),
                               "cascaded_count": len(quiet)}
        ref_checks[(t, rule)] = chk
        checks.append(chk)
        if len(pos):
            findings.append(_Finding(t, pos, rule, col, msg))
    for rule, k in sorted(Counter(r.rule for r in read_rejected).items()):
        checks.append({"table": "reader", "rule": rule, "column": None, "check": "reader",
                       "success": False, "unexpected_count": k})

    # 3. error budget and blocking rules, per file
    dropped = {t: np.zeros(n[t], dtype=bool) for t in C.TABLES}
    rejected_rows: dict[str, set[tuple[str, int]]] = {}
    rules_by_file: dict[str, Counter[str]] = {}
    blocking: dict[str, list[str]] = {}
    for f in findings:
        if f.action != "drop" and not f.blocking:
            continue
        dropped[f.table][f.rows] = True
        files = _col(frames[f.table], "file", f.rows)
        for fi, r in zip(files, f.rows, strict=True):
            if fi is None:
                continue
            rejected_rows.setdefault(str(fi), set()).add((f.table, int(r)))
            rules_by_file.setdefault(str(fi), Counter())[f.rule] += 1
            if f.blocking:
                blocking.setdefault(str(fi), []).append(f"{f.column} {f.rule}")
    records = dict(file_records) if file_records else _rows_per_file(frames)
    quarantine: dict[str, str] = {}
    by_reader = Counter(r.file for r in read_rejected)
    for fi, rows_set in sorted(rejected_rows.items()):
        bad = len(rows_set)
        total = records.get(fi, bad)
        limit = max(budget_min, budget * total)
        first_rules = ", ".join(r for r, _ in rules_by_file[fi].most_common(3))
        if fi in blocking:
            dup = Counter(blocking[fi])
            what = "; ".join(f"{k} ({v} rows)" for k, v in dup.items())
            quarantine[fi] = f"blocking check failed: {what}"
        elif bad > limit:
            quarantine[fi] = (f"error budget exceeded: {bad} of {total} records rejected "
                              f"(first rules: {first_rules})")
    # records the readers rejected count against their file's budget too (on their own)
    for fi, bad in sorted(by_reader.items()):
        total = records.get(fi, 0)
        if fi not in quarantine and bad > max(budget_min, budget * total):
            quarantine[fi] = f"error budget exceeded: {bad} of {total} records rejected"
    for fi, reason in quarantine.items():
        log.warning("school %s: quarantined %s: %s", uai, fi, reason)

    # 4. what survives; rows hanging on removed rows go too (not counted against budgets,
    # reported as consequences); those pointing into an unread export went in step 2
    alive: dict[str, np.ndarray] = {}
    for t in C.TABLES:
        mask = ~dropped[t] & ~silent[t]
        if quarantine and "file" in frames[t].columns:
            mask &= ~frames[t]["file"].isin(list(quarantine)).to_numpy(dtype=bool)
        alive[t] = mask
    for t, rule, col, msg, pos in _reference_findings(frames, alive):
        if len(pos):
            f = _Finding(t, pos, rule, col, msg, counted=False)
            findings.append(f)
            ref_checks[(t, rule)]["cascaded_count"] += len(pos)
            alive[t][pos] = False

    # 5. reports and output tables
    rejected: list[RecordRejected] = list(read_rejected)
    for f in findings:
        suffix = ""
        if not f.counted:
            suffix = " (what it points at was rejected or quarantined)"
        elif f.blocking:
            suffix = " (blocking: file quarantined)"
        rejected.extend(_records(f, frames[f.table], uai, suffix))
    out = Tables()
    for t in C.TABLES:
        df = frames[t]
        if t in VALIDATED:
            for f in findings:
                if f.table == t and f.action == "blank" and f.column is not None:
                    df.loc[f.rows, f.column] = None
        out[t] = df if alive[t].all() else df[alive[t]].reset_index(drop=True)
    kept = {t: out[t].reset_index(drop=True) for t in ("structures", "memberships")}
    grouped = group_warnings(kept, uai)
    return ValidationOutcome(uai=uai, tables=out, rejected=rejected, quarantine=quarantine,
                             checks=checks, input_counts={t: n[t] for t in VALIDATED},
                             warnings=[*warnings, *grouped])


def _rows_per_file(frames: dict[str, pd.DataFrame]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for t in VALIDATED:
        vc = frames[t]["file"].dropna().astype(str).value_counts()
        total.update({str(k): int(v) for k, v in vc.items()})
    return dict(total)


# --------------------------------------------------------------------------- report


def _table(headers: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{e('' if v is None else str(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _record_rows(records: Sequence[RecordRejected | RecordWarning]) -> list[str]:
    """A report's table of records (the first ``HTML_MAX_REJECTED``; the JSON has them all)."""
    shown = records[:HTML_MAX_REJECTED]
    out = [_table(("file", "line", "element", "rule", "message"),
                  ((r.file, r.line, r.element, r.rule, r.message) for r in shown))
           if shown else "<p>None.</p>"]
    if len(records) > len(shown):
        out.append(f"<p>{len(records) - len(shown)} more in the JSON report.</p>")
    return out


def render_html(outcome: ValidationOutcome) -> str:
    """A small self-contained page: summary, checks, rejected records, quarantined files."""
    e = html.escape
    d = outcome.as_dict()
    summary = d["summary"]
    assert isinstance(summary, dict)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Validation {e(outcome.uai)}</title>",
        "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #999;padding:2px 6px;text-align:left}"
        ".fail{color:#b00}</style></head><body>",
        f"<h1>Validation of school {e(outcome.uai)}</h1>",
        "<h2>Summary</h2>",
        _table(("table", "input", "kept", "removed"),
               ((t, s["input"], s["kept"], s["removed"]) for t, s in summary.items())),
        f"<p>{len(outcome.rejected)} record problems, {len(outcome.quarantine)} files "
        f"quarantined, {len(outcome.warnings)} warnings.</p>",
        "<h2>Quarantined files</h2>",
        _table(("file", "reason"), sorted(outcome.quarantine.items()))
        if outcome.quarantine else "<p>None.</p>",
        "<h2>Checks</h2>",
        _table(("table", "rule", "column", "check", "success", "count"),
               ((c.get("table"), c.get("rule"), c.get("column"), c.get("check"),
                 "yes" if c.get("success") else "NO", c.get("unexpected_count"))
                for c in outcome.checks)),
        "<h2>Rejected records</h2>",
    ]
    parts += _record_rows(outcome.rejected)
    parts.append("<h2>Warnings (read anyway)</h2>")
    parts += _record_rows(outcome.warnings)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_validation_report(outcome: ValidationOutcome, out_dir: Path) -> tuple[Path, Path]:
    """Write ``validation_<uai>.html`` and ``validation_<uai>.json``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    safe_uai = re.sub(r"[^0-9A-Za-z]", "_", outcome.uai)
    html_path = out_dir / f"validation_{safe_uai}.html"
    json_path = out_dir / f"validation_{safe_uai}.json"
    html_path.write_text(render_html(outcome), encoding="utf-8")
    json_path.write_text(json.dumps(outcome.as_dict(), ensure_ascii=False, indent=1,
                                    default=str), encoding="utf-8")
    return html_path, json_path
