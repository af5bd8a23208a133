#!/usr/bin/python3
"""The PyTorch side of bench/shakespeare.sh: bench/gpt_reference.py's GPT trained on llm.c
token files with the settings tsr-train is given, and its validation loss over the same
sequential windows tsr-train evaluates (window w starts at w x context; the last, short one
included, so every validation token after the first is predicted once).

    /usr/bin/python3 bench/shakespeare_torch.py DATADIR [--layers 4] [--heads 4]
        [--channels 128] [--context 64] [--batch 12] [--steps 2000] [--lr 1e-3]
        [--weight-decay 0.1] [--warmup 100] [--min-lr 0] [--beta2 0.999] [--clip 0]
        [--decay-all | --decay-matrices] [--threads 2] [--seed 1]

Defaults are tessera's AdamW as tsr-train runs it (beta2 0.999, weight decay on every tensor,
cosine to 0 after the warm-up, no clipping); --nanogpt sets nanoGPT's shakespeare_char values
instead (beta2 0.99, min lr 1e-4, clipping at norm 1, decay of matrices only). Initialisation
is nanoGPT's (normal 0.02, c_proj 0.02/sqrt(2 layers), biases 0, layer norms 1 and 0); training
windows are drawn uniformly at random, as nanoGPT's get_batch. Prints one JSON line.
"""
import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see gpt_torch_speed.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.dont_write_bytecode = True
from gpt_reference import GPT, read_tokens  # noqa: E402


def nanogpt_init(model, layers):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("ln_f."):
                p.fill_(1.0 if name.endswith(".weight") else 0.0)
            elif name.endswith(".bias"):
                p.zero_()
            elif name.endswith("c_proj.weight"):
                p.normal_(0.0, 0.02 / math.sqrt(2 * layers))
            else:
                p.normal_(0.0, 0.02)


def lr_at(step, a):
    """Linear warm-up over --warmup steps, then cosine from lr to --min-lr at the last step
    (tessera's schedule: lr x (t + 1) / warmup during warm-up)."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    total = max(a.steps - a.warmup, 1)
    t = min(step - a.warmup, total)
    return a.min_lr + (a.lr - a.min_lr) * 0.5 * (1 + math.cos(math.pi * t / total))


def validation_loss(model, ids, context):
    starts = list(range(0, len(ids) - 1, context))
    full = [s for s in starts if s + context + 1 <= len(ids)]
    total, positions = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(full), 64):
            x = torch.from_numpy(np.stack([ids[s:s + context + 1] for s in full[i:i + 64]]))
            logits, _ = model(x[:, :-1])
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                     reduction="sum").item()
            positions += x[:, 1:].numel()
        if len(full) < len(starts):  # the last, short window
            x = torch.from_numpy(ids[starts[-1]:])[None]
            logits, _ = model(x[:, :-1])
            total += F.cross_entropy(logits[0], x[0, 1:], reduction="sum").item()
            positions += x.shape[1] - 1
    return total / positions


def nanogpt_estimates(model, ids, context, batch, seed, draws=20, iters=20):
    """nanoGPT's estimate_loss as its CPU command runs it (--eval_iters=20): the mean loss of
    `iters` batches of `batch` random windows; `draws` such estimates from independent windows
    show how far one of them strays from the loss over the whole split."""
    g = torch.Generator().manual_seed(seed + 7919)
    t = torch.from_numpy(ids)
    out = []
    with torch.no_grad():
        for _ in range(draws):
            total = 0.0
            for _ in range(iters):
                s = torch.randint(len(ids) - context - 1, (batch,), generator=g)
                x = torch.stack([t[i:i + context + 1] for i in s.tolist()])
                _, loss = model(x[:, :-1], x[:, 1:])
                total += loss.item()
            out.append(total / iters)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data")
    for name, kind, default in (("layers", int, 4), ("heads", int, 4), ("channels", int, 128),
                                ("context", int, 64), ("batch", int, 12), ("steps", int, 2000),
                                ("lr", float, 1e-3), ("weight-decay", float, 0.1),
                                ("warmup", int, 100), ("min-lr", float, 0.0),
                                ("beta2", float, 0.999), ("clip", float, 0.0),
                                ("threads", int, 2), ("seed", int, 1)):
        p.add_argument("--" + name, type=kind, default=default)
    p.add_argument("--decay-matrices", action="store_true",
                   help="weight decay on 2-D tensors only (nanoGPT); default every tensor")
    p.add_argument("--nanogpt", action="store_true",
                   help="nanoGPT's shakespeare_char optimiser settings")
    a = p.parse_args()
    if a.nanogpt:
        a.beta2, a.min_lr, a.clip, a.decay_matrices = 0.99, 1e-4, 1.0, True
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train = read_tokens(os.path.join(a.data, "train.bin"))
    val = read_tokens(os.path.join(a.data, "val.bin"))
    model = GPT(a.layers, a.heads, a.channels, a.context, 256)
    nanogpt_init(model, a.layers)
    params = list(model.named_parameters())
    decay = [q for n, q in params if q.dim() >= 2 or not a.decay_matrices]
    rest = [q for n, q in params if q.dim() < 2 and a.decay_matrices]
    groups = [{"params": decay, "weight_decay": a.weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, a.beta2), eps=1e-8)
    g = torch.Generator().manual_seed(a.seed)
    train_t = torch.from_numpy(train)
    start = time.perf_counter()
    window, grad_norm = [], None
    for step in range(a.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, a)
        s = torch.randint(len(train) - a.context - 1, (a.batch,), generator=g)
        x = torch.stack([train_t[i:i + a.context + 1] for i in s.tolist()])
        _, loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.clip > 0:  # the pre-clip norm, as tsr-train's grad_norm
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip).item()
        opt.step()
        window.append(loss.item())
    train_s = time.perf_counter() - start
    model.eval()
    val_loss = validation_loss(model, val, a.context)
    est = nanogpt_estimates(model, val, a.context, a.batch, a.seed)
    mean = sum(est) / len(est)
    std = math.sqrt(sum((e - mean) ** 2 for e in est) / (len(est) - 1))
    print(json.dumps({"side": "pytorch", "torch": torch.__version__, "threads": a.threads,
                      "steps": a.steps, "val_loss": round(val_loss, 4),
                      "final_loss": round(sum(window) / len(window), 4),  # tsr-train's: mean since the last evaluation
                      "train_seconds": round(train_s, 1),
                      "tokens_per_s": round(a.steps * a.batch * a.context / train_s, 1),
                      "grad_norm": grad_norm,
                      # nanoGPT's own figure: 20 batches of random windows; 20 such estimates
                      "nanogpt_val_estimates": {"mean": round(mean, 4), "std": round(std, 4),
                                                "min": round(min(est), 4), "max": round(max(est), 4)},
                      "settings": {k: getattr(a, k) for k in ("lr", "weight_decay", "warmup",
                                                             "min_lr", "beta2", "clip",
                                                             "decay_matrices")}}))


if __name__ == "__main__":
    main()
