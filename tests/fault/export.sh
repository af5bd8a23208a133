#!/bin/sh
# tsr-export and tsr-train --init (issue 12, weights interchange): an mlp trained one epoch on a
# slice of Fashion-MNIST, exported, gives tsr-train's test loss and accuracy when the file is
# evaluated by tests/support/export_check.py (stdlib reader, plain Python arithmetic; and,
# where PyTorch is installed, an nn.Sequential with load_state_dict(strict=True)); so does the
# cnn, in PyTorch only (reported as skipped without it). The mlp's file then initialises
# tsr-train (also as BF16); a model it does not fit, a residual add and --init with --resume
# are refused naming what is wrong.
# Env: BUILD, TSR_TEST_PYTHON (an interpreter to try for PyTorch before python3 and Debian's
# /usr/bin/python3, which python3-torch installs into).
set -u
BUILD=${BUILD:-build}
. "$(dirname "$0")/../support/prereq.sh"
fmnist_workdir 512 128
train() { "$BUILD/bin/tsr-train" --data "$d" --quiet --epochs 1 "$@"; }
fail() { echo "FAIL: $*"; sed 's/^/  | /' "$d/err"; exit 1; }
field() { python3 -c 'import json,sys; print(repr(json.load(sys.stdin)[sys.argv[1]]))' "$1" < "$d/out"; }

# the first interpreter that imports torch, else python3 (whose check then skips that part)
py=python3
for p in ${TSR_TEST_PYTHON:-} python3 /usr/bin/python3; do
    if "$p" -c "import torch" 2> /dev/null; then py=$p; break; fi
done
for model in cnn mlp; do # the mlp's run is the one the rest of the test uses
    train --model $model --json --checkpoint "$d/ck" > "$d/out" 2> "$d/err" || fail "training the $model"
    "$BUILD/bin/tsr-export" "$d/ck" "$d/$model.safetensors" 2> "$d/err" || fail "tsr-export ($model)"
    "$py" tests/support/export_check.py "$d/$model.safetensors" "$d" "$(field test_loss)" \
        "$(field test_accuracy)" > "$d/err" 2>&1 || fail "the exported $model's figures"
    sed "s/^/$model: /" "$d/err"
done

# the file initialises a run, as F32 and as BF16 (widened exactly by the reader); an epoch
# from the trained weights ends below the first run's training loss
python3 - "$d/mlp.safetensors" "$d/bf16.safetensors" <<'EOF' || exit 1
import struct, sys
sys.path.insert(0, "tests/support")
import safetensors_ref
tensors, meta, _ = safetensors_ref.read(open(sys.argv[1], "rb").read())
out = {}
for name, (dtype, shape, raw) in tensors.items():
    words = struct.unpack("<%dI" % (len(raw) // 4), raw)
    out[name] = ("BF16", shape, struct.pack("<%dH" % len(words), *(w >> 16 for w in words)))
open(sys.argv[2], "wb").write(safetensors_ref.serialize(out, meta))
EOF
first=$(field final_loss)
for f in mlp bf16; do
    train --json --init "$d/$f.safetensors" > "$d/out" 2> "$d/err" || fail "--init $f.safetensors"
    python3 -c "import sys; sys.exit(not $(field final_loss) < $first)" ||
        fail "--init $f.safetensors: training loss $(field final_loss), not below $first"
done

# refusals, each naming what is wrong
refused() { # WHAT EXPECTED-TEXT COMMAND...
    what=$1 text=$2
    shift 2
    "$@" > "$d/out" 2> "$d/err" && fail "$what was accepted"
    grep -qF "$text" "$d/err" || fail "$what: the message does not say \"$text\""
}
refused "an mlp file for a cnn" "tensor '0.weight' is missing (layer 0's weight)" \
    train --model cnn --init "$d/mlp.safetensors"
refused "an mlp file for a narrower mlp" \
    "tensor '1.weight' has shape [256, 784], the model's is [64, 784]" \
    train --model dense:64,relu,dense:128,relu,dense:100,relu,dense:10 --init "$d/mlp.safetensors"
refused "--init with --resume" "option --init: cannot be combined with --resume" \
    train --init "$d/mlp.safetensors" --resume "$d/ck"
train --model dense:64,relu,dense:64,add:1,relu,dense:10 --checkpoint "$d/res" > /dev/null 2> "$d/err" ||
    fail "training a residual model"
refused "exporting a residual add" \
    "layer 3 (add:1): a residual add has no torch.nn.Sequential equivalent" \
    "$BUILD/bin/tsr-export" "$d/res" "$d/res.safetensors"
[ ! -e "$d/res.safetensors" ] || fail "a refused export left a file"
refused "exporting for another input" "parameters, but model" \
    "$BUILD/bin/tsr-export" "$d/ck" "$d/x.safetensors" --input 3x28x28
# the checkpoint records the input it was trained on: a model of 14x14 images exports without
# --input (the metadata's "input_shape" and "classes" are used)
mkdir "$d/small"
python3 - "$d" "$d/small" <<'PY' || exit 1
import struct, sys
src, dst = sys.argv[1:]
for split in ("train", "t10k"):
    raw = open("%s/%s-images-idx3-ubyte" % (src, split), "rb").read()
    n = struct.unpack(">I", raw[4:8])[0]
    px = raw[16:]
    out = bytearray(raw[:4] + struct.pack(">III", n, 14, 14))
    for i in range(n):
        img = px[i * 784:(i + 1) * 784]
        out += bytes(img[(2 * r) * 28 + 2 * c] for r in range(14) for c in range(14))
    open("%s/%s-images-idx3-ubyte" % (dst, split), "wb").write(out)
    lab = "%s/%s-labels-idx1-ubyte" % (src, split)
    open("%s/%s-labels-idx1-ubyte" % (dst, split), "wb").write(open(lab, "rb").read())
PY
"$BUILD/bin/tsr-train" --data "$d/small" --model "dense:32,relu,dense:10" --epochs 1 --quiet \
    --checkpoint "$d/small.ckpt" > /dev/null 2> "$d/err" || fail "training on 14x14 images"
"$BUILD/bin/tsr-export" "$d/small.ckpt" "$d/small.safetensors" 2> "$d/err" ||
    fail "tsr-export without --input of a 14x14 model"
"$BUILD/bin/tsr-safetensors" --json "$d/small.safetensors" > "$d/small.json" || fail "tsr-safetensors"
grep -q '"1.weight"' "$d/small.json" && grep -q '196' "$d/small.json" ||
    fail "the export is not the 14x14 model: $(cat "$d/small.json")"
echo "PASS: export"
