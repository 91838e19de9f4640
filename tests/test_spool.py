"""The spool under damage: torn and corrupt lines, processes killed mid-append, concurrent claims, permissions.

Everything is real: files on disk, child processes killed with SIGKILL, ``runalert flush`` run as a process,
receivers on loopback (pytest-httpserver).
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import runalert
from runalert import Alert
from runalert.alerting import Spool, SpooledAlert
from runalert.alerting.spool import MAX_RECORD_BYTES
from runalert.channels import Console, Webhook

# -- helpers -------------------------------------------------------------------------------------------------


class Collector:
    """A webhook receiver that keeps every alert's (id, title) in arrival order."""

    def __init__(self, httpserver: HTTPServer, path: str = "/hook") -> None:
        self.url = httpserver.url_for(path)
        self.got: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        httpserver.expect_request(path).respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        with self._lock:
            self.got.append((body["id"], body["title"]))
        return Response("ok")

    def titles(self) -> list[str]:
        with self._lock:
            return [title for _id, title in self.got]


def record(channel_key: str, title: str) -> SpooledAlert:
    return SpooledAlert(channel_key, "webhook", Alert(title=title, text="kept"), time.time())


def child_env(home: Path, **settings: str) -> dict[str, str]:
    """This process's environment (PATH, PYTHONPATH...) without RUNALERT_*, plus ``home`` and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNALERT_")}
    env["RUNALERT_HOME"] = str(home)
    env.update({f"RUNALERT_{name.upper()}": value for name, value in settings.items()})
    return env


def run_flush(home: Path, url: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runalert.cli", "flush", "--timeout", str(timeout)],
        env=child_env(home, webhook_url=url),
        capture_output=True,
        text=True,
        timeout=timeout + 60,
        check=False,
    )


def spool_log(caplog: pytest.LogCaptureFixture, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "runalert" and word in r.getMessage()]


# -- unreadable lines ----------------------------------------------------------------------------------------

BAD_LINES = {
    "invalid UTF-8": b'{"channel": "\xff\xfe"}\n',
    "truncated JSON": b'{"channel": "webhook-0", "alert": {"title": "cut',
    "over-long line": b'{"channel": "webhook-0", "alert": {"title": "' + b"x" * (MAX_RECORD_BYTES + 10) + b'"}}\n',
    "JSON of the wrong shape": b'[1, 2, {"channel": "webhook-0"}]\n',
    "a record whose alert is not an alert": b'{"channel": "webhook-0", "alert": {"title": ""}}\n',
}


@pytest.mark.parametrize("bad", list(BAD_LINES.values()), ids=list(BAD_LINES))
def test_an_unreadable_line_is_quarantined_and_the_good_ones_are_claimed(
    isolated_env: Path, bad: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(isolated_env)
    spool.append([record("webhook-0", "before")])
    with open(spool.path, "ab") as handle:
        handle.write(bad)  # a truncated line has no end: the next append must not glue onto it
    spool.append([record("webhook-0", "after"), record("other", "not claimed")])

    claimed = spool.claim(["webhook-0"])

    assert [r.alert.title for r in claimed] == ["before", "after"]
    assert [r.alert.title for r in spool.pending()] == ["not claimed"]
    quarantined = spool.quarantine_path.read_bytes()
    assert quarantined == (bad if bad.endswith(b"\n") else bad + b"\n")  # moved whole, byte for byte
    assert bad.rstrip(b"\n") not in spool.path.read_bytes()
    assert len(spool_log(caplog, str(spool.quarantine_path))) == 1
    # A second claim finds nothing more to move, and logs nothing more.
    assert spool.claim(["other"])[0].alert.title == "not claimed"
    assert len(spool_log(caplog, str(spool.quarantine_path))) == 1


def test_an_undecodable_byte_never_reaches_alert(
    httpserver: HTTPServer, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Collector(httpserver)
    key = Webhook(receiver.url).key
    spool = Spool(isolated_env)
    spool.append([record(key, "spooled before")])
    with open(spool.path, "ab") as handle:
        handle.write(b"\x80\x81 half a record\xff\n")
    monkeypatch.setenv("RUNALERT_WEBHOOK_URL", receiver.url)

    assert runalert.alert("new alert", wait_duration=0) is True  # used to raise UnicodeDecodeError
    assert runalert.finish(timeout=30)

    assert sorted(receiver.titles()) == ["new alert", "spooled before"]
    assert spool.quarantine_path.read_bytes() == b"\x80\x81 half a record\xff\n"


def test_reading_an_over_long_line_is_bounded_in_memory(isolated_env: Path) -> None:
    spool = Spool(isolated_env)
    spool.append([record("k", "first")])
    with open(spool.path, "ab") as handle:
        for _ in range(48):  # one 48 MiB line, written in pieces
            handle.write(b"y" * (1 << 20))
        handle.write(b"\n")
    spool.append([record("k", "last")])

    tracemalloc.start()
    try:
        claimed = spool.claim(["k"])
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert [r.alert.title for r in claimed] == ["first", "last"]
    assert peak < 8 * MAX_RECORD_BYTES  # a few lines' worth, never the whole 48 MiB line
    assert spool.quarantine_path.stat().st_size == 48 * (1 << 20) + 1


def test_a_claim_takes_a_bounded_batch_and_leaves_the_rest(isolated_env: Path) -> None:
    spool = Spool(isolated_env)
    spool.append([record("k", f"a{i}") for i in range(25)])
    first = spool.claim(["k"], max_records=10)
    second = spool.claim(["k"], max_records=10)
    third = spool.claim(["k"], max_records=10)
    assert [r.alert.title for r in first + second + third] == [f"a{i}" for i in range(25)]
    assert spool.claim(["k"]) == []


def test_a_spool_written_by_the_previous_version_is_read_as_it_is(isolated_env: Path) -> None:
    isolated_env.mkdir()
    old_line = json.dumps(  # the earlier writer: json.dumps with its default separators, text mode
        {"channel": "k", "channel_name": "webhook", "spooled_at": 1.0, "alert": Alert(title="from 0.1").to_dict()}
    )
    (isolated_env / "spool.jsonl").write_text(old_line + "\n")
    spool = Spool(isolated_env)
    assert [r.alert.title for r in spool.claim(["k"])] == ["from 0.1"]
    assert not spool.quarantine_path.exists()


# -- real processes ------------------------------------------------------------------------------------------

APPENDER = r"""
import os, sys
from runalert import Alerter
from runalert.channels import Webhook

