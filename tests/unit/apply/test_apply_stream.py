"""DirectoryWriter.apply fed a stream (a plan file read line by line): waves still complete
before the next one starts, the stream is read a chunk at a time, never whole, and a stream
out of apply order stops before the offending change is written. No directory needed: the
writes are recorded by a writer whose connections' threads (``_stream_worker``) only note
what they were given (the wire itself: tests/integration/test_apply_txn.py)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from etl.apply.writer import ApplyResult, DirectoryWriter, LdapTarget, Outcome
from etl.plan.diff import Change, apply_order, wave_key


class RecordingWriter(DirectoryWriter):
    def __init__(self, workers: int, chunk_size: int) -> None:
        super().__init__(LdapTarget(url="ldap://unused", bind_dn="cn=x", password="x",
                                    transactions="off"), workers=workers,
                         chunk_size=chunk_size)
        self.events: list[tuple[str, str]] = []
        self.pulled = 0
        self.max_ahead = 0  # changes read from the stream and not yet finished
        self.done = 0
        self._ev = threading.Lock()

    def apply_one(self, ch: Change, res: ApplyResult) -> tuple[bool, dict[str, Any]]:
        with self._ev:
            self.events.append(("start", ch.dn))
            self.max_ahead = max(self.max_ahead, self.pulled - self.done)
        time.sleep(0.001 * (hash(ch.dn) % 3))  # completions out of submission order
        with self._ev:
            self.events.append(("end", ch.dn))
            self.done += 1
        return (not ch.dn.startswith("uid=bad")), {"result": 0 if ch.dn[:7] != "uid=bad"
                                                   else 50, "description": "x"}

    def _stream_worker(self, todo: deque[Change], res: ApplyResult,
                       emit: Callable[[list[Outcome]], None]) -> None:
        """A connection's share of a wave, one change at a time (no wire here)."""
        while todo:
            try:
                ch = todo.popleft()
            except IndexError:
                return
            emit([(ch, *self.apply_one(ch, res))])

    def stream(self, changes: list[Change]) -> Iterator[Change]:
        for ch in changes:
            self.pulled += 1
            yield ch


def _plan() -> list[Change]:
    base = "dc=x"
    out = [Change("add", f"ou=structures,{base}", "ou", None, "create")]
    for s in range(3):
        sdn = f"ENTStructureUAI=S{s},ou=structures,{base}"
        out.append(Change("add", sdn, "school", f"S{s}", "create"))
        out.append(Change("add", f"ou=groups,{sdn}", "ou", f"S{s}", "create"))
        for c in range(4):
            out.append(Change("add", f"cn=C{c},ou=groups,{sdn}", "class", f"S{s}", "create"))
            out.append(Change("delete", f"cn=old{c},ou=groups,{sdn}", "class", f"S{s}",
                              "delete"))
        out.append(Change("delete", f"ou=old,ou=groups,{sdn}", "ou", f"S{s}", "delete"))
    out += [Change("add", f"uid=p{i},ou=people,{base}", "person", "S0", "create")
            for i in range(25)]
    out.append(Change("modify", f"uid=bad,ou=people,{base}", "person", "S1", "update"))
    return apply_order(out)


def test_a_stream_is_applied_wave_by_wave_a_chunk_at_a_time() -> None:
    plan = _plan()
    w = RecordingWriter(workers=4, chunk_size=5)
    applied: list[str] = []
    failed: list[str] = []
    res = w.apply(w.stream(plan), on_applied=lambda ch: applied.append(ch.dn),
                  on_failed=lambda ch, _r: failed.append(ch.dn))
    assert res.applied == len(plan) - 1 and res.failed == 1 == len(res.errors)
    assert failed == ["uid=bad,ou=people,dc=x"] and sorted(applied) == sorted(
        c.dn for c in plan if c.dn != "uid=bad,ou=people,dc=x")
    # every change of a wave ends before any change of a later wave starts
    wave_of = {c.dn: wave_key(c) for c in plan}
    started_waves: list[tuple[int, int, int]] = []
    ended: dict[tuple[int, int, int], int] = {}
    sizes: dict[tuple[int, int, int], int] = {}
    for c in plan:
        sizes[wave_of[c.dn]] = sizes.get(wave_of[c.dn], 0) + 1
    for kind, dn in w.events:
        k = wave_of[dn]
        if kind == "start":
            for earlier in started_waves:
                if earlier < k:
                    assert ended.get(earlier, 0) == sizes[earlier], (dn, earlier)
            if k not in started_waves:
                started_waves.append(k)
        else:
            ended[k] = ended.get(k, 0) + 1
    assert started_waves == sorted(sizes)  # parents first, deletes (children first) last
    # the stream is read a chunk at a time: never more than a chunk (and the one change that
    # tells the chunk is full) ahead of the writes
    assert w.max_ahead <= 5 + 1 and w.pulled == len(plan)


def test_a_list_is_put_in_apply_order_first() -> None:
    plan = _plan()
    w = RecordingWriter(workers=2, chunk_size=1000)
    w.apply(list(reversed(plan)))
    starts = [dn for kind, dn in w.events if kind == "start"]
    keys = [wave_key(next(c for c in plan if c.dn == dn)) for dn in starts]
    assert keys == sorted(keys)


def test_a_stream_out_of_apply_order_stops_before_the_change_out_of_place() -> None:
    plan = _plan()
    child = next(c for c in plan if c.kind == "class" and c.op == "add")
    school = next(c for c in plan if c.kind == "school")
    w = RecordingWriter(workers=2, chunk_size=1000)
    with pytest.raises(ValueError, match="not in apply order"):
        w.apply(iter([child, school]))
    assert [dn for kind, dn in w.events if kind == "start"] == [child.dn]
