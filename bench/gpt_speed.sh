#!/bin/sh
# GPT training speed, tessera beside PyTorch CPU in one run (issue 12): gpt2 (124M) and
# gpt-mini at batch 4 x 64 tokens (by default) with AdamW, the same threads on both sides.
#
#   sh bench/gpt_speed.sh [--models gpt2,gpt-mini] [--threads 2] [--steps 5] [--repeats 3]
#       [--precision fp32[,bf16,fp16]] [--clip 0] [--batch 4] [--context 64]
#
# --batch, --context: sequences a step and tokens a sequence (GPT-2's own context is 1024;
# gpt-mini's 256), the same on both sides.
#
# --precision: a list runs each in turn inside every repeat, so their ratios are side by side;
# bf16/fp16 is tessera's --precision against PyTorch's autocast (AMP). "of SGEMM" stays a
# fraction of the float32 SGEMM rate (a 16-bit GEMM may run faster than it).
#
# --clip X clips the gradients' global norm to X on both sides (llm.c and nanoGPT train GPT-2
# with 1.0); 0, the default, leaves clipping off.
# Per model and repeat: tessera's step time is (train_seconds of a 1+STEPS-step run minus
# that of a 1-step run) / STEPS, i.e. the mean of STEPS steps after one warm-up step
# (tsr-train's train_seconds leave out start-up and evaluation); PyTorch's is
# bench/gpt_torch_speed.py's median of STEPS steps after one warm-up. The table gives the
# median over the repeats and their spread (min..max), tokens/s, and the fraction of the host's
# SGEMM rate (tsr-gemm-bench at 768 and 1024 before and after each repeat, the fastest: the
# median over the repeats) that the step's matrix FLOPs imply
# (gpt_torch_speed.py's count: 3 x forward's 2 x multiply-adds; layer norms, softmax, GELU and
# AdamW left out). The data are random tokens in llm.c's file layout. Load (uptime) is printed
# before and after: the host is shared. Env: BUILD, PYTHON (an interpreter that imports torch).
set -eu
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
models=gpt2,gpt-mini threads=2 steps=5 repeats=3 precision=fp32 clip=0 batch=4 context=64
while [ $# -gt 0 ]; do
    case $1 in
    --models) models=$2 ;;
    --threads) threads=$2 ;;
    --steps) steps=$2 ;;
    --repeats) repeats=$2 ;;
    --precision) precision=$2 ;;
    --clip) clip=$2 ;;
    --batch) batch=$2 ;;
    --context) context=$2 ;;
    *) echo "gpt_speed.sh: unknown option $1 (--models, --threads, --steps, --repeats, --precision, --clip, --batch, --context)" >&2; exit 2 ;;
    esac
    shift 2
done
"$PYTHON" -c "import torch" 2> /dev/null || { echo "gpt_speed.sh: $PYTHON cannot import torch (Debian package python3-torch)" >&2; exit 2; }
d=$(mktemp -d /tmp/tsr-gpt-speed.XXXXXX)
trap 'rm -rf "$d"' EXIT
export TSR_HOST_THREADS=$threads OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

# random tokens below gpt2's vocabulary (50257) and gpt-mini's (256), llm.c's layout
"$PYTHON" - "$d" << 'PY'
import os, struct, sys, numpy as np
rng = np.random.default_rng(20240520)
for vocab, sub in ((50257, "v50257"), (256, "v256")):
    os.makedirs(os.path.join(sys.argv[1], sub))
    for name, count in (("train.bin", 1 << 16), ("val.bin", 1 << 12)):
        with open(os.path.join(sys.argv[1], sub, name), "wb") as f:
            f.write(struct.pack("<256i", 20240520, 1, count, *([0] * 253)))
            f.write(rng.integers(0, vocab, count, dtype=np.uint16).astype("<u2").tobytes())
PY

