#!/bin/sh
# Fault: the process dies (SIGKILL, injected by TSR_FAULT_CKPT_KILL after 1000 bytes) while it
# writes the step-10 checkpoint. The step-5 checkpoint must still load, bit for bit as before;
# the half-written temp file is what is left of the interrupted save, and the next save of that
# checkpoint removes it (its process is gone). Env: BUILD.
set -u
BUILD=${BUILD:-build}
prog=$(pwd)/$BUILD/tests/fault/fault_train
d=$(mktemp -d /tmp/tsr-fault.XXXXXX)
trap 'rm -rf "$d"' EXIT
"$prog" --steps 8 --ckpt-every 5 --ckpt "$d/ck" || { echo "FAIL: first run"; exit 1; }
cp "$d/ck.rank0" "$d/before"
"$prog" --steps 12 --ckpt-every 5 --ckpt "$d/ck" --ckpt-kill-at 10 --ckpt-kill-bytes 1000
rc=$?
[ "$rc" = 137 ] || { echo "FAIL: expected death by SIGKILL (137), got $rc"; exit 1; }
ls "$d"/ck.rank0.tmp.* > /dev/null 2>&1 || { echo "FAIL: no interrupted temp file"; exit 1; }
echo "interrupted temp file: $(ls "$d"/ck.rank0.tmp.*), $(cat "$d"/ck.rank0.tmp.* | wc -c) bytes"
cmp "$d/before" "$d/ck.rank0" || { echo "FAIL: previous checkpoint changed"; exit 1; }
step=$("$prog" --verify "$d/ck.rank0") || { echo "FAIL: previous checkpoint does not load"; exit 1; }
[ "$step" = "step 5" ] || { echo "FAIL: $step, expected step 5"; exit 1; }
echo "previous checkpoint intact: $step"
"$prog" --steps 6 --ckpt-every 5 --ckpt "$d/ck" || { echo "FAIL: run after the interrupted one"; exit 1; }
if ls "$d"/ck.rank0.tmp.* > /dev/null 2>&1; then
    echo "FAIL: the next save left the dead process's temp file: $(ls "$d"/ck.rank0.tmp.*)"
    exit 1
fi
echo "the next save removed the stale temp file"
