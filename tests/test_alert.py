from __future__ import annotations

from datetime import timedelta

import pytest

from runalert import Alert, AlertLevel
from runalert.alert import fingerprint, parse_wait_duration


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("info", AlertLevel.INFO),
        ("Warn", AlertLevel.WARN),
        ("WARNING", AlertLevel.WARN),
        (" error ", AlertLevel.ERROR),
        (AlertLevel.ERROR, AlertLevel.ERROR),
    ],
)
def test_levels_parse_in_any_case(given: str, expected: AlertLevel) -> None:
    assert AlertLevel.parse(given) is expected


@pytest.mark.parametrize("bad", ["debug", "", 3, None])
def test_unknown_level_names_argument_and_allowed_values(bad: object) -> None:
    with pytest.raises(ValueError, match=r"level must be one of INFO, WARN, ERROR"):
        AlertLevel.parse(bad)  # type: ignore[arg-type]


def test_levels_are_ordered() -> None:
    assert AlertLevel.INFO.rank < AlertLevel.WARN.rank < AlertLevel.ERROR.rank


def test_wait_duration_accepts_seconds_and_timedelta_and_keeps_zero() -> None:
    assert parse_wait_duration(0) == 0.0  # W&B turns 0 into 60 s; we do not
    assert parse_wait_duration(2.5) == 2.5
    assert parse_wait_duration(timedelta(minutes=5)) == 300.0
    assert parse_wait_duration(None) == 60.0


@pytest.mark.parametrize("bad", [-1, float("nan"), "60", True])
def test_wait_duration_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match="wait_duration"):
        parse_wait_duration(bad)  # type: ignore[arg-type]


def test_title_limits() -> None:
    Alert(title="x" * 64)
    with pytest.raises(ValueError, match=r"title must be at most 64 characters \(got 65\)"):
        Alert(title="x" * 65)
    with pytest.raises(ValueError, match="title must be a non-empty string"):
        Alert(title="  ")


def test_round_trip_and_suppressed_note() -> None:
    alert = Alert(title="t", text="body", level=AlertLevel.WARN, run="r1", fields={"step": "3"}, payload={"a": 1})
    again = Alert.from_dict(alert.to_dict())
    assert again == alert
    assert alert.with_suppressed(2).body == "body\n(2 similar alerts suppressed)"
    assert alert.with_suppressed(1).body.endswith("(1 similar alert suppressed)")


def test_fingerprint_is_per_run_and_title() -> None:
    assert fingerprint("a", "t") == fingerprint("a", "t")
    assert fingerprint("a", "t") != fingerprint("b", "t")
    assert fingerprint(None, "t") != fingerprint(None, "u")
