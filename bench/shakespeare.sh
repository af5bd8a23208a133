#!/bin/sh
# Quality against nanoGPT's published baseline (issue 12): tinyshakespeare, byte-level (the
# first 90% of input.txt to train, the last 10% to validate, as nanoGPT's shakespeare_char),
# nanoGPT's CPU configuration (4 layers, 4 heads, 128 channels, context 64, batch 12, 2,000
# steps, no dropout) with nanoGPT's optimiser (AdamW lr 1e-3, beta2 0.99, weight decay 0.1 on
# matrices only, gradients clipped at global norm 1, 100 warm-up steps then cosine to 1e-4),
# which reaches val loss 1.88 there. tessera (tsr-train) and the same model in PyTorch
# (bench/shakespeare_torch.py --nanogpt, the same settings), one after the other on the same
# threads: wall time and val loss over the whole validation split side by side.
#
#   sh bench/shakespeare.sh [--steps 2000] [--threads 2] [--seed 1]
#
# Env: BUILD, PYTHON (an interpreter that imports torch), TSR_SHAKESPEARE (input.txt; default
# ../shared/data/tinyshakespeare/input.txt).
set -eu
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
text=${TSR_SHAKESPEARE:-$here/../../shared/data/tinyshakespeare/input.txt}
[ -f "$text" ] || text=/work/shared/data/tinyshakespeare/input.txt
steps=2000 threads=2 seed=1
while [ $# -gt 0 ]; do
    case $1 in
    --steps) steps=$2; shift ;;
    --threads) threads=$2; shift ;;
    --seed) seed=$2; shift ;;
    *) echo "shakespeare.sh: unknown option $1 (--steps, --threads, --seed)" >&2; exit 2 ;;
    esac
    shift
done
[ -f "$text" ] || { echo "shakespeare.sh: no tinyshakespeare input.txt (set TSR_SHAKESPEARE)" >&2; exit 2; }
d=$(mktemp -d /tmp/tsr-shakespeare.XXXXXX)
trap 'rm -rf "$d"' EXIT
export TSR_HOST_THREADS=$threads OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
"$BUILD/bin/tsr-tokenize" --bytes "$text" "$d/data" --val-fraction 0.1 > /dev/null
warmup=$((steps / 20))  # nanoGPT: 100 of 2,000
echo "tinyshakespeare, byte-level; 4 layers, 4 heads, 128 channels, context 64, batch 12, $steps steps, AdamW lr 1e-3 beta2 0.99 wd 0.1 (matrices), clip 1, $warmup warm-up then cosine to 1e-4; $threads threads, seed $seed"
echo "load before: $(uptime)"
start=$(date +%s.%N)
"$BUILD/bin/tsr-train" --model 'gpt(layers=4,heads=4,channels=128,context=64,vocab=256)' \
    --data "$d/data" --context 64 --batch 12 --steps "$steps" --optimizer adamw --lr 1e-3 \
    --beta2 0.99 --weight-decay 0.1 --no-decay-1d --clip-grad 1 --schedule cosine --min-lr 1e-4 \
    --warmup "$warmup" --seed "$seed" --json --quiet > "$d/tessera.json" 2> "$d/tessera.err" ||
    { cat "$d/tessera.err" >&2; exit 1; }
end=$(date +%s.%N)
echo "tessera: $(cat "$d/tessera.json") wall $(awk "BEGIN { printf \"%.1f\", $end - $start }") s"
start=$(date +%s.%N)
"$PYTHON" "$here/shakespeare_torch.py" "$d/data" --steps "$steps" --warmup "$warmup" --threads "$threads" \
    --seed "$seed" --nanogpt > "$d/torch.json"
end=$(date +%s.%N)
echo "pytorch: $(cat "$d/torch.json") wall $(awk "BEGIN { printf \"%.1f\", $end - $start }") s"
echo "load after: $(uptime)"
"$PYTHON" - "$d" << 'PY'
import json, sys
t = json.load(open(sys.argv[1] + "/tessera.json"))
p = json.load(open(sys.argv[1] + "/torch.json"))
print("%-8s %9s %11s %9s %12s" % ("side", "val loss", "mean train", "train s", "tokens/s"))
print("%-8s %9.4f %11.4f %9.1f %12.0f" % ("tessera", t["val_loss"], t["final_loss"], t["train_seconds"], t["tokens_per_s"]))
print("%-8s %9.4f %11.4f %9.1f %12.0f" % ("pytorch", p["val_loss"], p["final_loss"], p["train_seconds"], p["tokens_per_s"]))
print("train time tessera / pytorch: %.2f" % (t["train_seconds"] / p["train_seconds"]))
print("last pre-clip gradient norm: tessera %.3f, pytorch %.3f" % (t["grad_norm"], p["grad_norm"]))
e = p["nanogpt_val_estimates"]
print("pytorch's model by nanoGPT's estimate (20 batches of 12 random windows), 20 draws: "
      "mean %.4f, std %.4f, range %.4f..%.4f" % (e["mean"], e["std"], e["min"], e["max"]))
print("nanoGPT's published CPU figure: val loss 1.88; tessera %s" % ("meets it" if t["val_loss"] <= 1.88 else "misses it"))
PY
