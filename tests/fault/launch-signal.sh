#!/bin/sh
# Preemption through the launcher (issue 14): SIGTERM (then SIGINT) sent to tsr-launch itself,
# not to the ranks, must reach every rank: each completes the same step, the checkpoint of that
# step is written, the job ends as stopped, not lost (no restart) with 128 + the signal, and
# --resume finishes the run bitwise like an uninterrupted one (preempt.sh's check). Before, the
# signal ended the launcher alone and the ranks trained on; a signal to mpiexec reached the
# ranks' shells and hydra's proxy, and the job did not end cleanly.
# The signal is sent once the job's first checkpoint exists (epoch 1 of 20 done: a known point;
# the file appears by rename, whole), found by a bounded loop of short waits.
# Env: BUILD.
set -u
BUILD=${BUILD:-build}
. "$(dirname "$0")/../support/prereq.sh"
need_mpi
fmnist_workdir 2048 128
export TSR_DP_BALANCE=0 OMP_NUM_THREADS=1 # even batch shares: the resumed run splits alike
prog=$(cd "$BUILD/bin" && pwd)/tsr-train
args="--mode data --data $d --model dense:64,relu,dropout:0.2,dense:10 --batch 32 --epochs 20 --quiet --json"
steps=$((20 * 2048 / 32))
fail() { echo "FAIL: $*"; sed 's/^/  | /' "$d/err"; exit 1; }

timeout 300 mpiexec -n 2 "$prog" $args > "$d/straight.json" 2> "$d/err" || fail "the uninterrupted run"

restore_int=
# launch SIGNAL CODE: the job under tsr-launch, SIGNAL to the launcher after the first checkpoint
launch() {
    sig=$1 code=$2 ck="$d/$1.ck"
    # a background job starts with SIGINT ignored (and the launcher keeps it so): env restores it
    # not under timeout: it would pass the signal on to its whole process group, the launcher
    # twice (the bound on the wait is the loop after the signal)
    $restore_int "$BUILD/bin/tsr-launch" -n 2 -- "$prog" $args --checkpoint "$ck" > "$d/out" 2> "$d/err" &
    pid=$!
    for i in $(seq 1 1200); do
        [ -f "$ck" ] && break
        kill -0 $pid 2> /dev/null || break
        sleep 0.05
    done
    [ -f "$ck" ] || fail "$sig: no first checkpoint"
    kill -$sig $pid
    for i in $(seq 1 2400); do
        kill -0 $pid 2> /dev/null || break
        sleep 0.05
    done
    kill -0 $pid 2> /dev/null && { kill -KILL $pid; fail "$sig: the job did not end within 120 s"; }
    wait $pid
    rc=$?
    [ $rc = $code ] || fail "$sig: tsr-launch exit $rc, expected $code (128 + SIG$sig)"
    grep "^tsr-launch\|interrupted" "$d/err"
    grep -q "^tsr-launch: SIG$sig: forwarded to 2 of 2 ranks" "$d/err" || fail "$sig: not forwarded to both ranks"
    grep -q "^tsr-launch: stopped by SIG$sig, not lost: 2 of 2 ranks saved $ck and stopped: not restarted" \
        "$d/err" || fail "$sig: not stopped as requested on both ranks"
    ! grep -q "attempt 2" "$d/err" || fail "$sig: restarted"
    [ ! -s "$d/out" ] || fail "$sig: the interrupted run printed a result"
    at=$(sed -n "s/^tsr-train: interrupted by SIG$sig at step \([0-9]*\) (epoch [0-9]*): checkpoint .* written.*/\1/p" "$d/err")
    [ -n "$at" ] || fail "$sig: no interruption message"
    [ "$at" -gt 64 ] && [ "$at" -lt $steps ] || fail "$sig: stopped at step $at, not inside epochs 2..20"
    [ "$("$BUILD/tests/fault/fault_train" --verify "$ck")" = "step $at" ] || fail "$sig: the checkpoint is not at step $at"
    python3 -c 'import json,sys; m = json.load(open(sys.argv[1]))["config"]; assert m["checkpoint_step"] == int(sys.argv[2]) and m["interrupted_by"] == sys.argv[3], m' \
        "$ck.manifest.json" "$at" "SIG$sig" || fail "$sig: the manifest does not record the stop"
}

launch TERM 143
timeout 300 mpiexec -n 2 "$prog" $args --resume "$d/TERM.ck" > "$d/resumed.json" 2> "$d/err" || fail "the resumed run"
python3 - "$d" <<'PY' || exit 1
import json, sys
d = sys.argv[1]
a = json.load(open(d + "/straight.json"))
b = json.load(open(d + "/resumed.json"))
for k in ("final_loss", "test_loss", "test_accuracy", "epochs"):
    if a[k] != b[k]:
        sys.exit("FAIL: %s uninterrupted %r, resumed %r" % (k, a[k], b[k]))
print("SIGTERM to tsr-launch, resumed: final loss %r, test loss %r, as uninterrupted" % (a["final_loss"], a["test_loss"]))
PY
if env --default-signal=INT true 2> /dev/null; then
    restore_int="env --default-signal=INT"
    launch INT 130
else
    echo "SIGINT not tried: this env has no --default-signal (GNU coreutils 8.31)"
fi
echo "ok"
