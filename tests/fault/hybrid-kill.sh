#!/bin/sh
# Fault: one rank of a hybrid run dies (SIGKILL) at the start of step 3. 4 ranks = 2 replicas x
# 2 stages, rank 1 (replica 0, stage 1) dies: its pipeline neighbour (rank 0), its stage's
# other replica (rank 3, in the gradient allreduce) and rank 2 (rank 3's neighbour) must all
# stop with TSR_ERR_PEER_LOST; 2 ranks = 2 replicas x 1 stage: the survivor of the gradient
# allreduce. TSR_COMM_TIMEOUT=3 s; no hang. As pipeline-kill.sh:
# -disable-auto-cleanup and wrappers that ignore SIGUSR1, so the library has to notice. Env: BUILD.
set -u
. "$(dirname "$0")/kill.inc"
kill_setup test_hybrid
for n in 2 4; do
    kill_run $n
    for r in 0 2 3; do kill_expect $n $r "TSR_ERR_PEER_LOST"; done
done
echo "ok"
