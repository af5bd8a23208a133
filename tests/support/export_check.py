#!/usr/bin/env python3
"""Checks a tsr-export file against tessera's own figures. Reads it with the stdlib reader
(safetensors_ref.py) and normalises the test images of DIR as its metadata says. An MLP (the
nn.Sequential its metadata names holds only Flatten, Linear, ReLU, Dropout) is run without
PyTorch, in plain Python arithmetic in double precision, and its mean cross-entropy and accuracy
compared with tsr-train's. Where PyTorch is importable, the file is also loaded into that
nn.Sequential with a strict load_state_dict (any model: convolutions too) and its loss compared;
otherwise that part says it was skipped.

  export_check.py FILE DIR TEST_LOSS TEST_ACCURACY
Exit 0 when every figure agrees (relative 1e-5 for the losses), 1 otherwise."""
import json
import math
import os
import re
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_ref  # noqa: E402


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def read_idx(path):
    data = open(path, "rb").read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return shape, data[4 + 4 * dims:]


def main():
    path, folder, want_loss, want_acc = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    tensors, meta, _ = safetensors_ref.read(open(path, "rb").read())
    assert meta["format"] == "pt", meta
    module = meta["pytorch_module"]
    (n, h, w), pixels = read_idx(os.path.join(folder, "t10k-images-idx3-ubyte"))
    _, labels = read_idx(os.path.join(folder, "t10k-labels-idx1-ubyte"))
    assert meta["input_shape"] == "[1, %d, %d]" % (h, w), meta["input_shape"]
    # tessera's normalisation in float32: pixel / 255, then (x - mean) * (1 / std)
    mean, inv = f32(float(meta["input_mean"])), f32(1.0 / f32(float(meta["input_std"])))
    images = [[f32((f32(pixels[i * h * w + k] / 255.0) - mean) * inv) for k in range(h * w)]
              for i in range(n)]

    # the modules, in order; parameters by state_dict name
    mods = re.findall(r"nn\.(\w+)\(([^()]*)\)", module[len("nn.Sequential("):-1])
    params, shapes = {}, {}
    for name, (dtype, shape, raw) in tensors.items():
        shapes[name] = shape
        assert dtype == "F32", (name, dtype)
        vals = struct.unpack("<%df" % math.prod(shape), raw)
        params[name] = [vals[r * shape[1]:(r + 1) * shape[1]] for r in range(shape[0])] \
            if len(shape) == 2 else list(vals)
    used = set()

    def forward(x):
        for i, (kind, args) in enumerate(mods):
            if kind in ("Flatten", "Dropout"):  # evaluation: dropout passes through
                pass  # one image is already a flat list
            elif kind == "ReLU":
                x = [v if v > 0 else 0.0 for v in x]
            elif kind == "Linear":
                wt, b = params["%d.weight" % i], params["%d.bias" % i]
                used.update(("%d.weight" % i, "%d.bias" % i))
                assert [len(wt), len(wt[0])] == [int(a) for a in args.split(",")][::-1]
                x = [sum(a * c for a, c in zip(row, x)) + bias for row, bias in zip(wt, b)]
            else:
                raise SystemExit("export_check.py: module nn.%s is not an MLP's" % kind)
        return x

    ok = True
    if any(kind not in ("Flatten", "Linear", "ReLU", "Dropout") for kind, _ in mods):
        print("python (no torch): %s is not an MLP: only PyTorch checks it" % meta["tessera_model"])
        return torch_check(module, params, shapes, images, labels, (n, h, w), want_loss, ok)
    loss, right = 0.0, 0
    for img, label in zip(images, labels):
        z = forward(img)
        top = max(z)
        lse = top + math.log(sum(math.exp(v - top) for v in z))
        loss += lse - z[label]
        right += z.index(top) == label
    loss /= n
    assert used == set(params), "tensors no module used: %s" % (set(params) - used)
    ok = abs(loss - want_loss) <= 1e-5 * abs(want_loss) and right / n == want_acc
    print("python (no torch): test loss %.9f accuracy %.6f; tsr-train: %.9f %.6f: %s"
          % (loss, right / n, want_loss, want_acc, "same" if ok else "DIFFERENT"))
    return torch_check(module, params, shapes, images, labels, (n, h, w), want_loss, ok)


def torch_check(module, params, shapes, images, labels, nhw, want_loss, ok):
    n, h, w = nhw
    try:
        import torch
        from torch import nn
    except ImportError:
        print("SKIP (part): PyTorch is not installed: load_state_dict comparison skipped")
        return 0 if ok else 1
    net = eval(module, {"nn": nn})
    state = {k: torch.tensor(v, dtype=torch.float32).reshape(shapes[k]) for k, v in params.items()}
    net.load_state_dict(state, strict=True)
    net.eval()
    x = torch.tensor(images, dtype=torch.float32).reshape(n, 1, h, w)
    with torch.no_grad():
        t_loss = nn.functional.cross_entropy(net(x), torch.tensor(list(labels))).item()
    t_ok = abs(t_loss - want_loss) <= 1e-5 * abs(want_loss)
    print("pytorch %s: nn.Sequential load_state_dict(strict=True), test loss %.9f: %s"
          % (torch.__version__, t_loss, "same" if t_ok else "DIFFERENT"))
    return 0 if ok and t_ok else 1


if __name__ == "__main__":
    sys.exit(main())
