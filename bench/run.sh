#!/bin/sh
# `make bench`: side-by-side comparisons, each printed as a table with ratios (never a lone time).
#  1. GEMM GFLOP/s per device next to its analytic peak      (build/bin/tsr-gemm-bench)
#  1b. optimizer step ns/float per kernel variant vs the portable loop (build/bin/tsr-optim-bench)
#  2. allreduce busbw, tessera algorithms vs MPI_Allreduce    (build/bin/tsr-allreduce-bench, n=2),
#     then per size each target (registered 2x, private 1x MPI; 0.8 of memcpy) next to the
#     memcpy rate and the cross-core floor measured in the same run
#  3. training samples/s and accuracy, tessera vs PyTorch CPU, alternated 3 times, the median
#     pair (bench/train_vs_torch.py --repeat 3); for the
#     cnn also its GFLOP/s as a fraction of the SGEMM rate and of the bound OpenBLAS allows at
#     the cnn's GEMM shapes (build/bin/tsr-conv-bound), with issue 15's targets named
#  4. data-parallel scaling: 2 ranks vs 1 rank, plain and ZeRO-1, and the ceiling of 2
#     independent processes (bench/scaling.sh, 5 alternations; its exit status says whether the
#     1.8x target was met, not a failure), and the fraction of that ceiling (target 0.95) next
#     to plain data parallelism's bound: the slower core's step plus the gradient allreduce
#  5. GPT training step, tessera vs PyTorch CPU, and the fraction of the SGEMM rate
#     (bench/gpt_speed.sh: gpt2 and gpt-mini at batch 4 x 64, AdamW, fp32 and bf16 against PyTorch and its autocast;
#     then gpt2 at 1 x 1024 tokens, where attention's recomputed weights matter)
#  6. tinyshakespeare val loss and wall time, tessera vs PyTorch (bench/shakespeare.sh), when
#     the text is there
#  7. the 3D planner's predicted step against the measured one, 4 layouts of gpt2 on this
#     machine as two single-core devices (bench/plan_check.sh)
set -e
BUILD=${BUILD:-build}
bin=$BUILD/bin
here=$(cd "$(dirname "$0")" && pwd)

echo "== GEMM per device =="
"$bin/tsr-gemm-bench"

echo
echo "== optimizer step per kernel variant (1 thread) =="
"$bin/tsr-optim-bench"

if [ -x "$bin/tsr-allreduce-bench" ]; then
    echo
    echo "== allreduce, 2 ranks =="
    mpiexec -n 2 "$bin/tsr-allreduce-bench"
fi

if [ -f "$here/train_vs_torch.py" ]; then
    echo
    echo "== training vs PyTorch (CPU) =="
    BUILD=$BUILD /usr/bin/python3 "$here/train_vs_torch.py" --models mlp,cnn --threads 2 --limit 12800 --repeat 3
fi

if [ -x "$bin/tsr-allreduce-bench" ]; then
    echo
    echo "== data-parallel scaling, mlp =="
    BUILD=$BUILD REPEAT=5 sh "$here/scaling.sh" || true
fi

echo
echo "== GPT training step vs PyTorch (CPU) =="
BUILD=$BUILD sh "$here/gpt_speed.sh" --models gpt2,gpt-mini --steps 3 --repeats 3 --precision fp32,bf16

echo
echo "== GPT training step at GPT-2's context (1 x 1024 tokens) vs PyTorch (CPU) =="
BUILD=$BUILD sh "$here/gpt_speed.sh" --models gpt2 --batch 1 --context 1024 --steps 2 --repeats 1

echo
echo "== 3D planner: predicted vs measured step =="
BUILD=$BUILD sh "$here/plan_check.sh" --model gpt2 --steps 3

text=${TSR_SHAKESPEARE:-$here/../../shared/data/tinyshakespeare/input.txt}
if [ -f "$text" ]; then
    echo
    echo "== tinyshakespeare, nanoGPT's CPU configuration, vs PyTorch =="
    BUILD=$BUILD TSR_SHAKESPEARE=$text sh "$here/shakespeare.sh"
fi
