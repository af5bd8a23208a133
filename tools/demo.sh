#!/bin/sh
# `make demo`: the main job — detect the devices and measure them (once, then cached), plan the
# model's placement on them (tsr-plan: one stage per usable device where that pays), train
# Fashion-MNIST data-parallel on them (one MPI rank per core on a CPU-only machine, the global
# batch split by each rank's measured throughput), report; then train a small language model
# (gpt-mini) on the English text the Debian package fortunes ships, a couple of minutes on two
# cores, and print its validation loss and a sample of its text. TSR_DEMO_MODEL /
# TSR_DEMO_EPOCHS / TSR_DEMO_RANKS change the first part, TSR_DEMO_LM_STEPS (default 300 steps
# of 16 x 64 tokens) the second.
set -e
BUILD=${BUILD:-build}
bin=$BUILD/bin
ranks=${TSR_DEMO_RANKS:-2}
model=${TSR_DEMO_MODEL:-mlp}
epochs=${TSR_DEMO_EPOCHS:-3}
lm_steps=${TSR_DEMO_LM_STEPS:-300}
corpus=/usr/share/games/fortunes

echo "== 1. devices (hwloc + OpenCL) and what each measured =="
"$bin/tsr-topo" --recalibrate

echo
echo "== 2. placement of $model on the usable devices (predicted from the measurements) =="
"$bin/tsr-plan" --model "$model" --optimizer adam --no-calibrate

echo
echo "== 3. train Fashion-MNIST: $model, $epochs epochs, data parallel on $ranks ranks =="
mpiexec -n "$ranks" "$bin/tsr-train" --mode data --model "$model" --epochs "$epochs" --json

echo
echo "== 4. language model: gpt-mini on the fortunes corpus ($corpus), $lm_steps steps =="
# every text file of the package (the .dat files are strfile indexes, the .u8 names links)
texts=$(find "$corpus" -maxdepth 1 -type f ! -name '*.dat' | sort)
[ -n "$texts" ] || { echo "no text in $corpus (Debian package fortunes; make deps installs it)"; exit 1; }
every=$((lm_steps / 3))
[ "$every" -ge 1 ] || every=1
lm=$(mktemp -d /tmp/tsr-demo-lm.XXXXXX)
trap 'rm -rf "$lm"' EXIT
# shellcheck disable=SC2086 # one argument per file
"$bin/tsr-tokenize" --bytes $texts "$lm/data"
"$bin/tsr-train" --model gpt-mini --data "$lm/data" --context 64 --batch 16 --steps "$lm_steps" \
    --optimizer adamw --lr 1e-3 --weight-decay 0.1 --warmup $((lm_steps / 20)) \
    --eval-every "$every" --val-windows 512 --checkpoint "$lm/gpt-mini.ckpt" --quiet
echo "(a uniform guess over 256 bytes scores ln 256 = 5.55)"
echo
echo "== 5. a sample from it (tsr-generate, temperature 0.8, top-k 40) =="
"$bin/tsr-generate" --checkpoint "$lm/gpt-mini.ckpt" --prompt "The " --max-tokens 300 --temperature 0.8 \
    --top-k 40 --seed 1
echo
