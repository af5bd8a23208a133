#!/bin/sh
# The 3D planner's predicted step time against the measured one (issue 13), on this machine
# seen as two single-core devices: the topology of `tsr-topo --json` with its host device
# split in two (one core each, the SGEMM rates of one thread measured now by tsr-gemm-bench;
# the OpenCL device, the same cores again, left out). For each layout of MODEL at batch B x T:
# `tsr-plan --tensor K --pipeline P --data D` predicts a step; `mpiexec -n 2 tsr-train` runs
# that layout with one thread per rank (the plan's micro-batches for a pipeline), and its step
# time is (train_seconds of a 1+STEPS-step run minus that of a 1-step run) / STEPS. One
# process on one core (tensor 1 x pipeline 1 x data 1) is the reference row.
#
#   sh bench/plan_check.sh [--model gpt2] [--batch 4] [--context 64] [--steps 3]
#
# Prints one row per layout: predicted, measured, measured / predicted. Load (uptime) before
# and after: the host is shared. Env: BUILD.
set -eu
BUILD=${BUILD:-build}
model=gpt2 batch=4 context=64 steps=3
while [ $# -gt 0 ]; do
    case $1 in
    --model) model=$2 ;;
    --batch) batch=$2 ;;
    --context) context=$2 ;;
    --steps) steps=$2 ;;
    *) echo "plan_check.sh: unknown option $1 (--model, --batch, --context, --steps)" >&2; exit 2 ;;
    esac
    shift 2
done
d=$(mktemp -d /tmp/tsr-plan-check.XXXXXX)
trap 'rm -rf "$d"' EXIT
echo "load before: $(uptime)"
python3 - "$d/data" << 'PY'
import os, struct, sys, random
os.makedirs(sys.argv[1], exist_ok=True)
rng = random.Random(20240520)
for name, n in (("train.bin", 200000), ("val.bin", 20000)):
    head = [20240520, 1, n] + [0] * 253
    with open(os.path.join(sys.argv[1], name), "wb") as f:
        f.write(struct.pack("<256i", *head))
        f.write(struct.pack("<%dH" % n, *(rng.randrange(256) for _ in range(n))))
PY
"$BUILD/bin/tsr-topo" --json --no-calibrate > "$d/topo.json"
TSR_HOST_THREADS=1 "$BUILD/bin/tsr-gemm-bench" --device host --sizes 128,256,512,1024 --json \
    > "$d/gemm.json" 2> /dev/null
python3 - "$d/topo.json" "$d/gemm.json" "$d/two.json" << 'PY'
import json, sys
t = json.load(open(sys.argv[1]))
rates = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
host = [x for x in t["devices"] if x["backend"] == "host"][0]
devs = []
for i in range(2):
    x = dict(host)
    x["id"] = "host" if i == 0 else "host1"
    x["compute_units"] = 1
    x["cpuset"] = str(i)
    x.pop("same_as", None)
    c = dict(x["capability"])
    c["peak_gflops"] = c["peak_gflops"] / 2
    c["gemm"] = [{"n": r["n"], "gflops": r["gflops"]} for r in rates]
    c["gemm_gflops"] = max(r["gflops"] for r in rates)
    x["capability"] = c
    devs.append(x)
t["devices"] = devs
json.dump(t, open(sys.argv[3], "w"), indent=1)
PY
common="--model $model --data $d/data --context $context --batch $batch --val-windows 2 --json --quiet"
export TSR_HOST_THREADS=1 OMP_NUM_THREADS=1
# step_time NAME LAUNCH OPTIONS: the mean step after the first, from two runs
step_time() {
    $2 "$BUILD/bin/tsr-train" $common $3 --steps 1 > "$d/$1.1.json" 2> /dev/null
    $2 "$BUILD/bin/tsr-train" $common $3 --steps $((steps + 1)) > "$d/$1.n.json" 2> /dev/null
    python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); print((b["train_seconds"]-a["train_seconds"])/int(sys.argv[3]))' \
        "$d/$1.1.json" "$d/$1.n.json" "$steps"
}
printf '%-28s %12s %12s %10s\n' "layout (t x p x d)" "predicted s" "measured s" "meas/pred"
for layout in "1 1 1" "1 1 2" "2 1 1" "1 2 1"; do
    set -- $layout
    t=$1 p=$2 dd=$3
    plan=$("$BUILD/bin/tsr-plan" --model "$model" --context "$context" --batch "$batch" \
        --topology "$d/two.json" --tensor "$t" --pipeline "$p" --data "$dd" 2>&1)
    pred=$(echo "$plan" | sed -n 's/^predicted step \([0-9.e-]*\) s.*/\1/p')
    mbs=$(echo "$plan" | sed -n 's/^layout: .*, \([0-9]*\) micro-batch.*/\1/p')
    case "$t $p $dd" in
    "1 1 1") meas=$(step_time single "" "") ;;
    "1 1 2") meas=$(step_time data "mpiexec -n 2" "--mode data") ;;
    "2 1 1") meas=$(step_time tp "mpiexec -n 2" "--tp 2") ;;
    "1 2 1") meas=$(step_time pipe "mpiexec -n 2" "--mode pipeline --microbatches $mbs") ;;
    esac
    python3 -c 'import sys; p, m = float(sys.argv[2]), float(sys.argv[3]); print("%-28s %12.3f %12.3f %10.2f" % (sys.argv[1], p, m, m / p))' \
        "$t x $p x $dd ($mbs micro-batch)" "$pred" "$meas"
done
echo "load after: $(uptime)"
