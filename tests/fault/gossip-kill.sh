#!/bin/sh
# Fault: a gossip rank dies (SIGKILL) at the start of step 3 while its ring neighbours wait for
# its parameters: at n = 2 and 3, rank 1 dies and its neighbours (rank 0; ranks 0 and 2) must
# stop with TSR_ERR_PEER_LOST naming rank 1 (the message that did not go or come), through the
# library's timeout (TSR_COMM_TIMEOUT=3 s: "no progress for 3 s"; no hang). mpiexec runs with -disable-auto-cleanup and each
# rank under sh, so the launcher does not end the survivors: the library has to notice (as
# tests/fault/pipeline-kill.sh). Env: BUILD.
set -u
. "$(dirname "$0")/kill.inc"
kill_setup test_gossip
for n in 2 3; do
    kill_run $n
    for r in 0 2; do kill_expect $n $r "TSR_ERR_PEER_LOST" "no progress for 3 s" "rank 1\b"; done
done
echo "ok"
