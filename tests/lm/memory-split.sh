#!/bin/sh
# A GPT too large for one device trains when split over two (issues 13 and 14): this machine's
# topology (tsr-topo --json) with every device's memory cut to 3/4 of what one process of
# gpt(layers=4,heads=4,channels=256) needs at batch 4 x 64 with Adam (the figure its own
# refusal names, read from a run on a 1 MiB device). One process is refused before training,
# naming the device, the bytes needed and available and the way out (split the model);
# a 2-stage pipeline and a 2-way tensor-parallel run each fit their halves and train, with the
# figures of one unlimited process (relative 1e-5: the same windows, sums in another order).
# Env: BUILD.
set -u
BUILD=${BUILD:-build}
. "$(dirname "$0")/../support/prereq.sh"
need_mpi
need_python3
corpus=/usr/share/games/fortunes
[ -f "$corpus/fortunes" ] || skip "missing $corpus/fortunes (Debian package fortunes-min)"
train=$BUILD/bin/tsr-train
d=$(mktemp -d /tmp/tsr-lm-mem.XXXXXX)
trap 'rm -rf "$d"' EXIT
fail() { echo "FAIL: $*"; [ -f "$d/err" ] && sed 's/^/  | /' "$d/err"; exit 1; }
"$BUILD/bin/tsr-tokenize" --bytes "$corpus/fortunes" "$d/data" > /dev/null || fail "tokenize"
"$BUILD/bin/tsr-topo" --json --no-calibrate > "$d/topo.json" 2> "$d/err" || fail "tsr-topo --json"
# limit BYTES OUT: the topology with every device's memory (and largest allocation) at BYTES
limit() {
    python3 - "$d/topo.json" "$1" "$2" << 'PY'
import json, sys
t = json.load(open(sys.argv[1]))
cap = int(sys.argv[2])
for dev in t["devices"]:
    dev["global_mem_bytes"] = cap
    if "max_alloc_bytes" in dev:
        dev["max_alloc_bytes"] = min(dev["max_alloc_bytes"], cap)
json.dump(t, open(sys.argv[3], "w"))
PY
}
model='gpt(layers=4,heads=4,channels=256,context=64,vocab=256)'
common="--model $model --data $d/data --context 64 --batch 4 --steps 4 --val-windows 16 --json --quiet"

limit 1048576 "$d/tiny.json" || fail "writing the topology"
TSR_TOPOLOGY=$d/tiny.json "$train" $common > /dev/null 2> "$d/err" && fail "one process fit a 1 MiB device"
need=$(sed -n 's/.*it needs [0-9.]* [KMG]iB (\([0-9]*\) bytes.*/\1/p' "$d/err")
[ -n "$need" ] || fail "the refusal names no byte count"
cap=$((need * 3 / 4))
limit "$cap" "$d/topo.json.cut" || fail "writing the topology"
export TSR_TOPOLOGY="$d/topo.json.cut"

"$train" $common > /dev/null 2> "$d/err" && fail "one process trained on a device of 3/4 of its need"
grep -q "does not fit.*device host: it needs .* ($need bytes: parameters .*, [0-9.]* [KMG]iB is available: .*split the model over devices" "$d/err" ||
    fail "the refusal does not name the device, the $need bytes needed, the bytes available and the remedy"
echo "one process: refused, needs $need bytes, the devices have $cap"

timeout 300 mpiexec -n 2 "$train" --mode pipeline $common > "$d/pipe.json" 2> "$d/err" || fail "2-stage pipeline"
timeout 300 mpiexec -n 2 "$train" --tp 2 $common > "$d/tp.json" 2> "$d/err" || fail "--tp 2"
unset TSR_TOPOLOGY
timeout 300 "$train" $common > "$d/single.json" 2> "$d/err" || fail "one unlimited process"
python3 - "$d" << 'PY' || exit 1
import json, sys
d = sys.argv[1]
ref = json.load(open(d + "/single.json"))
for name in ("pipe", "tp"):
    got = json.load(open("%s/%s.json" % (d, name)))
    for k in ("final_loss", "val_loss"):
        if abs(got[k] - ref[k]) > 1e-5 * abs(ref[k]):
            sys.exit("FAIL: %s: %s %r, one process %r" % (name, k, got[k], ref[k]))
    print("%s: fits its half and trains: val loss %.6f (one unlimited process %.6f)"
          % (name, got["val_loss"], ref["val_loss"]))
PY
