#!/bin/sh
# Fault: rank 1 of a 2-rank data-parallel run dies (SIGKILL) before step 12. Rank 0 must stop
# with "rank 1 lost" through the library's timeout (TSR_COMM_TIMEOUT=3 s; no hang), and the
# last checkpoint (step 10) must load. mpiexec runs with -disable-auto-cleanup and each rank
# under sh (hydra kills the whole job itself when a rank dies of a signal): as when a node is
# lost, the launcher does not save the survivor; the library has to notice. Env: BUILD.
set -u
BUILD=${BUILD:-build}
prog=$(pwd)/$BUILD/tests/fault/fault_train
[ -x "$prog" ] || { echo "no $prog"; exit 1; }
. "$(dirname "$0")/../support/prereq.sh"
need_mpi
d=$(mktemp -d /tmp/tsr-fault.XXXXXX)
trap 'rm -rf "$d"' EXIT
# the 120 s bound only turns a hang into a failure
TSR_COMM_TIMEOUT=3 timeout 120 mpiexec -disable-auto-cleanup -n 2 sh -c \
    "POCL_CACHE_DIR=$d/pocl\$PMI_RANK '$prog' --steps 40 --ckpt-every 5 --ckpt '$d/ck' --die-at 12 2> '$d/err.'\$PMI_RANK; exit \$?" \
    > "$d/out" 2>&1
rc=$?
echo "mpiexec exit $rc; rank 0 said:"
cat "$d/err.0"
[ "$rc" != 124 ] || { echo "FAIL: hang (killed after 120 s)"; exit 1; }
grep -q "rank 1 lost: no progress for 3 s" "$d/err.0" || { echo "FAIL: no clear error on rank 0"; exit 1; }
step=$("$prog" --verify "$d/ck.rank0") || { echo "FAIL: checkpoint does not load"; exit 1; }
[ "$step" = "step 10" ] || { echo "FAIL: checkpoint has $step, expected step 10"; exit 1; }
echo "last checkpoint intact: $step"
