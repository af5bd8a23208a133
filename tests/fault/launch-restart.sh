#!/bin/sh
# Automatic restart (tsr-launch): rank 1 of a 2-rank data-parallel job dies by SIGKILL right
# after its first checkpoint (TSR_FAULT_KILL_AFTER_SAVE=1@1: a known point of the run, not a
# moment on the clock); rank 0 stops by the library's deadline (TSR_COMM_TIMEOUT=3); the
# launcher restarts the job with the one rank that remains, resuming from the checkpoint. The
# job must finish with the same number of optimizer steps as an uninterrupted 2-rank run and a
# test accuracy within noise of it (0.05 on 128 test images). Env: BUILD.
set -u
BUILD=${BUILD:-build}
. "$(dirname "$0")/../support/prereq.sh"
need_mpi
fmnist_workdir 4096 128
prog=$(pwd)/$BUILD/bin/tsr-train
args="--mode data --data $d --epochs 3 --batch 64 --quiet --json"
export OMP_NUM_THREADS=1 TSR_COMM_TIMEOUT=3 TSR_DP_BALANCE=0
timeout 180 mpiexec -n 2 "$prog" $args > "$d/straight.json" 2> "$d/err" ||
    { cat "$d/err"; echo "FAIL: the uninterrupted run"; exit 1; }
TSR_FAULT_KILL_AFTER_SAVE=1@1 timeout 300 "$BUILD/bin/tsr-launch" -n 2 --max-restarts 2 -- \
    "$prog" $args --checkpoint "$d/run.ckpt" > "$d/launched.json" 2> "$d/launch.err"
rc=$?
grep "^tsr-launch" "$d/launch.err"
[ $rc = 0 ] || { tail -20 "$d/launch.err"; echo "FAIL: tsr-launch exit $rc"; exit 1; }
grep -q "1 of 2 ranks lost" "$d/launch.err" && grep -q "attempt 2: 1 rank, resuming from the checkpoint" "$d/launch.err" ||
    { echo "FAIL: no restart with the remaining rank"; exit 1; }
python3 - "$d" <<'PY'
import json, sys
d = sys.argv[1]
a = json.load(open(d + "/straight.json"))
lines = [l for l in open(d + "/launched.json") if l.startswith("{")]
assert len(lines) == 1, "expected one result line, got %d" % len(lines)
b = json.loads(lines[0])
assert b["ranks"] == 1 and b["epochs"] == a["epochs"] == 3, (a["epochs"], b)
steps = lambda r: r["epochs"] * (r["train_samples"] // r["batch"])
assert steps(a) == steps(b), (steps(a), steps(b))
assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.05, (a["test_accuracy"], b["test_accuracy"])
print("restarted job finished on 1 rank: %d epochs like the uninterrupted run, test accuracy %.4f "
      "vs %.4f" % (b["epochs"], b["test_accuracy"], a["test_accuracy"]))
PY
