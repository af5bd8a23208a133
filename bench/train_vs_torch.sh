#!/bin/sh
# Side-by-side training throughput: tessera (tsr-train) vs PyTorch CPU, same model, batch,
# thread count and data. Needs python3-torch (Debian) and a built build/bin/tsr-train.
#   sh bench/train_vs_torch.sh [--models mlp,cnn] [--epochs 1] [--threads 2] [--limit N]
here=$(dirname "$0")
BUILD=${BUILD:-build}
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "train_vs_torch: PyTorch missing: apt-get install -y python3-torch" >&2
    exit 1
fi
[ -x "$BUILD/bin/tsr-train" ] || { echo "train_vs_torch: build $BUILD/bin/tsr-train first (make samples)" >&2; exit 1; }
exec /usr/bin/python3 "$here/train_vs_torch.py" --tsr-train "$BUILD/bin/tsr-train" "$@"
