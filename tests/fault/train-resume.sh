#!/bin/sh
# Resuming tsr-train after kill -9 reproduces the uninterrupted run bitwise: 4 epochs straight
# vs the same command killed as soon as its first checkpoint exists, then --resume (Adam, cosine
# schedule, dropout: optimizer state, step count and RNG state all come back). The JSON figures
# (final loss, test loss and accuracy, 17 digits) must be equal. Env: BUILD.
set -u
BUILD=${BUILD:-build}
src=${TSR_DATA_DIR:-/usr/share/datasets/fashion-mnist}
command -v python3 > /dev/null || { echo "SKIP: no python3"; exit 0; }
[ -f "$src/train-images-idx3-ubyte.gz" ] || { echo "SKIP: no Fashion-MNIST in $src"; exit 0; }
d=$(mktemp -d /tmp/tsr-fault.XXXXXX)
trap 'rm -rf "$d"' EXIT
python3 - "$src" "$d" <<'PY' || exit 1
import gzip, struct, sys
src, dst = sys.argv[1:]
for split, n in (("train", 2048), ("t10k", 128)):
    for kind, rec in (("images-idx3", 784), ("labels-idx1", 1)):
        name = "%s-%s-ubyte" % (split, kind)
        raw = gzip.open("%s/%s.gz" % (src, name)).read()
        hdr = 16 if rec > 1 else 8
        open("%s/%s" % (dst, name), "wb").write(raw[:4] + struct.pack(">I", n) + raw[8:hdr] + raw[hdr:hdr + n * rec])
PY
run() { "$BUILD/bin/tsr-train" --data "$d" --model "dense:64,relu,dropout:0.2,dense:10" --batch 32 \
            --quiet --json "$@" 2> "$d/err" || { cat "$d/err"; echo "FAIL: tsr-train $*"; exit 1; }; }
run --epochs 4 > "$d/straight.json"
"$BUILD/bin/tsr-train" --data "$d" --model "dense:64,relu,dropout:0.2,dense:10" --batch 32 \
    --quiet --epochs 4 --checkpoint "$d/ck" > /dev/null 2>&1 &
pid=$!
i=0
while [ ! -f "$d/ck" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
kill -9 $pid
wait $pid
rc=$?
[ "$rc" = 137 ] || { echo "FAIL: the run was not killed mid-training (exit $rc)"; exit 1; }
echo "killed; its last checkpoint is at $("$BUILD/tests/fault/fault_train" --verify "$d/ck")"
run --epochs 4 --checkpoint "$d/ck" --resume "$d/ck" > "$d/resumed.json"
python3 - "$d" <<'PY'
import json, sys
d = sys.argv[1]
a = json.load(open(d + "/straight.json"))
b = json.load(open(d + "/resumed.json"))
for k in ("final_loss", "test_loss", "test_accuracy", "epochs"):
    assert a[k] == b[k], "%s: uninterrupted %r, resumed %r" % (k, a[k], b[k])
print("resumed run equals the uninterrupted one: final loss %r, test loss %r" % (b["final_loss"], b["test_loss"]))
PY
