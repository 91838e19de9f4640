"""runalert.backoff: the one Retry-After parser and the one backoff policy."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from runalert.backoff import Backoff, parse_retry_after

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("Fri, 15 Jan 2027 08:00:30 GMT", 30.0),  # IMF-fixdate
        ("Friday, 15-Jan-27 08:01:00 GMT", 60.0),  # obsolete RFC 850 form
        ("Fri, 15 Jan 2027 07:59:00 GMT", 0.0),  # in the past: now
        ("Fri, 15 Jan 2027 08:00:10 -0000", 10.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after_reads_seconds_and_http_dates(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_backoff_doubles_up_to_its_maximum_with_bounded_jitter() -> None:
    policy = Backoff(initial=0.5, maximum=4.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.delay(10_000) == 4.0
    jittered = Backoff(initial=1.0, maximum=8.0, jitter=0.5)
    rng = random.Random(7)
    delays = [jittered.delay(2, rng=rng) for _ in range(200)]
    assert all(2.0 <= d < 2.5 for d in delays) and max(delays) - min(delays) > 0.3


def test_a_receivers_retry_after_replaces_the_backoff_up_to_a_cap() -> None:
    policy = Backoff(initial=0.5, maximum=4.0, jitter=1.0, max_retry_after=60.0)
    assert policy.delay(1, 30.0) == 30.0
    assert policy.delay(5, 0.0) == 0.0
    assert policy.delay(1, 3600.0) == 60.0


@pytest.mark.parametrize("field", ["initial", "maximum", "jitter", "max_retry_after"])
@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "1"])
def test_bad_policies_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{field} must be a number of seconds >= 0"):
        Backoff(**{field: value})  # type: ignore[arg-type]


def test_the_client_reads_a_429s_http_date_too() -> None:
    from runalert.client.rest import NO_RETRY, Client, ServerUnavailableError
    from tests.hostile import HostileReceiver, http_date, rate_limited

    with HostileReceiver(rate_limited(http_date(60))) as server:
        client = Client(server.url(""), project="p", retry=NO_RETRY)
        with pytest.raises(ServerUnavailableError) as info:
            client.request("GET", "/api/v1/projects")
    assert info.value.retry_after is not None and 40 < info.value.retry_after <= 60


# -- mutation testing (docs/mutation.md): what the tests above left open -----------------------------------------
@pytest.fixture
def new_york_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set to UTC-5 (New York in January) for one test, then put back."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    assert time.timezone != 0  # the zone really moved: a date read as local time would be 5 hours off
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("new_york_clock")
@pytest.mark.parametrize(
    "value",
    [
        "Fri, 15 Jan 2027 08:00:30 GMT",
        "Fri, 15 Jan 2027 08:00:30 -0000",  # RFC 5322's "unknown zone": UTC, never the machine's local time
        "Fri, 15 Jan 2027 08:00:30 +0000",
    ],
)
def test_an_http_date_is_read_in_utc_whatever_the_machines_time_zone(value: str) -> None:
    assert parse_retry_after(value, now=NOW) == 30.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("Fri, 15 Jan 2027 10:00:30 +0200", 30.0),  # a date with its own offset keeps it
        ("Fri, 15 Jan 2027 03:01:00 -0500", 60.0),
    ],
)
def test_an_http_date_with_an_offset_is_read_with_that_offset(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds
