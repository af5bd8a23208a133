#!/usr/bin/python3
"""Trains the same models on the same data, batch, optimizer, schedule and thread count with
tessera (build/bin/tsr-train --json) and PyTorch (CPU, or CUDA with --torch-device cuda), one after the other in one run, and
prints samples/s of each, their ratio, and the test accuracies.

    /usr/bin/python3 bench/train_vs_torch.py --models mlp,cnn --epochs 1 --threads 2
"""
import argparse
import gzip
import json
import math
import os
import struct
import subprocess
import sys
import time

import numpy as np

MEAN, STD = 0.2860, 0.3530  # as tsr-train normalises


def load_idx(path):
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(d, stem):
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    sys.exit("missing %s in %s" % (stem, d))


def load_split(d, split, limit=None):
    x = load_idx(find(d, split + "-images-idx3-ubyte")).astype(np.float32) / 255.0
    y = load_idx(find(d, split + "-labels-idx1-ubyte")).astype(np.int64)
    if limit:
        x, y = x[:limit], y[:limit]
    return (x - MEAN) / STD, y


def torch_model(spec, torch):
    """Builds a torch.nn.Sequential from a tessera spec (the subset the presets use)."""
    presets = {"mlp": "dense:256,relu,dense:128,relu,dense:100,relu,dense:10",
               "cnn": "conv5x5:32,relu,pool2,conv5x5:64,relu,pool2,dense:1024,relu,dense:10"}
    spec = presets.get(spec, spec)
    nn = torch.nn
    layers, c, h, w, flat = [], 1, 28, 28, False
    for tok in spec.split(","):
        name, _, rest = tok.partition(":")
        if name == "dense":
            if not flat:
                layers.append(nn.Flatten())
                flat, c, h, w = True, c * h * w, 1, 1
            layers.append(nn.Linear(c, int(rest)))
            c = int(rest)
        elif name.startswith("conv"):
            k = int(name[4:].split("x")[0])
            f = int(rest.split("/")[0])
            layers.append(nn.Conv2d(c, f, k, padding=(k - 1) // 2))
            c = f
        elif name.startswith("pool"):
            k = int(name[4:])
            layers.append(nn.MaxPool2d(k))
            h, w = h // k, w // k
        elif name == "relu":
            layers.append(nn.ReLU())
        elif name.startswith("dropout"):
            layers.append(nn.Dropout(float(rest)))
        else:
            sys.exit("bench: layer %s not supported here" % tok)
    return nn.Sequential(*layers)


def run_torch(args, spec, train, test):
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.torch_device)
    # tessera computes in FP32: keep PyTorch off TF32 so both do the same arithmetic
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = torch_model(spec, torch).to(dev)
    xtr = torch.from_numpy(train[0]).reshape(-1, 1, 28, 28).to(dev)
    ytr = torch.from_numpy(train[1]).to(dev)
    xte = torch.from_numpy(test[0]).reshape(-1, 1, 28, 28).to(dev)
    yte = torch.from_numpy(test[1]).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps = args.epochs * math.ceil(len(ytr) / args.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
    g = torch.Generator().manual_seed(args.seed)
    train_time, done, last = 0.0, 0, float("nan")
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=g).to(dev)
        t0, total, nb = time.perf_counter(), 0.0, 0
        for i in range(0, len(ytr), args.batch):
            idx = perm[i:i + args.batch]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            nb += 1
        train_time += time.perf_counter() - t0
        done += len(ytr)
        last = total / nb
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(yte), 1000):
            correct += (model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
    return {"samples_per_s": done / train_time, "test_accuracy": correct / len(yte),
            "final_loss": last, "version": torch.__version__}


def run_tessera(args, spec):
    cmd = [args.tsr_train, "--model", spec, "--epochs", str(args.epochs), "--batch",
           str(args.batch), "--optimizer", "adam", "--lr", str(args.lr), "--schedule", "cosine",
           "--seed", str(args.seed), "--data", args.data, "--json", "--quiet"]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.device:
        cmd += ["--device", args.device]
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads), POCL_MAX_PTHREAD_COUNT=str(args.threads))
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def conv_bound(args, samples_per_s):
    """tsr-conv-bound's JSON: the cnn step's GEMMs timed at their shapes with OpenBLAS alone,
    and tessera's measured rate as a fraction of the SGEMM rate and of that bound."""
    cmd = [args.bound, "--batch", str(args.batch), "--threads", str(args.threads),
           "--samples-per-s", "%.3f" % samples_per_s, "--json"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="training samples (0: all)")
    ap.add_argument("--data", default=os.environ.get("TSR_DATA_DIR", "/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--tsr-train", default=os.path.join(
        here, "..", os.environ.get("BUILD", "build"), "bin", "tsr-train"))
    ap.add_argument("--device", default="", help="tessera device id or index (tsr-train --device)")
    ap.add_argument("--torch-device", default="cpu", help="PyTorch device: cpu or cuda")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each framework, alternated; the ratio is the median of the "
                         "pairs' ratios (a noisy machine moves both rates between runs)")
    ap.add_argument("--json", action="store_true", help="also print the rows as JSON")
    ap.add_argument("--bound", default=os.path.join(
        here, "..", os.environ.get("BUILD", "build"), "bin", "tsr-conv-bound"),
        help="tsr-conv-bound, run after a cnn row to put its rate against the SGEMM rate and the "
             "GEMM-shape bound ('' to skip)")
    args = ap.parse_args()
    train = load_split(args.data, "train", args.limit or None)
    test = load_split(args.data, "t10k")
    rows = []
    for spec in args.models.split(","):
        pairs = []
        for _ in range(max(1, args.repeat)):
            t = run_tessera(args, spec)
            p = run_torch(args, spec, train, test)
            pairs.append((t, p, t["samples_per_s"] / p["samples_per_s"]))
        pairs.sort(key=lambda q: q[2])
        t, p, ratio = pairs[(len(pairs) - 1) // 2]  # the median pair (the lower one of an even count)
        rows.append({"model": spec, "tessera": t["samples_per_s"], "torch": p["samples_per_s"],
                     "ratio": ratio, "ratios": [q[2] for q in pairs],
                     "tessera_acc": t["test_accuracy"], "torch_acc": p["test_accuracy"],
                     "torch_version": p["version"]})
    print("batch %d, %d thread(s), %d epoch(s), %s training samples, Adam lr %g, cosine; "
          "tessera device %s, torch device %s"
          % (args.batch, args.threads, args.epochs, args.limit or len(train[1]), args.lr,
             args.device or "0", args.torch_device))
    print("%-6s %14s %14s %7s %10s %10s" % ("model", "tessera smp/s", "torch smp/s", "ratio",
                                             "tsr acc", "torch acc"))
    for r in rows:
        print("%-6s %14.0f %14.0f %6.2fx %10.4f %10.4f%s" % (
            r["model"], r["tessera"], r["torch"], r["ratio"], r["tessera_acc"], r["torch_acc"],
            "   (median pair; ratios %s)" % " ".join("%.2f" % x for x in r["ratios"])
            if len(r["ratios"]) > 1 else ""))
    cnn = [r for r in rows if r["model"] == "cnn"]
    if cnn and args.bound and os.path.exists(args.bound) and not args.device:
        b = conv_bound(args, cnn[0]["tessera"])
        cnn[0]["bound"] = b
        print("cnn: %.2fx PyTorch (target >= 2x); %.1f GFLOP/s = %.2f of SGEMM 1024^3 %.1f GFLOP/s "
              "(target >= 0.75); %.2f of im2col + SGEMM's own bound (%.2f ms/step at the cnn's "
              "GEMM shapes, %.1f GFLOP/s, vs %.2f ms measured; a build with oneDNN runs its direct "
              "kernels for the passes the CPU has them for, which may pass that bound; "
              "TSR_HOST_SGEMM=onednn runs the dense layers on oneDNN's SGEMM)"
              % (cnn[0]["ratio"], b["tessera_gflops"], b["fraction_of_sgemm"], b["sgemm_1024_gflops"],
                 b["fraction_of_bound"], b["bound_step_ms"],
                 b["step_gflop"] / b["bound_step_ms"] * 1e3, b["tessera_step_ms"]))
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
