#!/bin/sh
# Fault: a pipeline stage dies (SIGKILL) at the start of step 3 while its neighbours are inside
# that step waiting for its messages. 2 ranks: rank 0 must stop with "rank 1 lost" (its
# gradient receive from rank 1); 3 ranks: rank 1 (the middle stage) dies and both rank 0 (waits
# for gradients) and rank 2 (waits for activations) must stop with TSR_ERR_PEER_LOST through
# the library's timeout (TSR_COMM_TIMEOUT=3 s: "no progress for 3 s"; no hang). mpiexec runs with -disable-auto-cleanup and
# each rank under sh, so the launcher does not end the survivors: the library has to notice
# (as tests/fault/rank-kill.sh). Env: BUILD.
set -u
. "$(dirname "$0")/kill.inc"
kill_setup test_pipeline
for n in 2 3; do
    kill_run $n
    for r in 0 2; do kill_expect $n $r "TSR_ERR_PEER_LOST" "no progress for 3 s"; done
    [ "$n" = 2 ] && kill_expect 2 0 "rank 1 lost"
done
echo "ok"
