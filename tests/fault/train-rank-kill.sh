#!/bin/sh
# Fault: rank 1 of `mpiexec -n 2 tsr-train --mode data [--zero]` dies by SIGKILL in mid-training, right
# after the first checkpoint (TSR_FAULT_KILL_AFTER_SAVE=1 on rank 1 alone: a known point of the
# run, not a moment on the clock). Rank 0 must stop with "rank 1 lost" through the library's
# timeout (TSR_COMM_TIMEOUT=3) instead of hanging, and the last checkpoint must load. mpiexec
# runs with -disable-auto-cleanup and each rank under a shell that outlives it, so the launcher
# does not end rank 0 for us. Env: BUILD.
set -u
BUILD=${BUILD:-build}
. "$(dirname "$0")/../support/prereq.sh"
need_mpi
fmnist_workdir 4096 128
prog=$(pwd)/$BUILD/bin/tsr-train
# 3 epochs: rank 1 dies after the first, rank 0 must notice in the second; plain data
# parallelism, then ZeRO-1 (whose optimizer step waits on the parameter allgather). The 180 s
# bound only turns a hang into a failure.
for zero in "" "--zero"; do
    rm -f "$d/run.ckpt" "$d/run.ckpt.manifest.json"
    TSR_COMM_TIMEOUT=3 OMP_NUM_THREADS=1 timeout 180 mpiexec -disable-auto-cleanup -n 2 sh -c \
        "[ \$PMI_RANK = 1 ] && export TSR_FAULT_KILL_AFTER_SAVE=1; \
         '$prog' --mode data $zero --data '$d' --epochs 3 --quiet --checkpoint '$d/run.ckpt' \
            > '$d/out.'\$PMI_RANK 2>&1; echo \$? > '$d/rc.'\$PMI_RANK" > "$d/mpiexec" 2>&1
    rc=$?
    echo "${zero:-data}: mpiexec exit $rc; rank 1 exit $(cat "$d/rc.1"); rank 0 said:"
    tail -n 3 "$d/out.0"
    [ "$rc" != 124 ] || { echo "FAIL: hang (killed after 180 s)"; exit 1; }
    [ "$(cat "$d/rc.1")" = 137 ] || { echo "FAIL: rank 1 did not die by SIGKILL after its save"; cat "$d/out.1"; exit 1; }
    grep -q "rank 1 lost: no progress for 3 s" "$d/out.0" || { echo "FAIL: no clear error on rank 0"; exit 1; }
    "$BUILD/tests/fault/fault_train" --verify "$d/run.ckpt" || { echo "FAIL: last checkpoint does not load"; exit 1; }
    python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$d/run.ckpt.manifest.json" ||
        { echo "FAIL: manifest unreadable"; exit 1; }
    echo "last checkpoint and manifest intact"
done
