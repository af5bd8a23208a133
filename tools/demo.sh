#!/bin/sh
# `make demo`: the main job — detect the devices and measure them (once, then cached), plan the
# model's placement on them (tsr-plan: one stage per usable device where that pays), train
# Fashion-MNIST data-parallel on them (one MPI rank per core on a CPU-only machine, the global
# batch split by each rank's measured throughput), report. TSR_DEMO_MODEL / TSR_DEMO_EPOCHS /
# TSR_DEMO_RANKS change it.
set -e
BUILD=${BUILD:-build}
bin=$BUILD/bin
ranks=${TSR_DEMO_RANKS:-2}
model=${TSR_DEMO_MODEL:-mlp}
epochs=${TSR_DEMO_EPOCHS:-3}

echo "== 1. devices (hwloc + OpenCL) and what each measured =="
"$bin/tsr-topo" --recalibrate

echo
echo "== 2. placement of $model on the usable devices (predicted from the measurements) =="
"$bin/tsr-plan" --model "$model" --optimizer adam --no-calibrate

echo
echo "== 3. train Fashion-MNIST: $model, $epochs epochs, data parallel on $ranks ranks =="
mpiexec -n "$ranks" "$bin/tsr-train" --mode data --model "$model" --epochs "$epochs" --json
