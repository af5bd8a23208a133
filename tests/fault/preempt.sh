#!/bin/sh
# Preemption (issue 14, finding 10): SIGTERM ends a training run with a checkpoint of the step
# it was in, and --resume from it finishes the run bitwise like an uninterrupted one.
# The run raises SIGTERM at itself before optimizer step 150 of 192 (epoch 3 of 3; rank 0
# only under MPI: the other rank learns it through the step's agreement) with
# TSR_FAULT_SIGTERM_AT_STEP, a deterministic point: that step is completed everywhere, saved
# (mid-epoch: the epoch's position is in the checkpoint's metadata), the message names the
# step, and the exit code is 143 (128 + SIGTERM). The resumed run's JSON figures (final loss,
# test loss and accuracy, 17 digits) must equal the uninterrupted run's: single process, data
# parallel, ZeRO and pipeline on 2 ranks, hybrid on 4 (2 replicas of 2 stages); gossip on 3
# stops at that step (its resume is not bitwise by design), and so does async (below). A second signal during the save ends the process at once:
# no message, the previous checkpoint left as it was.
# Env: BUILD.
set -u
BUILD=${BUILD:-build}
. "$(dirname "$0")/../support/prereq.sh"
need_mpi
fmnist_workdir 2048 128
export TSR_DP_BALANCE=0 # even batch shares: the resumed run splits its batches alike
model="dense:64,relu,dropout:0.2,dense:10"
fail() { echo "FAIL: $*"; sed 's/^/  | /' "$d/err"; exit 1; }
verify() { "$BUILD/tests/fault/fault_train" --verify "$1"; }

# check NAME LAUNCHER MODE-OPTIONS: the uninterrupted run, the interrupted one, the resumed one
check() {
    name=$1 launch=$2 opts=$3
    $launch "$BUILD/bin/tsr-train" $opts --data "$d" --model "$model" --batch 32 --quiet --json --epochs 3 \
        > "$d/$name-straight.json" 2> "$d/err" || fail "$name: the uninterrupted run"
    TSR_FAULT_SIGTERM_AT_STEP=150 $launch "$BUILD/bin/tsr-train" $opts --data "$d" --model "$model" \
        --batch 32 --quiet --json --epochs 3 --checkpoint "$d/$name-ck" > "$d/out" 2> "$d/err"
    rc=$?
    [ $rc = 143 ] || fail "$name: the interrupted run exited $rc, expected 143 (128 + SIGTERM)"
    grep -q "tsr-train: interrupted by SIGTERM at step 151 (epoch 3): checkpoint $d/$name-ck written; resume with --resume $d/$name-ck" "$d/err" ||
        fail "$name: no interruption message naming the step and the checkpoint"
    [ ! -s "$d/out" ] || fail "$name: the interrupted run printed a result"
    at=$(verify "$d/$name-ck")
    [ "$at" = "step 151" ] || fail "$name: the checkpoint is at '$at', not step 151"
    python3 -c 'import json,sys; m = json.load(open(sys.argv[1]))["config"]; assert m["checkpoint_step"] == 151 and m["interrupted_by"] == "SIGTERM", m' \
        "$d/$name-ck.manifest.json" || fail "$name: the manifest lacks checkpoint_step 151"
    ls "$d" | grep -q "\.tmp\." && fail "$name: temp files left: $(ls "$d" | grep '\.tmp\.')"
    $launch "$BUILD/bin/tsr-train" $opts --data "$d" --model "$model" --batch 32 --quiet --json --epochs 3 \
        --resume "$d/$name-ck" > "$d/$name-resumed.json" 2> "$d/err" || fail "$name: the resumed run"
    python3 - "$d" "$name" <<'PY' || exit 1
import json, sys
d, name = sys.argv[1], sys.argv[2]
a = json.load(open("%s/%s-straight.json" % (d, name)))
b = json.load(open("%s/%s-resumed.json" % (d, name)))
for k in ("final_loss", "test_loss", "test_accuracy", "epochs"):
    if a[k] != b[k]:
        sys.exit("FAIL: %s: %s uninterrupted %r, resumed %r" % (name, k, a[k], b[k]))
print("%s: interrupted at step 151, resumed: final loss %r, test loss %r, as uninterrupted"
      % (name, a["final_loss"], a["test_loss"]))
PY
}

check single "" ""
check data "mpiexec -n 2" "--mode data"
check zero "mpiexec -n 2" "--mode data --zero"
check pipeline "mpiexec -n 2" "--mode pipeline"
check hybrid "mpiexec -n 4" "--mode hybrid --replicas 2"

