#!/usr/bin/python3
"""PyTorch's training step time for GPT presets (forward, backward and AdamW on one batch),
the number tessera's GPT speed is put beside. The model is bench/gpt_reference.py's, which
the parity reference tests/ref/gpt_mini_ref.safetensors is written from.

    /usr/bin/python3 bench/gpt_torch_speed.py [--models gpt2,gpt-mini] [--batch 4]
        [--tokens 64] [--threads 2] [--steps 5] [--warmup 1] [--device cpu|cuda]
        [--precision fp32|bf16|fp16] [--json]

Prints per model: parameters, the median step time over --steps timed steps after --warmup
untimed ones, tokens/s (batch x tokens / step time), and the matmul GFLOP/s that implies. --precision bf16 or
fp16 runs the forward and the loss under torch.autocast (AMP: fp32 weights and optimizer), fp16
with a GradScaler, as PyTorch's users train in 16 bits.
"""
import argparse
import json
import os
import statistics
import sys
import time

# OpenMP threads that spin at barriers lose their core to any other busy process: on a shared
# 2-core host gpt-mini measured 2.8 s a step spinning and 0.063 s with passive waits. The
# environment's own setting wins; the header says which was used.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402  (after OMP_WAIT_POLICY: libgomp reads it once, at load)

sys.dont_write_bytecode = True  # no bench/__pycache__ left in the tree by the import below

from gpt_reference import ADAMW, CONFIGS, SEED, init_weights, make_model  # noqa: E402


def matmul_flops(cfg, batch, tokens):
    """Multiply-adds x 2 of one training step's matrix products: forward (the 12 C^2 weights
    of each block, the attention scores and weighted values, the tied head) and the backward's
    twice that. Layer norms, softmax, GELU and AdamW are left out."""
    c, layers, v = cfg["n_embd"], cfg["n_layer"], cfg["vocab"]
    forward = 2 * batch * tokens * (layers * 12 * c * c + v * c) \
        + 2 * 2 * batch * layers * tokens * tokens * c
    return 3 * forward


def time_model(name, batch, tokens, steps, warmup, device, precision="fp32", clip=0.0):
    cfg = CONFIGS[name]
    if tokens > cfg["n_ctx"]:
        sys.exit("--tokens %d exceeds %s's context %d" % (tokens, name, cfg["n_ctx"]))
    torch.manual_seed(SEED)
    model = make_model(name)
    init_weights(model, SEED)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), **ADAMW)
    data = torch.randint(0, cfg["vocab"], (batch, tokens + 1),
                         generator=torch.Generator().manual_seed(SEED)).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    scaler = torch.cuda.amp.GradScaler() if precision == "fp16" and kind == "cuda" else None
    times, losses = [], []
    for step in range(warmup + steps):
        sync()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(kind, dtype=half, enabled=half is not None):
            _, loss = model(data[:, :-1], data[:, 1:])
        if scaler:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        sync()
        if step >= warmup:
            times.append(time.perf_counter() - start)
        losses.append(loss.item())
    step_s = statistics.median(times)
    return {"model": name, "params": sum(p.numel() for p in model.parameters()),
            "batch": batch, "tokens": tokens, "precision": precision, "step_s": round(step_s, 4),
            "tokens_per_s": round(batch * tokens / step_s, 1),
            "matmul_gflop_per_s": round(matmul_flops(cfg, batch, tokens) / step_s / 1e9, 2),
            "steps_timed": steps, "first_loss": round(losses[0], 4),
            "last_loss": round(losses[-1], 4)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="gpt2,gpt-mini",
                   help="comma-separated presets of " + ", ".join(CONFIGS))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--clip", type=float, default=0.0,
                   help="clip the gradients' global norm to this before each step (0: off)")
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    a = p.parse_args()
    names = a.models.split(",")
    for n in names:
        if n not in CONFIGS:
            sys.exit("--models: %s is not one of %s" % (n, ", ".join(CONFIGS)))
    if min(a.batch, a.tokens, a.threads, a.steps) < 1 or a.warmup < 0:
        sys.exit("--batch, --tokens, --threads and --steps must be at least 1, --warmup 0")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device %s: this PyTorch (%s) sees no CUDA device"
                 % (a.device, torch.__version__))
    torch.set_num_threads(a.threads)
    if not a.json:
        print("PyTorch %s on %s, %d threads (OMP_WAIT_POLICY %s, load average %.1f on %d "
              "cores), AdamW lr %g, batch %d x %d tokens, %s, median of %d steps after %d warm-up"
              % (torch.__version__, a.device, a.threads, os.environ["OMP_WAIT_POLICY"],
                 os.getloadavg()[0], os.cpu_count(), ADAMW["lr"], a.batch, a.tokens, a.precision,
                 a.steps, a.warmup))
        print("%-12s %12s %10s %12s %14s" % ("model", "params", "step s", "tokens/s",
                                            "matmul GFLOP/s"))
    for n in names:
        r = time_model(n, a.batch, a.tokens, a.steps, a.warmup, a.device, a.precision, a.clip)
        r.update(threads=a.threads, device=a.device, torch=torch.__version__, clip=a.clip,
                 omp_wait_policy=os.environ["OMP_WAIT_POLICY"],
                 load_average=round(os.getloadavg()[0], 2))
        if a.json:
            print(json.dumps(r))
        else:
            print("%-12s %12d %10.4f %12.1f %14.2f" % (n, r["params"], r["step_s"],
                                                      r["tokens_per_s"],
                                                      r["matmul_gflop_per_s"]))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
