#!/bin/sh
# Fault: a gossip rank dies (SIGKILL) at the start of step 3 while its ring neighbours wait for
# its parameters: at n = 2 and 3, rank 1 dies and its neighbours (rank 0; ranks 0 and 2) must
# stop with TSR_ERR_PEER_LOST naming rank 1 (the message that did not go or come). Bounded time
#
# (TSR_COMM_TIMEOUT=3 s; limit 30 s, no hang). mpiexec runs with -disable-auto-cleanup and each
# rank under sh, so the launcher does not end the survivors: the library has to notice (as
# tests/fault/pipeline-kill.sh). Env: BUILD.
set -u
BUILD=${BUILD:-build}
prog=$(pwd)/$BUILD/tests/mpi/test_gossip
command -v mpiexec > /dev/null || { echo "SKIP: no mpiexec"; exit 0; }
grep -q "WITH_MPI=0" "$BUILD/config.sh" 2> /dev/null && { echo "SKIP: built without MPI"; exit 0; }
[ -x "$prog" ] || { echo "no $prog"; exit 1; }
d=$(mktemp -d /tmp/tsr-fault.XXXXXX)
trap 'rm -rf "$d"' EXIT
for n in 2 3; do
    start=$(date +%s)
    # hydra tells the survivors of a lost rank with SIGUSR1 (default action: exit); the wrapper
    # and the program ignore it, so that what ends them is the library's own detection
    TSR_COMM_TIMEOUT=3 timeout 60 mpiexec -disable-auto-cleanup -n $n sh -c \
        "trap '' USR1; '$prog' --die-rank 1 --die-step 3 2> '$d/err.$n.'\$PMI_RANK; exit \$?" \
        > "$d/out" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    echo "n=$n: mpiexec exit $rc after ${took}s"
    [ "$rc" != 124 ] || { echo "FAIL: hang (killed by timeout)"; exit 1; }
    [ "$took" -le 30 ] || { echo "FAIL: took ${took}s"; exit 1; }
    for r in 0 2; do
        [ "$r" -lt "$n" ] || continue
        echo "rank $r said:"; cat "$d/err.$n.$r"
        grep -q "TSR_ERR_PEER_LOST" "$d/err.$n.$r" || { echo "FAIL: rank $r: no peer-lost error"; exit 1; }
        grep -q "no progress for 3 s" "$d/err.$n.$r" || { echo "FAIL: rank $r: no timeout detail"; exit 1; }
        grep -q "rank 1\b" "$d/err.$n.$r" || { echo "FAIL: rank $r does not name rank 1"; exit 1; }
    done
done
echo "ok"