echo "clip: $clip; load before: $(uptime)"
for r in $(seq "$repeats"); do
    "$BUILD/bin/tsr-gemm-bench" --sizes 768,1024 --device host --json > "$d/gemm.$r.json"
    for m in $(echo "$models" | tr , ' '); do
        case $m in gpt-mini) data=$d/v256 ;; *) data=$d/v50257 ;; esac
        for p in $(echo "$precision" | tr , ' '); do
            for n in 1 $((steps + 1)); do
                "$BUILD/bin/tsr-train" --model "$m" --data "$data" --context "$context" --batch "$batch" --steps "$n" \
                    --optimizer adamw --lr 1e-3 --weight-decay 0.1 --clip-grad "$clip" --val-windows 1 \
                    --precision "$p" --json --quiet > "$d/tsr.$m.$p.$r.$n.json" 2> "$d/tsr.err" ||
                    { cat "$d/tsr.err" >&2; exit 1; }
            done
            "$PYTHON" "$here/gpt_torch_speed.py" --models "$m" --batch "$batch" --tokens "$context" --threads "$threads" \
                --steps "$steps" --warmup 1 --precision "$p" --clip "$clip" --json > "$d/torch.$m.$p.$r.json"
            echo "repeat $r $m $p: done ($(uptime | sed 's/.*load/load/'))"
        done
    done
    # again after the repeat: the faster of the two (a neighbour's load lowers either)
    "$BUILD/bin/tsr-gemm-bench" --sizes 768,1024 --device host --json >> "$d/gemm.$r.json"
done
echo "load after: $(uptime)"

"$PYTHON" - "$d" "$models" "$repeats" "$steps" "$threads" "$precision" << 'PY'
import glob, json, statistics, sys
d, models, repeats, steps, threads = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), \
    int(sys.argv[4]), int(sys.argv[5])
precisions = sys.argv[6].split(",")
best = []
for r in range(1, repeats + 1):
    gemm = [json.loads(l) for l in open("%s/gemm.%d.json" % (d, r)) if l.strip()]
    best.append(max(g["gflops"] for g in gemm if g["device"] == "host" and g["ok"]))
sgemm = statistics.median(best)
print("host SGEMM (tsr-gemm-bench, best of 768/1024 before and after each repeat): median %.1f GFLOP/s (%.1f-%.1f)"
      % (sgemm, min(best), max(best)))
print("%-9s %-5s %-8s %10s %16s %10s %10s" % ("model", "prec", "side", "params", "step s (spread)",
                                               "tokens/s", "of SGEMM"))
for m in models:
    tessera_med = {}
    for p in precisions:
        tp = [json.load(open("%s/torch.%s.%s.%d.json" % (d, m, p, r))) for r in range(1, repeats + 1)]
        flops = tp[0]["matmul_gflop_per_s"] * tp[0]["step_s"] * 1e9  # the step's matrix FLOPs
        tokens = tp[0]["batch"] * tp[0]["tokens"]
        ts = []
        for r in range(1, repeats + 1):
            a = json.load(open("%s/tsr.%s.%s.%d.1.json" % (d, m, p, r)))
            b = json.load(open("%s/tsr.%s.%s.%d.%d.json" % (d, m, p, r, steps + 1)))
            ts.append((b["train_seconds"] - a["train_seconds"]) / steps)
            params = b["params"]
        rows = {"tessera": ts, "pytorch": [t["step_s"] for t in tp]}
        for side, v in rows.items():
            med = statistics.median(v)
            print("%-9s %-5s %-8s %10d %7.3f (%.3f-%.3f) %10.1f %9.1f%%"
                  % (m, p, side, params if side == "tessera" else tp[0]["params"], med, min(v), max(v),
                     tokens / med, 100 * flops / med / 1e9 / sgemm))
        tessera_med[p] = statistics.median(rows["tessera"])
        print("%-9s %-5s tessera/pytorch speed: %.2fx" % (m, p, statistics.median(rows["pytorch"])
                                                          / tessera_med[p]))
    for p in precisions[1:]:
        print("%-9s tessera %s/%s speed: %.2fx" % (m, p, precisions[0],
                                                   tessera_med[precisions[0]] / tessera_med[p]))
PY
