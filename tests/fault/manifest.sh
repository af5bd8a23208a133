#!/bin/sh
# Run manifest of tsr-train: trains 2 epochs on a 256-image MNIST-format subset of
# Fashion-MNIST with a checkpoint, then checks the manifest against independent references:
# SHA-256 of every data file and of the final checkpoint (Python's hashlib), the configuration,
# the device, the code version and the metrics tsr-train printed. Env: BUILD.
set -u
BUILD=${BUILD:-build}
. "$(dirname "$0")/../support/prereq.sh"
fmnist_workdir 256 128
"$BUILD/bin/tsr-train" --data "$d" --epochs 2 --batch 32 --seed 3 --checkpoint "$d/run.ckpt" \
    --quiet --json > "$d/result.json" 2> "$d/err" || { cat "$d/err"; echo "FAIL: tsr-train"; exit 1; }
python3 - "$d" <<'PY'
import hashlib, json, sys
d = sys.argv[1]
m = json.load(open(d + "/run.ckpt.manifest.json"))
r = json.load(open(d + "/result.json"))
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
assert m["format"] == "tessera-manifest" and m["version"] == 1, m.get("format")
assert m["code"]["version"] and m["code"]["git"], m["code"]
c = m["config"]
assert c["model"] == r["model"] and c["batch"] == 32 and c["epochs"] == 2 and c["seed"] == 3, c
assert c["checkpoint"] == d + "/run.ckpt" and c["checkpoint_epoch"] == 2, c
assert m["devices"][0]["id"] == r["device"], m["devices"]
files = {f["path"]: f for f in m["files"]}
names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte"]
for n in names:
    f = files.pop(d + "/" + n)
    assert f["role"] == "data" and f["sha256"] == sha(d + "/" + n), n
ck = files.pop(d + "/run.ckpt")
assert ck["role"] == "checkpoint" and ck["sha256"] == sha(d + "/run.ckpt"), ck
assert not files, files
met = m["metrics"]
assert met["test_accuracy"] == r["test_accuracy"] and met["final_loss"] == r["final_loss"], met
assert met["steps"] == 2 * (256 // 32) and met["skipped_steps"] == 0, met
print("manifest: %d data files and the checkpoint hash-checked, config and metrics match" % len(names))
PY
