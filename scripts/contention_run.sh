#!/usr/bin/env bash
# One whole-suite run under CPU contention on a fresh clone of this repository's HEAD (issue 17).
#
# usage: scripts/contention_run.sh RUNDIR [pytest args...]
#
# RUNDIR (new) gets: repo/ (the clone), tmp/ (TMPDIR of the run: every temp dir, PostgreSQL cluster and server
# database of the run is under it), meta (commit, start/end, load, rc, wall), load (load average every 30 s),
# log (pytest's output with every failure's traceback), junit.xml. pytest gets `make test`'s arguments first
# (`make pytest-args`: PYTEST_WORKERS worker processes, 2 by default; PYTEST_WORKERS=0 runs serially), then the
# ones given here. One busy loop per core (BUSY=n to change) runs at normal priority for the length of the run;
# the cap is 2 h (CAP=seconds). At the end (or on SIGINT/SIGTERM) it kills the loops and any process the run left
# behind under RUNDIR (servers, PostgreSQL clusters).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
run=$1
shift
mkdir "$run" || exit 2
run=$(cd "$run" && pwd)
python=${PYTHON:-$here/.venv/bin/python}
git clone -q "$here" "$run/repo" || exit 2
mkdir "$run/tmp"
chmod 755 "$run" "$run/tmp"  # the PostgreSQL cluster runs as the postgres user when we are root

busy=()
cleanup() {
    kill "${busy[@]}" "$sampler" "$pytest" 2>/dev/null
    # what the run left: processes whose command line names RUNDIR (the tests' reaper among them), and those
    # whose environment does (a server started by a test names only its port: its TMPDIR is the run's; killing
    # pytest's reaper here would otherwise leave it running)
    for pid in $(pgrep -f -- "$run/") $(grep -lsF "TMPDIR=$run/tmp" /proc/[0-9]*/environ | cut -d/ -f3); do
        [ "$pid" != $$ ] && kill "$pid" 2>/dev/null
    done
    for pidfile in "$run"/tmp/runalert-pg-*/data/postmaster.pid; do  # a cluster whose fixture never stopped it
        [ -f "$pidfile" ] && kill -QUIT "$(head -n 1 "$pidfile")" 2>/dev/null
    done
}
sampler=""
pytest=""
trap 'echo "end: killed $(date -u +%FT%TZ)" >>"$run/meta"; cleanup; exit 130' INT TERM
for _ in $(seq "${BUSY:-$(nproc)}"); do
    python3 -c 'while True: pass' &
    busy+=($!)
done
(while sleep 30; do echo "$(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)"; done) >"$run/load" &
sampler=$!
{
    echo "commit: $(git -C "$run/repo" rev-parse HEAD)"
    echo "start: $(date -u +%FT%TZ)"
    echo "load-start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "busy-loops: ${busy[*]}"
    echo "args: $*"
} >"$run/meta"
# pytest runs with the arguments `make test` gives it (-n 2 --dist worksteal; PYTEST_WORKERS=0 for a serial run)
read -r -a make_args <<<"$(make -s -C "$run/repo" pytest-args)" || exit 2
echo "make-test-args: ${make_args[*]}" >>"$run/meta"
start=$(date +%s)
(cd "$run/repo" && CI=true TMPDIR="$run/tmp" PYTHONPATH="$run/repo/src" exec timeout "${CAP:-7200}" \
    "$python" -m pytest "${make_args[@]}" -p no:cacheprovider -rfE --durations=30 --junitxml="$run/junit.xml" "$@") \
    >"$run/log" 2>&1 &
pytest=$!
wait "$pytest"
rc=$?
end=$(date +%s)
{
    echo "end: $(date -u +%FT%TZ)"
    echo "load-end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "load-max: $(awk '$2 > m {m = $2} END {print m}' "$run/load")"
    echo "rc: $rc"
    echo "wall: $((end - start)) s"
    # pytest's own line, and the failures from junit.xml: an exit hook left by a test printed after pytest's line,
    # and one run's status was 0 with 6 failures
    echo "summary: $(grep -E '(passed|failed|error).* in [0-9.]+s' "$run/log" | tail -n 1)"
    echo "failed: $(grep -oE '<testcase [^>]*name="[^"]*"' "$run/junit.xml" 2>/dev/null | wc -l) run," \
        "$(grep -cE '<(failure|error) ' "$run/junit.xml" 2>/dev/null) failed or errored"
} >>"$run/meta"
cleanup
exit "$rc"
