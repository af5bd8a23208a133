#!/bin/sh
# Fault (issue 13): a tensor-parallel peer dies. tsr-train --tp 2 on gpt-mini, n = 2 (one group),
# n = 4 (--tp 2 x data 2) and n = 4 (--tp 2 x pipeline 2: ranks 0, 1 run stage 0, ranks 2, 3
# stage 1); rank 1 kills itself (SIGKILL) before optimizer step 3
# (TSR_FAULT_KILL_AT_STEP=3@1; rank 3 in the --tp 2 x data 2 layout). Its group partner, blocked
# in a layer's allreduce over the group, must end with TSR_ERR_PEER_LOST through
# TSR_COMM_TIMEOUT (3 s here) naming the dead rank as mpiexec numbers it (rank 3 is rank 1 of
# its group), and at n = 4 the other group, whose next data-parallel exchange or pipeline
# message can no longer complete, must end the same way: no hang, no crash. mpiexec runs with -disable-auto-cleanup and each
# rank under sh ignoring hydra's SIGUSR1, so nothing but the library ends the survivors.
# The 120 s bound only turns a hang into a failure. Env: BUILD.
set -u
BUILD=${BUILD:-build}
. "$(dirname "$0")/../support/prereq.sh"
need_mpi
corpus=/usr/share/games/fortunes/fortunes
[ -f "$corpus" ] || skip "missing $corpus (Debian package fortunes-min)"
d=$(mktemp -d /tmp/tsr-fault.XXXXXX)
trap 'rm -rf "$d"' EXIT
"$BUILD/bin/tsr-tokenize" --bytes "$corpus" "$d/data" > /dev/null || { echo "FAIL: tokenize"; exit 1; }
prog=$(pwd)/$BUILD/bin/tsr-train
for layout in 2 4 4pipe; do
    n=${layout%pipe}
    extra="" dead=1 partner=0
    [ $layout = 4 ] && extra="--mode data" dead=3 partner=2
    [ $layout = 4pipe ] && extra="--mode pipeline"
    TSR_COMM_TIMEOUT=3 TSR_FAULT_KILL_AT_STEP=3@$dead timeout 120 \
        mpiexec -disable-auto-cleanup -n $n sh -c "trap '' USR1; '$prog' --tp 2 $extra --model gpt-mini \
        --data '$d/data' --context 32 --batch 8 --steps 20 --quiet 2> '$d/err.$n.'\$PMI_RANK; \
        echo \$? > '$d/rc.$n.'\$PMI_RANK" > "$d/out" 2>&1
    rc=$?
    echo "n=$n $extra: mpiexec exit $rc"
    [ "$rc" != 124 ] || { echo "FAIL: hang (killed after 120 s)"; exit 1; }
    [ "$(cat "$d/rc.$n.$dead")" = 137 ] || { echo "FAIL: rank $dead did not die by SIGKILL"; exit 1; }
    for r in 0 1 2 3; do
        [ $r -lt $n ] && [ $r != $dead ] || continue
        echo "rank $r said (exit $(cat "$d/rc.$n.$r")):"; head -c 400 "$d/err.$n.$r"; echo
        [ "$(cat "$d/rc.$n.$r")" = 1 ] || { echo "FAIL: rank $r exit $(cat "$d/rc.$n.$r"), expected 1"; exit 1; }
        grep -q "TSR_ERR_PEER_LOST\|a peer rank was lost" "$d/err.$n.$r" || { echo "FAIL: rank $r: no peer-lost error"; exit 1; }
    done
    grep -q "rank $dead lost" "$d/err.$n.$partner" ||
        { echo "FAIL: rank $partner does not name rank $dead (as mpiexec numbers it)"; exit 1; }
done
echo "ok"
