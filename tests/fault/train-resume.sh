#!/bin/sh
# Resuming tsr-train after kill -9 reproduces the uninterrupted run bitwise: 4 epochs straight
# vs the same command killed right after its first checkpoint (TSR_FAULT_KILL_AFTER_SAVE=1),
# then --resume (Adam, cosine schedule, dropout: optimizer state, step count and RNG state all
# come back). The JSON figures (final loss, test loss and accuracy, 17 digits) must be equal,
# and resuming the finished checkpoint, with nothing left to train, reports them again.
# Env: BUILD.
set -u
BUILD=${BUILD:-build}
. "$(dirname "$0")/../support/prereq.sh"
fmnist_workdir 2048 128
run() { "$BUILD/bin/tsr-train" --data "$d" --model "dense:64,relu,dropout:0.2,dense:10" --batch 32 \
            --quiet --json "$@" 2> "$d/err" || { cat "$d/err"; echo "FAIL: tsr-train $*"; exit 1; }; }
run --epochs 4 > "$d/straight.json"
# The run kills itself (SIGKILL) right after its first checkpoint, at the end of epoch 1 of 4:
# the same point on a loaded machine as on an idle one.
TSR_FAULT_KILL_AFTER_SAVE=1 "$BUILD/bin/tsr-train" --data "$d" --model "dense:64,relu,dropout:0.2,dense:10" \
    --batch 32 --quiet --epochs 4 --checkpoint "$d/ck" > /dev/null 2>&1
rc=$?
[ "$rc" = 137 ] || { echo "FAIL: the run was not killed after its first checkpoint (exit $rc)"; exit 1; }
at=$("$BUILD/tests/fault/fault_train" --verify "$d/ck")
[ "$at" = "step 64" ] || { echo "FAIL: the checkpoint left by the kill is at '$at', not step 64 (epoch 1)"; exit 1; }
echo "killed; its last checkpoint is at $at"
run --epochs 4 --checkpoint "$d/ck" --resume "$d/ck" > "$d/resumed.json"
run --epochs 4 --resume "$d/ck" > "$d/finished.json"
python3 - "$d" <<'PY'
import json, sys
d = sys.argv[1]
a = json.load(open(d + "/straight.json"))
for run in ("resumed", "finished"):
    b = json.load(open("%s/%s.json" % (d, run)))
    for k in ("final_loss", "test_loss", "test_accuracy", "epochs"):
        assert a[k] == b[k], "%s: uninterrupted %r, %s %r" % (k, a[k], run, b[k])
print("resumed run equals the uninterrupted one: final loss %r, test loss %r; a resume with "
      "nothing left to train reports the same" % (a["final_loss"], a["test_loss"]))
PY
