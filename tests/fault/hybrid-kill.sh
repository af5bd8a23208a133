#!/bin/sh
# Fault: one rank of a hybrid run dies (SIGKILL) at the start of step 3. 4 ranks = 2 replicas x
# 2 stages, rank 1 (replica 0, stage 1) dies: its pipeline neighbour (rank 0), its stage's
# other replica (rank 3, in the gradient allreduce) and rank 2 (rank 3's neighbour) must all
# stop with TSR_ERR_PEER_LOST; 2 ranks = 2 replicas x 1 stage: the survivor of the gradient
# allreduce. Bounded time (TSR_COMM_TIMEOUT=3 s; limit 40 s, no hang). As pipeline-kill.sh:
# -disable-auto-cleanup and wrappers that ignore SIGUSR1, so the library has to notice. Env: BUILD.
set -u
BUILD=${BUILD:-build}
prog=$(pwd)/$BUILD/tests/mpi/test_hybrid
command -v mpiexec > /dev/null || { echo "SKIP: no mpiexec"; exit 0; }
grep -q "WITH_MPI=0" "$BUILD/config.sh" 2> /dev/null && { echo "SKIP: built without MPI"; exit 0; }
[ -x "$prog" ] || { echo "no $prog"; exit 1; }
d=$(mktemp -d /tmp/tsr-fault.XXXXXX)
trap 'rm -rf "$d"' EXIT
for n in 2 4; do
    start=$(date +%s)
    TSR_COMM_TIMEOUT=3 timeout 60 mpiexec -disable-auto-cleanup -n $n sh -c \
        "trap '' USR1; '$prog' --die-rank 1 --die-step 3 2> '$d/err.$n.'\$PMI_RANK; exit \$?" \
        > "$d/out" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    echo "n=$n: mpiexec exit $rc after ${took}s"
    [ "$rc" != 124 ] || { echo "FAIL: hang (killed by timeout)"; exit 1; }
    [ "$took" -le 40 ] || { echo "FAIL: took ${took}s"; exit 1; }
    for r in 0 2 3; do
        [ "$r" -lt "$n" ] || continue
        echo "rank $r said:"; cat "$d/err.$n.$r"
        grep -q "TSR_ERR_PEER_LOST" "$d/err.$n.$r" || { echo "FAIL: rank $r: no peer-lost error"; exit 1; }
    done
done
echo "ok"
