"""The spool's records and files, exactly (runalert.alerting.spool): the bytes of a record, the limits of a line and
of a claim, what a claim writes and what it leaves alone, the claim files of live, dead and forked processes, and
what is logged. tests/test_spool.py has the spool under damage and real processes racing.

Every file is real, on disk under the test's RUNALERT_HOME; a process that "died" leaves what a dead process
leaves: a claim file nobody holds a lock on.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from runalert import Alert, AlertLevel
from runalert.alerting import Spool, SpooledAlert
from runalert.alerting.spool import MAX_RECORD_BYTES

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

TEMPLATE = Alert(title="template", text="").to_dict()


def line(key: str, title: str, *, size: int | None = None, end: bytes = b"\n", **fields: Any) -> bytes:
    """A spool record as the spool writes it (compact JSON), ``size`` bytes long (``end`` included) if given."""
    alert = dict(TEMPLATE, title=title)
    record = {"channel": key, "channel_name": "webhook", "spooled_at": 1.0, "alert": alert, **fields}
    data = json.dumps(record, separators=(",", ":")).encode() + end
    if size is not None:
        alert["text"] = "x" * (size - len(data))
        data = json.dumps(record, separators=(",", ":")).encode() + end
        assert len(data) == size
    return data


def titles(records: list[SpooledAlert]) -> list[str]:
    return [r.alert.title for r in records]


def write_spool(home: Path, data: bytes) -> Spool:
    home.mkdir(mode=0o700, exist_ok=True)
    spool = Spool(home)
    spool.path.write_bytes(data)
    return spool


def dead_claim(spool: Spool, name: str, data: bytes) -> Path:
    """The claim file a process that died leaves: its lines, and no lock on it."""
    spool.claims_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = spool.claims_path / name
    path.write_bytes(data)
    return path


def runalert_messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "runalert" and r.levelno == level]


def quarantine_message(spool: Spool, count: int) -> str:
    return (
        f"runalert: {count} unreadable line(s) in {spool.path} (left by a process killed while writing, or edited "
        f"by hand) were moved to {spool.quarantine_path}"
    )


# -- the record ----------------------------------------------------------------------------------------------


def test_a_record_is_one_line_of_compact_json_and_reads_back_as_it_was(isolated_env: Path) -> None:
    alert = Alert(title="Loss is NaN", text="at step 7", level=AlertLevel.ERROR, run="bert", fields={"step": "7"})
    first = SpooledAlert("webhook-1", "my hook", alert, 1234.5)
    second = SpooledAlert("webhook-2", "other", Alert(title="second"), 99.0)
    spool = Spool(isolated_env)
    spool.append([first])
    spool.append([second])

    expected = [
        {"channel": item.channel_key, "channel_name": item.channel_name, "spooled_at": item.spooled_at}
        | {"alert": item.alert.to_dict()}
        for item in (first, second)
    ]
    # The format other versions read (tests/test_spool.py reads the previous one): one record a line, in order.
    assert spool.path.read_bytes() == b"".join(
        json.dumps(record, separators=(",", ":")).encode() + b"\n" for record in expected
    )
    assert len(spool) == 2
    read = spool.pending()
    assert [(r.channel_key, r.channel_name, r.spooled_at) for r in read] == [
        ("webhook-1", "my hook", 1234.5),
        ("webhook-2", "other", 99.0),
    ]
    assert [r.alert.to_dict() for r in read] == [first.alert.to_dict(), second.alert.to_dict()]


def test_a_record_without_its_channel_name_or_time_still_reads(isolated_env: Path) -> None:
    record = {"channel": "webhook-1", "alert": dict(TEMPLATE, title="bare")}
    before = time.time()
    spool = write_spool(isolated_env, json.dumps(record).encode() + b"\n")
    (read,) = spool.claim(["webhook-1"])
    after = time.time()
    assert (read.channel_key, read.channel_name, read.alert.title) == ("webhook-1", "webhook-1", "bare")
    assert before <= read.spooled_at <= after  # unknown: taken as now
    assert not spool.quarantine_path.exists()


def test_records_of_the_wrong_shape_are_quarantined_and_counted_in_one_message(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = [
        json.dumps({"channel": 5, "alert": TEMPLATE}).encode() + b"\n",  # a channel that is not a string
        json.dumps({"channel": "k", "alert": "an alert"}).encode() + b"\n",  # an alert that is not an object
    ]
    spool = write_spool(isolated_env, line("k", "good") + b"".join(wrong))
    assert titles(spool.claim(["k"])) == ["good"]
    assert spool.quarantine_path.read_bytes() == b"".join(wrong)
    assert runalert_messages(caplog, logging.WARNING) == [quarantine_message(spool, 2)]


# -- the length of a line ------------------------------------------------------------------------------------

LIMITS = {
    # name: (the line, whether it is claimed)
    "MAX_RECORD_BYTES with its newline": (line("k", "mid", size=MAX_RECORD_BYTES), True),
    "MAX_RECORD_BYTES and its newline": (line("k", "mid", size=MAX_RECORD_BYTES + 1), True),
    "one byte more": (line("k", "mid", size=MAX_RECORD_BYTES + 2), False),
}


@pytest.mark.parametrize("case", list(LIMITS), ids=list(LIMITS))
def test_a_line_of_up_to_max_record_bytes_is_read_and_a_longer_one_quarantined(
    isolated_env: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    middle, claimed = LIMITS[case]
    spool = write_spool(isolated_env, line("k", "before") + middle + line("k", "after"))
    got = spool.claim(["k"])
    if claimed:
        assert titles(got) == ["before", "mid", "after"]
        assert not spool.quarantine_path.exists()
    else:
        assert titles(got) == ["before", "after"]
        assert spool.quarantine_path.read_bytes() == middle  # moved whole, byte for byte
        assert runalert_messages(caplog, logging.WARNING) == [quarantine_message(spool, 1)]


def test_a_last_line_without_its_newline_is_read_up_to_max_record_bytes(isolated_env: Path) -> None:
    last = line("k", "last", size=MAX_RECORD_BYTES, end=b"")
    spool = write_spool(isolated_env, line("k", "first") + last)
    assert titles(spool.pending()) == ["first", "last"]
    assert titles(spool.claim(["k"])) == ["first", "last"]
    assert not spool.quarantine_path.exists()


def test_an_over_long_last_line_without_its_newline_is_quarantined_with_one(isolated_env: Path) -> None:
    last = line("k", "last", size=MAX_RECORD_BYTES + 1, end=b"")
    spool = write_spool(isolated_env, line("k", "first") + last)
    assert titles(spool.pending()) == ["first"]  # a read skips it
    assert titles(spool.claim(["k"])) == ["first"]
    assert spool.quarantine_path.read_bytes() == last + b"\n"  # so the next line quarantined starts on its own
    spool.append([SpooledAlert("k", "w", Alert(title="later"), 1.0)])
    assert titles(spool.claim(["k"])) == ["later"]


def test_a_torn_last_line_is_quarantined_with_a_newline(isolated_env: Path) -> None:
    torn = line("k", "torn")[:40]  # what a writer killed mid-append leaves at the end, when nothing came after
    spool = write_spool(isolated_env, line("k", "whole") + torn)
    assert titles(spool.claim(["k"])) == ["whole"]
    assert spool.quarantine_path.read_bytes() == torn + b"\n"  # so the next line quarantined starts on its own


def test_append_writes_an_oversized_record_to_the_quarantine_and_says_so_once(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def item(title: str, size: int | None = None) -> SpooledAlert:
        data = json.loads(line("k", title, size=size))
        return SpooledAlert("k", "webhook", Alert.from_dict(data["alert"]), 1.0)

    spool = Spool(isolated_env)
    spool.append([item("small"), item("huge", MAX_RECORD_BYTES + 1), item("just fits", MAX_RECORD_BYTES)])
    assert spool.path.stat().st_size == len(line("k", "small")) + MAX_RECORD_BYTES  # the one that fits is kept
    assert spool.quarantine_path.read_bytes() == line("k", "huge", size=MAX_RECORD_BYTES + 1)
    spool.append([item("huge again", MAX_RECORD_BYTES + 5)])
    warned = (
        f"runalert: 1 alert(s) over {MAX_RECORD_BYTES} bytes cannot be resent; they were written to "
        f"{spool.quarantine_path}"
    )
    assert runalert_messages(caplog, logging.WARNING) == [warned]  # once
    assert titles(spool.claim(["k"])) == ["small", "just fits"]


def test_appending_nothing_creates_nothing(isolated_env: Path) -> None:
    spool = Spool(isolated_env)
    spool.append([])
    assert not isolated_env.exists()


# -- a claim -------------------------------------------------------------------------------------------------


def test_a_claim_takes_at_most_max_records(isolated_env: Path) -> None:
    spool = write_spool(isolated_env, b"".join(line("k", f"a{i}") for i in range(10_001)))
    assert len(spool.claim(["k"])) == 10_000  # the default
    assert titles(spool.claim(["k"])) == ["a10000"]
    spool.path.write_bytes(b"".join(line("k", f"b{i:02}") for i in range(25)))
    assert [len(spool.claim(["k"], max_records=10)) for _ in range(4)] == [10, 10, 5, 0]


@pytest.mark.parametrize(("budget", "taken"), [(2, 2), (1.99, 1), (0, 1)])
def test_a_claim_takes_about_max_bytes_and_at_least_one_record(isolated_env: Path, budget: float, taken: int) -> None:
    records = [line("k", f"a{i}") for i in range(5)]  # all of the same length
    spool = write_spool(isolated_env, b"".join(records))
    got = spool.claim(["k"], max_bytes=int(budget * len(records[0])))
    assert titles(got) == [f"a{i}" for i in range(taken)]
    assert titles(spool.pending()) == [f"a{i}" for i in range(taken, 5)]


def test_a_claim_without_keys_takes_every_channel(isolated_env: Path) -> None:
    spool = write_spool(isolated_env, line("a", "for a") + line("b", "for b"))
    assert titles(spool.claim()) == ["for a", "for b"]
    assert spool.pending() == []


def test_a_held_claim_file_holds_the_claimed_lines_whole(isolated_env: Path) -> None:
    # The last line has no newline (as a killed writer or a hand edit leaves it); both files get whole lines.
    spool = write_spool(isolated_env, line("k", "a") + line("other", "b") + line("k", "c", end=b""))
    assert titles(spool.claim(["k"], hold=True)) == ["a", "c"]
    (claim_file,) = spool.claims_path.iterdir()
    assert claim_file.read_bytes() == line("k", "a") + line("k", "c")
    assert spool.path.read_bytes() == line("other", "b")
    spool.release()
    assert list(spool.claims_path.iterdir()) == []


def test_the_lines_a_claim_keeps_stay_whole(isolated_env: Path) -> None:
    spool = write_spool(isolated_env, line("k", "a") + line("other", "b", end=b""))
    dead_claim(spool, "~dead.jsonl", line("other", "from the dead", end=b""))  # read first, without its newline
    assert titles(spool.claim(["k"])) == ["a"]
    assert spool.path.read_bytes() == line("other", "from the dead") + line("other", "b")
    assert titles(spool.pending()) == ["from the dead", "b"]


def test_a_plain_claim_holds_nothing(isolated_env: Path) -> None:
    spool = write_spool(isolated_env, line("k", "a"))
    assert titles(spool.claim(["k"])) == ["a"]
    assert not spool.claims_path.exists()  # no claim file: nothing to release


def test_a_claim_that_finds_nothing_to_take_writes_nothing(isolated_env: Path) -> None:
    spool = write_spool(isolated_env, line("other", "b") + line("other", "c"))
    before = spool.path.stat()
    assert spool.claim(["k"]) == []
    after = spool.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert not (isolated_env / "spool.jsonl.tmp").exists()
    # With nothing at all to read, it does not create the spool either.
    holder = Spool(isolated_env)
    assert titles(holder.claim(hold=True)) == ["b", "c"]  # a live claim: the claims folder is not empty
    spool.path.unlink()
    assert spool.claim(["k"]) == []
    assert not spool.path.exists()
    holder.release()


def test_an_over_long_line_alone_is_still_moved_to_the_quarantine(isolated_env: Path) -> None:
    long_line = b"y" * (MAX_RECORD_BYTES + 10) + b"\n"
    spool = write_spool(isolated_env, long_line + line("other", "kept"))
    assert spool.claim(["k"]) == []  # nothing to claim, but a line to move
    assert spool.quarantine_path.read_bytes() == long_line
    assert spool.path.read_bytes() == line("other", "kept")


# -- claim files of other processes --------------------------------------------------------------------------


def test_the_claim_of_a_dead_process_is_taken_back_first_even_without_a_spool(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runalert")
    isolated_env.mkdir(mode=0o700)
    spool = Spool(isolated_env)
    left = dead_claim(spool, "~dead.jsonl", line("k", "d1") + line("k", "d2"))
    assert not spool.path.exists()
    assert titles(spool.claim(["k"])) == ["d1", "d2"]
    assert not left.exists()
    assert runalert_messages(caplog, logging.INFO) == [
        "runalert: took back the claims of 1 process(es) that ended before sending them"
    ]
    dead_claim(spool, "~dead.jsonl", line("k", "dead"))
    spool.append([SpooledAlert("k", "w", Alert(title="spooled"), 1.0)])
    assert titles(spool.claim(["k"])) == ["dead", "spooled"]  # the older ones first


def test_live_unopenable_and_temporary_claim_files_are_passed_over(isolated_env: Path) -> None:
    spool = write_spool(isolated_env, line("k", "live"))
    holder = Spool(isolated_env)
    assert titles(holder.claim(["k"], hold=True)) == ["live"]  # a live claim, named <host>-<pid>-<random>.jsonl
    (live,) = spool.claims_path.iterdir()
    gone = spool.claims_path / "0-gone.jsonl"
    gone.symlink_to(spool.claims_path / "released meanwhile")  # listed, then gone before it could be opened
    temporary = dead_claim(spool, "1-partial.jsonl.tmp", line("k", "temporary"))
    dead_claim(spool, "~dead.jsonl", line("k", "dead"))
    assert sorted(spool.claims_path.iterdir()) == [gone, temporary, live, spool.claims_path / "~dead.jsonl"]

    assert titles(spool.claim(["k"])) == ["dead"]  # each of the others was passed over, not a reason to stop
    assert sorted(spool.claims_path.iterdir()) == [gone, temporary, live]
    holder.release()
    assert not live.exists()


def test_one_process_keeps_one_claim_file_however_often_it_claims(isolated_env: Path) -> None:
    spool = write_spool(isolated_env, line("k", "a") + line("k", "b"))
    holder = Spool(isolated_env)
    assert titles(holder.claim(["k"], max_records=1, hold=True)) == ["a"]
    assert titles(holder.claim(["k"], max_records=1, hold=True)) == ["b"]
    (claim_file,) = spool.claims_path.iterdir()
    assert claim_file.read_bytes() == line("k", "a") + line("k", "b")
    assert spool.claim(["k"]) == []  # held (alive): not taken back
    holder.release()
    holder.release()  # safe twice
    assert list(spool.claims_path.iterdir()) == []


def test_release_after_the_claim_file_was_removed_by_hand(isolated_env: Path) -> None:
    spool = write_spool(isolated_env, line("k", "a"))
    assert titles(spool.claim(["k"], hold=True)) == ["a"]
    for path in spool.claims_path.iterdir():
        path.unlink()
    spool.release()  # nothing to remove: no error
    assert spool.claim(["k"]) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_claim_file_of_its_own_and_never_touches_its_parents(isolated_env: Path) -> None:
    spool = write_spool(isolated_env, line("k", "parent's"))
    assert titles(spool.claim(["k"], hold=True)) == ["parent's"]
    (parents,) = spool.claims_path.iterdir()

    def in_child(work: str) -> int:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                if work == "claim":  # claims with the Spool it inherited (holding the parent's claim), then dies
                    spool.append([SpooledAlert("k", "w", Alert(title="child's"), 1.0)])
                    code = 0 if titles(spool.claim(["k"], hold=True)) == ["child's"] else 3
                else:  # releases the inherited claim: drops its copy only
                    spool.release()
            except BaseException:  # the parent must hear of it
                code = 4
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    assert in_child("claim") == 0
    assert in_child("release") == 0
    assert parents.exists()
    assert parents.read_bytes() == line("k", "parent's")  # the child wrote to a file of its own
    # The child died holding "child's": taken back; the parent's claim is alive: left alone.
    assert titles(Spool(isolated_env).claim(["k"])) == ["child's"]
    assert list(spool.claims_path.iterdir()) == [parents]
    spool.release()
    assert list(spool.claims_path.iterdir()) == []


def test_the_lock_is_waited_for_five_seconds_by_default(isolated_env: Path) -> None:
    assert Spool(isolated_env).lock_timeout == 5.0


# -- what a killed claim leaves, what each spool logs, a disk that takes part of a line --------------------------


def spooled(title: str, size: int | None = None) -> SpooledAlert:
    """The record :func:`line` writes for ``title`` (``size`` bytes with its newline), as ``append`` takes it."""
    data = json.loads(line("k", title, size=size))
    return SpooledAlert("k", "webhook", Alert.from_dict(data["alert"]), 1.0)


def oversized_message(spool: Spool, count: int) -> str:
    return (
        f"runalert: {count} alert(s) over {MAX_RECORD_BYTES} bytes cannot be resent; they were written to "
        f"{spool.quarantine_path}"
    )


def test_the_temporary_file_of_a_claim_killed_before_its_rename_is_reused_and_gone_after_the_next(
    isolated_env: Path,
) -> None:
    # A claim writes what it keeps to spool.jsonl.tmp and renames it over the spool; a process killed in between
    # leaves the spool as it was and that file beside it (0644 if an older version wrote it: alert text).
    spool = write_spool(isolated_env, line("k", "a") + line("other", "b"))
    leftover = isolated_env / "spool.jsonl.tmp"
    leftover.write_bytes(line("other", "stale") * 3)
    leftover.chmod(0o644)
    assert titles(spool.claim(["k"])) == ["a"]
    assert spool.path.read_bytes() == line("other", "b")  # the leftover is not read: it was rewritten
    assert sorted(path.name for path in isolated_env.iterdir()) == ["spool.jsonl", "spool.lock"]  # renamed away
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600


def test_oversized_records_appended_together_are_quarantined_each_whole_on_a_line_of_its_own(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(isolated_env)
    spool.append([spooled("huge 1", MAX_RECORD_BYTES + 1), spooled("small"), spooled("huge 2", MAX_RECORD_BYTES + 3)])
    assert spool.quarantine_path.read_bytes() == (
        line("k", "huge 1", size=MAX_RECORD_BYTES + 1) + line("k", "huge 2", size=MAX_RECORD_BYTES + 3)
    )
    assert runalert_messages(caplog, logging.WARNING) == [oversized_message(spool, 2)]
    assert titles(spool.claim(["k"])) == ["small"]


def test_each_spool_says_once_what_it_could_not_keep(isolated_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Two homes in one process (two RUNALERT_HOME, or a tool reading another's spool): each is named once.
    spools = [write_spool(home, line("k", "good") + b"not json\n") for home in (isolated_env, isolated_env / "other")]
    for _ in range(2):
        for spool in spools:
            spool.append([spooled("huge", MAX_RECORD_BYTES + 1)])
            spool.path.write_bytes(line("k", "good") + b"not json\n")
            assert titles(spool.claim(["k"])) == ["good"]
    assert runalert_messages(caplog, logging.WARNING) == [
        message for spool in spools for message in (oversized_message(spool, 1), quarantine_message(spool, 1))
    ]
    for spool in spools:
        assert spool.quarantine_path.read_bytes() == (line("k", "huge", size=MAX_RECORD_BYTES + 1) + b"not json\n") * 2


def test_every_unreadable_line_of_a_claim_is_counted_over_long_ones_included(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = [b"not json\n", b"y" * (MAX_RECORD_BYTES + 10) + b"\n", b"z" * (2 * MAX_RECORD_BYTES + 5) + b"\n"]
    spool = write_spool(isolated_env, bad[0] + line("k", "a") + bad[1] + line("k", "b") + bad[2] + line("k", "c"))
    assert titles(spool.claim(["k"])) == ["a", "b", "c"]
    assert spool.quarantine_path.read_bytes() == b"".join(bad)  # each whole, the longest read in three pieces
    assert runalert_messages(caplog, logging.WARNING) == [quarantine_message(spool, 3)]


@pytest.mark.skipif(not hasattr(os, "fork") or resource is None, reason="needs os.fork and resource")
def test_an_append_the_file_takes_only_part_of_raises_and_the_part_is_quarantined(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A full disk or a file size limit: write() takes part of a line, then refuses. The caller must hear of it
    # (it then reports the alert lost); the part left is a torn line, ended by the next append.
    spool = Spool(isolated_env)
    spool.append([spooled("before")])
    size = spool.path.stat().st_size
    pid = os.fork()
    if pid == 0:  # the limit (RLIMIT_FSIZE) in a child only, so that this process keeps writing
        code = 0
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
            resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            try:
                spool.append([spooled("cut", 4096)])
                code = 3  # returned as if it had been written
            except OSError as error:
                code = 0 if error.errno == errno.EFBIG else 4
        except BaseException:  # the parent must hear of it
            code = 5
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert spool.path.read_bytes() == line("k", "before") + line("k", "cut", size=4096)[:1000]  # the part it took
    spool.append([spooled("after")])
    assert titles(spool.claim(["k"])) == ["before", "after"]
    assert spool.quarantine_path.read_bytes() == line("k", "cut", size=4096)[:1000] + b"\n"
    assert runalert_messages(caplog, logging.WARNING) == [quarantine_message(spool, 1)]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_folder_fifo_or_link_in_the_claims_folder_is_passed_over_and_every_record_still_sent(
    isolated_env: Path,
) -> None:
    # Before: a folder there made every claim raise IsADirectoryError (nothing was sent until it was removed by
    # hand), and a FIFO blocked the claim, holding the spool's lock, until something wrote to it.
    spool = write_spool(isolated_env, line("k", "spooled"))
    spool.claims_path.mkdir(mode=0o700)
    folder = spool.claims_path / "~folder.jsonl"
    folder.mkdir()
    fifo = spool.claims_path / "~fifo.jsonl"
    os.mkfifo(fifo)
    elsewhere = isolated_env / "not-a-claim.jsonl"
    elsewhere.write_bytes(line("k", "elsewhere"))
    link = spool.claims_path / "~link.jsonl"
    link.symlink_to(elsewhere)
    dead_claim(spool, "~dead.jsonl", line("k", "dead"))

    assert titles(spool.claim(["k"])) == ["dead", "spooled"]
    assert sorted(spool.claims_path.iterdir()) == [fifo, folder, link]  # left as they were
    assert elsewhere.read_bytes() == line("k", "elsewhere")  # a link is not followed, its target not taken
    spool.append([SpooledAlert("k", "w", Alert(title="later"), 1.0)])
    assert titles(spool.claim(["k"])) == ["later"]