# gossip stops every rank at the same step too (one allreduce of the flag per step); its
# checkpoint is the replicas' average, so its resume is not bitwise (README) and not compared
TSR_FAULT_SIGTERM_AT_STEP=150 mpiexec -n 3 "$BUILD/bin/tsr-train" --mode gossip --data "$d" \
    --model "$model" --batch 32 --quiet --epochs 3 --checkpoint "$d/gossip-ck" > /dev/null 2> "$d/err"
rc=$?
[ $rc = 143 ] && grep -q "interrupted by SIGTERM at step 151 (epoch 3)" "$d/err" || fail "gossip: exit $rc"
[ "$(verify "$d/gossip-ck")" = "step 151" ] || fail "gossip: the checkpoint is not at step 151"
echo "gossip (3 ranks): interrupted at step 151"

# async (3 ranks: a server, 2 workers) has no step every rank shares: the request travels in
# the messages, the servers answer every later pull "interrupted" and every rank joins the
# save. The server's own signal stops it at a known point (its step 150 counted: 151); a
# worker's (rank 2) reaches the server at a step the scheduling decides. The workers may have
# pushed different numbers of steps, so the resume is not bitwise (README): it must finish the
# run's 192 steps with a test accuracy within 0.05 of the uninterrupted run's.
check_async() {
    name=$1 at=$2 want=$3
    TSR_FAULT_SIGTERM_AT_STEP=$at mpiexec -n 3 "$BUILD/bin/tsr-train" --mode async --servers 1 \
        --data "$d" --model "$model" --batch 32 --quiet --epochs 3 --checkpoint "$d/$name-ck" \
        > /dev/null 2> "$d/err"
    rc=$?
    [ $rc = 143 ] || fail "$name: the interrupted run exited $rc, expected 143"
    grep -q "tsr-train: interrupted by SIGTERM at step $want" "$d/err" ||
        fail "$name: no interruption message at step $want"
    at=$(verify "$d/$name-ck")
    case "$at" in "step "$want) ;; *) fail "$name: the checkpoint is at '$at', not step $want" ;; esac
    ls "$d" | grep -q "\.tmp\." && fail "$name: temp files left: $(ls "$d" | grep '\.tmp\.')"
    mpiexec -n 3 "$BUILD/bin/tsr-train" --mode async --servers 1 --data "$d" --model "$model" \
        --batch 32 --quiet --json --epochs 3 --resume "$d/$name-ck" --checkpoint "$d/$name-end" \
        > "$d/$name-resumed.json" 2> "$d/err" || fail "$name: the resumed run"
    [ "$(verify "$d/$name-end")" = "step 192" ] || fail "$name: the resumed run did not end at step 192"
    python3 - "$d" "$name" <<'PY' || exit 1
import json, sys
d, name = sys.argv[1], sys.argv[2]
a = json.load(open("%s/async-straight.json" % d))
b = json.load(open("%s/%s-resumed.json" % (d, name)))
if abs(a["test_accuracy"] - b["test_accuracy"]) > 0.05:
    sys.exit("FAIL: %s: test accuracy %r uninterrupted, %r resumed" % (name, a["test_accuracy"], b["test_accuracy"]))
print("%s: interrupted, resumed to step 192: test accuracy %r (uninterrupted %r)"
      % (name, b["test_accuracy"], a["test_accuracy"]))
PY
}
mpiexec -n 3 "$BUILD/bin/tsr-train" --mode async --servers 1 --data "$d" --model "$model" --batch 32 \
    --quiet --json --epochs 3 > "$d/async-straight.json" 2> "$d/err" || fail "async: the uninterrupted run"
check_async async-server 150 151
check_async async-worker 150@2 "[0-9]*"

# a second SIGTERM as the save begins: the default action, at once; the epoch-1 checkpoint
# (left by a run killed after its first save) stays as it was
TSR_FAULT_KILL_AFTER_SAVE=1 "$BUILD/bin/tsr-train" --data "$d" --model "$model" --batch 32 --quiet \
    --epochs 3 --checkpoint "$d/ck2" > /dev/null 2>&1
[ "$(verify "$d/ck2")" = "step 64" ] || fail "no epoch-1 checkpoint to start from"
cp "$d/ck2" "$d/ck2.before"
TSR_FAULT_SIGTERM_AT_STEP=100 TSR_FAULT_SIGTERM_AGAIN=1 "$BUILD/bin/tsr-train" --data "$d" \
    --model "$model" --batch 32 --quiet --epochs 3 --resume "$d/ck2" --checkpoint "$d/ck2" \
    > /dev/null 2> "$d/err"
rc=$?
[ $rc = 143 ] || fail "twice: exit $rc, expected 143 (killed by the second SIGTERM)"
! grep -q "interrupted by" "$d/err" || fail "twice: the second signal did not end the process at once"
cmp -s "$d/ck2" "$d/ck2.before" || fail "twice: the previous checkpoint changed"
echo "a second SIGTERM ends the process at once, the previous checkpoint intact"