alerter = Alerter([Webhook(sys.argv[1])], resend_spooled=False)
alerter.close(0)  # closed: every alert goes straight to the spool, as at exit
big = "x" * 200_000
i = 0
while True:
    title = f"huge {os.getpid()}-{i}"
    alerter.alert(title, big, wait_duration=0)
    print(title, flush=True)  # printed once its append has returned
    i += 1
"""


def test_a_process_killed_mid_append_loses_only_the_alert_it_was_writing(
    httpserver: HTTPServer, isolated_env: Path
) -> None:
    receiver = Collector(httpserver)
    spool = Spool(isolated_env)
    written: list[str] = []
    rng = random.Random()
    for round_ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", APPENDER, receiver.url],
            env=child_env(isolated_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert child.stdout is not None
        written.append(child.stdout.readline().strip())  # it is appending now
        time.sleep(rng.uniform(0.0, 0.1))  # a random moment: not a check, the point of the kill
        os.kill(child.pid, signal.SIGKILL)
        written += child.stdout.read().splitlines()
        child.wait()
        if round_ == 1:
            # A kill lands inside write() only now and then; make sure once that the next process appends
            # after a torn line, by leaving what such a kill leaves: the first half of the last record.
            # (When this round's kill already landed inside write(), the torn line is there: nothing to cut.)
            data = spool.path.read_bytes()
            if data.endswith(b"\n"):
                start = data.rstrip(b"\n").rfind(b"\n") + 1
                cut = json.loads(data[start:])["alert"]["title"]
                written = [title for title in written if title != cut]  # (it may have died before reporting it)
                os.truncate(spool.path, start + (len(data) - start) // 2)

    # A new process with this home: its alert() works (the console is its channel).
    after = subprocess.run(
        [sys.executable, "-c", "import runalert, sys; sys.exit(0 if runalert.alert('after the crash') else 3)"],
        env=child_env(isolated_env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert after.returncode == 0, after.stderr
    assert "after the crash" in after.stderr

    done = run_flush(isolated_env, receiver.url)
    assert done.returncode == 0, done.stdout + done.stderr
    titles = receiver.titles()
    assert len(titles) == len(set(titles))  # each at most once
    assert set(written) <= set(titles)  # every completed append is delivered
    assert len(set(titles) - set(written)) <= 4  # at most one per kill: written, not yet reported
    assert len(spool) == 0
    assert spool.quarantine_path.read_bytes().count(b"\n") >= 1  # the torn half, moved aside

    again = run_flush(isolated_env, receiver.url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 spooled alert(s) resent" in again.stdout
    assert len(receiver.titles()) == len(titles)  # both flushes have exited: nothing more can arrive


def test_three_flushes_at_once_deliver_each_alert_exactly_once(httpserver: HTTPServer, isolated_env: Path) -> None:
    receiver = Collector(httpserver)
    key = Webhook(receiver.url).key
    spool = Spool(isolated_env)
    spool.append([record(key, f"alert {i}") for i in range(300)])
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "runalert.cli", "flush", "--timeout", "30"],
            env=child_env(isolated_env, webhook_url=receiver.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert sorted(receiver.titles()) == sorted(f"alert {i}" for i in range(300))
    assert len(spool) == 0


RACER = r"""
import sys
from runalert import Alert
from runalert.alerting import Spool, SpooledAlert

