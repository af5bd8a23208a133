#!/bin/sh
# Fault: asynchronous SGD with a parameter server (lib/train/async.c), 1 server (rank 0) and workers.
#  1. A worker (the last rank) dies (SIGKILL) before its step 5: the server and the other
#     workers must finish all 40 steps, the server logging the lost worker (TSR_COMM_TIMEOUT=3 s).
#  2. The server dies before its step 5: every worker must stop with TSR_ERR_PEER_LOST naming
#     the server, through the timeout (no hang).
# Each dies by SIGKILL of its own at a known step (test_async's fault mode).
# mpiexec runs with -disable-auto-cleanup and each rank under sh ignoring hydra's SIGUSR1, so
# the launcher does not end the survivors: the library has to notice. UCX_TLS=^cma: UCX's CMA
# transport aborts the whole process (ucs fatal error, process_vm_readv: No such process) when
# the peer of a large message in flight dies, before MPI can report anything; without it UCX
# reports an endpoint error, which the library turns into TSR_ERR_PEER_LOST. Env: BUILD.
set -u
BUILD=${BUILD:-build}
prog=$(pwd)/$BUILD/tests/mpi/test_async
. "$(dirname "$0")/../support/prereq.sh"
need_mpi
[ -x "$prog" ] || { echo "no $prog"; exit 1; }
d=$(mktemp -d /tmp/tsr-fault.XXXXXX)
trap 'rm -rf "$d"' EXIT
run() { # n die_rank; the 120 s bound only turns a hang into a failure
    UCX_TLS=^cma TSR_LOG=warn TSR_COMM_TIMEOUT=3 timeout 120 mpiexec -disable-auto-cleanup -n $1 sh -c \
        "trap '' USR1; '$prog' --die-rank $2 --die-step 5 2> '$d/err.$1.$2.'\$PMI_RANK; exit \$?" \
        > "$d/out" 2>&1
    rc=$?
    echo "n=$1, rank $2 killed: mpiexec exit $rc"
    [ "$rc" != 124 ] || { echo "FAIL: hang (killed after 120 s)"; exit 1; }
}
for n in 3 4; do
    last=$((n - 1))
    run $n $last
    for r in $(seq 0 $((n - 2))); do
        f="$d/err.$n.$last.$r"
        echo "rank $r said:"; cat "$f"
        grep -q "finished 40 steps" "$f" || { echo "FAIL: rank $r did not finish"; exit 1; }
    done
    grep -q "worker rank $last lost" "$d/err.$n.$last.0" || { echo "FAIL: server did not report the loss"; exit 1; }
    grep -q "workers lost 1" "$d/err.$n.$last.0" || { echo "FAIL: server's count of lost workers"; exit 1; }
done
for n in 2 3; do
    run $n 0
    for r in $(seq 1 $((n - 1))); do
        f="$d/err.$n.0.$r"
        echo "rank $r said:"; cat "$f"
        grep -q "TSR_ERR_PEER_LOST" "$f" || { echo "FAIL: rank $r: no peer-lost error"; exit 1; }
        grep -q "server" "$f" || { echo "FAIL: rank $r does not name the server"; exit 1; }
    done
done
echo "ok"
