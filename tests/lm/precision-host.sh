#!/bin/sh
# bf16 and fp16 training reach fp32's accuracy on the host backend (tests/lm/precision.inc):
# mlp on 6000 and cnn on 3000 Fashion-MNIST images for one epoch (test loss within 0.03,
# accuracy within 0.015),
# gpt-mini for 150 steps of 8 x 32 tokens (validation loss within 0.05; seeds alone move it by
# about 0.02 there). Env: BUILD, TSR_DATA_DIR.
device=host
mlp_args="--epochs 1 --limit 6000"
cnn_args="--epochs 1 --limit 3000"
lm_args="--context 32 --batch 8 --steps 150 --val-windows 96"
lm_tol=0.05
. "$(dirname "$0")/precision.inc"
