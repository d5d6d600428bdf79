"""The logins searched next when some were found taken in the directory."""

from __future__ import annotations

from etl.audit.adopt import LOGIN_WINDOW, _next_numbers


def test_a_name_found_taken_has_its_next_numbers_searched() -> None:
    w = LOGIN_WINDOW
    assert _next_numbers(["lea.martin"]) == [f"lea.martin{k}" for k in range(2, 2 + 1 + w)]
    # past the highest found, as many as were found and the window more
    assert _next_numbers(["lea.martin", "lea.martin7"]) == [
        f"lea.martin{k}" for k in range(8, 7 + 2 + w + 1)]
    assert _next_numbers(["jean-marc.roy3", "zoe.petit"]) == [
        *[f"jean-marc.roy{k}" for k in range(4, 4 + 1 + w)],
        *[f"zoe.petit{k}" for k in range(2, 2 + 1 + w)]]
    assert _next_numbers([]) == []


def test_a_name_ending_in_1_is_a_name_not_a_number() -> None:
    # "x1" is never handed out as a number (numbers start at 2): its own name
    assert _next_numbers(["paul.x1"])[0] == "paul.x12"
