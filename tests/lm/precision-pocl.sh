#!/bin/sh
# bf16 and fp16 training reach fp32's accuracy on the first OpenCL device (PoCL here; its
# kernels: round16, narrow16 and widen16 through vstore_half/vload_half and bf16 on ushort
# bits, then CLBlast SGEMM), shortened to what a CPU OpenCL device runs in about a minute
# (tests/lm/precision.inc): mlp on 2000 images and, for one epoch, a cnn of half the channels
# and a quarter of the dense width on 2000 (tested on 2000; the same kernels as the cnn's at
# about a third of its time: PoCL trains the cnn at ~50 samples/s), gpt-mini for 10 steps
# (validation loss within 0.05).
# Env: BUILD, TSR_DATA_DIR.
. "$(dirname "$0")/../support/prereq.sh"
"${BUILD:-build}/bin/tsr-topo" 2> /dev/null | grep -q " opencl:0:0 " || skip "missing an OpenCL device (PoCL)"
device=opencl:0:0
mlp_args="--epochs 1 --limit 2000"
cnn_model="conv5x5:16,relu,pool2,conv5x5:32,relu,pool2,dense:256,relu,dense:10"
cnn_args="--epochs 1 --limit 2000 --test-limit 2000"
lm_args="--context 32 --batch 8 --steps 10 --val-windows 16"
lm_tol=0.05
. "$(dirname "$0")/precision.inc"
