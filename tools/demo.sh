#!/bin/sh
# `make demo`: the main job — detect the devices, show what was measured, train Fashion-MNIST
# on the best device found, and report. TSR_DEMO_EPOCHS / TSR_DEMO_MODEL shorten or change it.
set -e
BUILD=${BUILD:-build}
bin=$BUILD/bin
export POCL_MAX_PTHREAD_COUNT=${POCL_MAX_PTHREAD_COUNT:-$(nproc)}

echo "== 1. devices (hwloc + OpenCL), capability measured once and cached =="
"$bin/tsr-topo"

echo
echo "== 2. train Fashion-MNIST =="
model=${TSR_DEMO_MODEL:-cnn}
epochs=${TSR_DEMO_EPOCHS:-2}
"$bin/tsr-train" --model "$model" --epochs "$epochs" --json
