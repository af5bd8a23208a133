#!/bin/sh
# A tessera-trained GPT loads into PyTorch with the same validation loss (issue 12): gpt-mini
# trains 30 steps (context 32, batch 8) on the fortunes corpus, tsr-export writes its
# checkpoint under Hugging Face GPT-2 names, and bench/gpt_reference.py --val (PyTorch's GPT-2,
# the model the parity reference is written from) recomputes the loss on the first 64
# validation windows, the windows tsr-train's --val-windows 64 evaluates (window w starts at
# w x 32). The two must agree within 1e-4 (absolute: float32 sums in another order); and a
# file whose first block's attention weights are perturbed must not (the comparison can fail).
# Needs python3-torch (make deps): /usr/bin/python3 (Debian's) or python3 must import torch.
# Env: BUILD.
set -u
BUILD=${BUILD:-build}
. "$(dirname "$0")/../support/prereq.sh"
corpus=/usr/share/games/fortunes
[ -f "$corpus/fortunes" ] || skip "missing $corpus/fortunes (Debian package fortunes-min)"
py=""
for p in /usr/bin/python3 python3; do
    if "$p" -c "import torch" 2> /dev/null; then py=$p; break; fi
done
# `make deps` installs it: `make test` fails rather than skip this check quietly
[ -n "$py" ] || skip "missing python3-torch (Debian package; make deps installs it)"
ref=$(dirname "$0")/../../bench/gpt_reference.py
d=$(mktemp -d /tmp/tsr-lm-export.XXXXXX)
trap 'rm -rf "$d"' EXIT
"$BUILD/bin/tsr-tokenize" --bytes "$corpus/fortunes" "$d/data" > /dev/null || { echo "FAIL: tokenize"; exit 1; }
timeout 300 "$BUILD/bin/tsr-train" --model gpt-mini --data "$d/data" --context 32 --batch 8 --steps 30 \
    --val-windows 64 --checkpoint "$d/ck.bin" --json --quiet > "$d/train.json" 2> "$d/train.err" ||
    { echo "FAIL: train"; cat "$d/train.err"; exit 1; }
"$BUILD/bin/tsr-export" "$d/ck.bin" "$d/model.safetensors" > "$d/export.out" 2>&1 ||
    { echo "FAIL: export"; cat "$d/export.out"; exit 1; }
timeout 300 "$py" "$ref" --val "$d/model.safetensors" "$d/data/val.bin" --context 32 --batch 8 --max-batches 8 \
    > "$d/torch.json" 2> "$d/torch.err" || { echo "FAIL: PyTorch --val"; cat "$d/torch.err"; exit 1; }
echo "tessera: $(cat "$d/train.json")"
echo "pytorch: $(cat "$d/torch.json")"
"$py" - "$d" << 'PY' || exit 1
import json, sys
d = sys.argv[1]
t, p = json.load(open(d + "/train.json")), json.load(open(d + "/torch.json"))
assert p["positions"] == 64 * 32, f"PyTorch scored {p['positions']} positions, not 64 windows of 32"
assert t["val_loss"] < 5.0, f"val loss {t['val_loss']}: gpt-mini did not learn (ln 256 = 5.55)"
diff = abs(t["val_loss"] - p["val_loss"])
assert diff <= 1e-4, f"tessera val loss {t['val_loss']} vs PyTorch {p['val_loss']}: {diff:.2e} > 1e-4"
print(f"val loss: tessera {t['val_loss']:.6f}, PyTorch {p['val_loss']:.6f}, |diff| {diff:.1e}")
PY
# the same check on a perturbed copy fails: the comparison sees the weights
"$py" - "$ref" "$d/model.safetensors" "$d/bad.safetensors" << 'PY' || { echo "FAIL: perturb"; exit 1; }
import os, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
sys.dont_write_bytecode = True
from gpt_reference import read_safetensors, write_safetensors
tensors, meta, order = read_safetensors(sys.argv[2])
tensors = {n: a.copy() for n, a in tensors.items()}
tensors["h.0.attn.c_attn.weight"] *= 1.5
write_safetensors(sys.argv[3], [(n, tensors[n]) for n in order], meta)
PY
"$py" "$ref" --val "$d/bad.safetensors" "$d/data/val.bin" --context 32 --batch 8 --max-batches 8 > "$d/bad.json" ||
    { echo "FAIL: PyTorch --val on the perturbed file"; exit 1; }
"$py" - "$d" << 'PY' || exit 1
import json, sys
d = sys.argv[1]
t, b = json.load(open(d + "/train.json")), json.load(open(d + "/bad.json"))
assert abs(t["val_loss"] - b["val_loss"]) > 1e-3, f"perturbed weights gave the same loss {b['val_loss']}"
PY
# a vocabulary other than 256 (tsr-export infers it from the parameter count): 300 rows of wte
timeout 120 "$BUILD/bin/tsr-train" --model 'gpt(layers=1,heads=2,channels=16,context=32,vocab=300)' --data "$d/data" \
    --context 16 --batch 2 --steps 2 --val-windows 4 --checkpoint "$d/v300.bin" --json --quiet > "$d/v300.json" 2>&1 ||
    { echo "FAIL: train vocab 300"; cat "$d/v300.json"; exit 1; }
"$BUILD/bin/tsr-export" "$d/v300.bin" "$d/v300.safetensors" > "$d/v300.out" 2>&1 || { echo "FAIL: export vocab 300"; cat "$d/v300.out"; exit 1; }
"$py" "$ref" --val "$d/v300.safetensors" "$d/data/val.bin" --context 16 --max-batches 1 > "$d/v300.val" ||
    { echo "FAIL: PyTorch --val vocab 300"; exit 1; }
grep -q '"vocab": 300, .*"n_ctx": 32\|"n_ctx": 32, "vocab": 300' "$d/v300.val" || { echo "FAIL: vocab 300: $(cat "$d/v300.val")"; exit 1; }
echo "ok"