spool = Spool(sys.argv[1], lock_timeout=60)
role = sys.argv[2]
sys.stdin.readline()  # all start together
if role == "append":
    for i in range(0, 400, 4):
        spool.append([SpooledAlert("k", "w", Alert(title=f"new {i + j}"), 0.0) for j in range(4)])
else:
    empty = 0
    while empty < 3:
        batch = spool.claim(["k"], max_records=7)
        empty = 0 if batch else empty + 1
        for r in batch:
            print(r.alert.title, flush=True)
"""


def test_processes_racing_to_claim_and_append_take_each_record_once(isolated_env: Path) -> None:
    spool = Spool(isolated_env)
    spool.append([record("k", f"old {i}") for i in range(600)])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(isolated_env), role],
            env=child_env(isolated_env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for role in ["claim", "claim", "claim", "append"]
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    taken: list[str] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        taken += out.splitlines()
    taken += [r.alert.title for r in spool.claim(["k"])]  # what the claimers left when they stopped
    assert len(taken) == len(set(taken))  # no record claimed twice
    assert sorted(taken) == sorted([f"old {i}" for i in range(600)] + [f"new {i}" for i in range(400)])  # none lost


CLAIMER = r"""
import sys
from runalert import Alerter
from runalert.channels import Webhook

alerter = Alerter([Webhook(sys.argv[1], timeout=120)])  # claims the spooled alerts of this webhook
print(alerter.stats["resent"], flush=True)
sys.stdin.read()  # until killed
"""


def test_alerts_claimed_by_a_process_killed_before_sending_them_are_not_lost(isolated_env: Path) -> None:
    from tests.hostile import HostileReceiver, hangs, ok

    with HostileReceiver([hangs()], default=ok()) as receiver:  # the first request hangs, the rest are answered
        url = receiver.url("/hook")
        spool = Spool(isolated_env)
        spool.append([record(Webhook(url).key, f"a{i}") for i in range(5)])
        child = subprocess.Popen(
            [sys.executable, "-c", CLAIMER, url],
            env=child_env(isolated_env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "5"
        assert receiver.wait_for_requests(1)  # it is sending the first one: the receiver holds it
        assert spool.pending() == []  # claimed: no longer in the spool
        os.kill(child.pid, signal.SIGKILL)
        child.wait()

        done = run_flush(isolated_env, url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "5 spooled alert(s) resent" in done.stdout
        after_the_kill = [json.loads(r.body)["title"] for r in receiver.received[1:]]
        assert sorted(after_the_kill) == [f"a{i}" for i in range(5)]  # each once, none lost
        assert spool.pending() == []
        assert list(spool.claims_path.iterdir()) == []  # the dead claim is gone, and so is flush's own


def test_a_claim_held_by_a_live_process_is_left_alone(isolated_env: Path) -> None:
    spool = Spool(isolated_env)
    spool.append([record("k", "held")])
    holder = Spool(isolated_env)
    assert [r.alert.title for r in holder.claim(["k"], hold=True)] == ["held"]
    assert Spool(isolated_env).claim(["k"]) == []  # alive (its lock is held): not taken back
    holder.release()
    assert Spool(isolated_env).claim(["k"]) == []  # released: delivered, nothing comes back
    assert list(spool.claims_path.iterdir()) == []


# -- permissions ---------------------------------------------------------------------------------------------


def test_home_is_0700_and_every_file_0600_whatever_the_umask(tmp_path: Path) -> None:
    home = tmp_path / "fresh" / "home"
    old = os.umask(0)
    try:
        spool = Spool(home)
        spool.append([record("k", "one")])
        with open(spool.path, "ab") as handle:
            handle.write(b"not json\n")
        spool.claim(["k"])  # writes the temporary file, the rename and the quarantine
        spool.append([record("k", "two")])
        spool.claim(["k"], hold=True)  # a claim file under claims/
        claim_files = list(spool.claims_path.iterdir())
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*home.iterdir(), *claim_files]}
        spool.release()
    finally:
        os.umask(old)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert len(claim_files) == 1
    assert modes == {
        "spool.jsonl": 0o600,
        "spool.lock": 0o600,
        "spool.quarantine": 0o600,
        "claims": 0o700,
        claim_files[0].name: 0o600,
    }


def test_a_spool_left_0644_by_an_older_version_becomes_0600(isolated_env: Path) -> None:
    isolated_env.mkdir()
    spool = Spool(isolated_env)
    spool.path.write_text("")
    spool.path.chmod(0o644)
    spool.append([record("k", "one")])
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600


def test_console_only_claims_leave_other_channels_alone(isolated_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(isolated_env)
    spool.append([record("webhook-x", "for the webhook"), record(Console().key, "for the console")])
    caplog.set_level(logging.INFO, logger="runalert")
    assert [r.alert.title for r in spool.claim([Console().key])] == ["for the console"]
    assert [r.alert.title for r in spool.pending()] == ["for the webhook"]
    assert not spool.quarantine_path.exists()
