#!/usr/bin/python3
"""The PyTorch side of tessera's GPT parity: a GPT-2 written as Hugging Face's GPT2Model /
nanoGPT's model.py, and the reference file tests/ref/gpt_mini_ref.safetensors it writes.

    /usr/bin/python3 bench/gpt_reference.py [--out tests/ref/gpt_mini_ref.safetensors]
        writes the reference (weights, batch, logits, loss, every gradient, 10 AdamW steps),
        reads it back, and measures float32 against float64 to state honest tolerances
    /usr/bin/python3 bench/gpt_reference.py --check tests/ref/gpt_mini_ref.safetensors
        reloads the file into the model and reproduces logits, loss, gradients and the steps
    /usr/bin/python3 bench/gpt_reference.py --val MODEL.safetensors TOKENS.bin [--heads N]
        validation loss of any GPT-2-shaped safetensors (tessera's export, Hugging Face's
        model.safetensors) on an llm.c token file

Needs only Debian's python3-torch (1.13) and python3-numpy; no network. tests/ref/README.md
explains every tensor of the file and the tolerances. bench/gpt_torch_speed.py times this model.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# Presets with OpenAI's shapes (the list); context = block size, vocab = token count.
CONFIGS = {
    "gpt-mini": dict(n_layer=4, n_head=4, n_embd=128, n_ctx=256, vocab=256),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, n_ctx=1024, vocab=50257),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, n_ctx=1024, vocab=50257),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, n_ctx=1024, vocab=50257),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, n_ctx=1024, vocab=50257),
}
LN_EPS = 1e-5
SEED = 20240520
B, T = 4, 64
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
STEPS = 10
# Tensors whose values after the 10 AdamW steps are stored (all of them would pass 8 MB):
# one of each kind: both embeddings, layer norms, the first block's attention, the last
# block's MLP output projection, ln_f.
AFTER_STEPS = ["wte.weight", "wpe.weight", "h.0.ln_1.", "h.0.attn.", "h.0.ln_2.",
               "h.3.mlp.c_proj.", "ln_f."]
# Opening of Jane Austen's Pride and Prejudice (1813, public domain): the batch is its bytes.
TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good "
        "fortune, must be in want of a wife.\n\nHowever little known the feelings or views of "
        "such a man may be on his first entering a neighbourhood, this truth is so well fixed "
        "in the minds of the surrounding families, that he is considered as the rightful "
        "property of some one or other of their daughters.\n")


# ---------------------------------------------------------------- the model

class Conv1D(nn.Module):
    """Hugging Face's GPT-2 linear: weight stored [in, out], y = x @ W + b."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.empty(n_out))

    def forward(self, x):
        y = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return y.view(*x.shape[:-1], -1)


class Attention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = Conv1D(n_embd, 3 * n_embd)
        self.c_proj = Conv1D(n_embd, n_embd)

    def forward(self, x):
        b, t, c = x.shape
        hd = c // self.n_head
        q, k, v = self.c_attn(x).split(c, dim=2)  # channels of c_attn's output: q | k | v
        q, k, v = (z.view(b, t, self.n_head, hd).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)  # heads side by side
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = Conv1D(n_embd, 4 * n_embd)
        self.c_proj = Conv1D(4 * n_embd, n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=LN_EPS)
        self.attn = Attention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd, eps=LN_EPS)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Parameter names are Hugging Face GPT-2's (wte.weight, h.0.attn.c_attn.weight, ...)."""

    def __init__(self, n_layer, n_head, n_embd, n_ctx, vocab):
        super().__init__()
        if n_embd % n_head:
            raise ValueError("n_embd %d is not a multiple of n_head %d" % (n_embd, n_head))
        self.config = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_ctx=n_ctx,
                           vocab=vocab)
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(n_ctx, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=LN_EPS)

    def forward(self, idx, targets=None):
        t = idx.shape[1]
        if t > self.config["n_ctx"]:
            raise ValueError("%d tokens exceed the context %d" % (t, self.config["n_ctx"]))
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # the head is tied to the token embedding
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss


def init_weights(model, seed):
    """nanoGPT's initialisation for matrices and embeddings: normal std 0.02, the residual
    projections (c_proj) 0.02/sqrt(2 n_layer). Unlike nanoGPT, biases and LayerNorm
    parameters are drawn too (bias N(0, 0.02), LayerNorm weight 1 + N(0, 0.1)) so that a
    reimplementation that ignored them could not match the forward and backward. Drawn in
    named_parameters order from one generator, so the seed alone fixes every value."""
    g = torch.Generator().manual_seed(seed)
    proj_std = 0.02 / math.sqrt(2 * model.config["n_layer"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("ln_f."):
                if name.endswith(".weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            elif name.endswith("c_proj.weight"):
                p.copy_(proj_std * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))


def make_model(name=None, **config):
    return GPT(**(CONFIGS[name] if name else config))


def deterministic(threads=1):
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- safetensors, by hand

DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "F16": np.dtype("<f2"),
          "I32": np.dtype("<i4"), "I64": np.dtype("<i8"), "U16": np.dtype("<u2"),
          "U8": np.dtype("u1"), "BF16": np.dtype("<u2")}  # BF16 widened to F32 on read
DTYPE_NAMES = {np.dtype("<f4"): "F32", np.dtype("<i4"): "I32"}


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, array) in file order; metadata: str -> str."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, a in tensors:
        a = np.ascontiguousarray(a)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        if a.dtype not in DTYPE_NAMES:
            raise ValueError("%s: dtype %s is not written" % (name, a.dtype))
        header[name] = {"dtype": DTYPE_NAMES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors pads
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def read_safetensors(path):
    """Returns ({name: array}, metadata, file order). Refuses what safetensors forbids."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        sys.exit("%s: %d bytes, shorter than the 8-byte header length" % (path, len(data)))
    n, = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        sys.exit("%s: header length %d runs past the file's %d bytes" % (path, n, len(data)))
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as e:
        sys.exit("%s: header is not JSON: %s" % (path, e))
    if not isinstance(header, dict):
        sys.exit("%s: header is not a JSON object" % path)
    body = memoryview(data)[8 + n:]
    metadata = header.pop("__metadata__", {}) or {}
    tensors, spans = {}, []
    for name, info in header.items():
        dt = info.get("dtype") if isinstance(info, dict) else None
        if dt not in DTYPES:
            sys.exit("%s: %s has dtype %r, not one of %s" % (path, name, dt, sorted(DTYPES)))
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            sys.exit("%s: %s has shape %r, not a list of sizes" % (path, name, shape))
        if not isinstance(offsets, list) or len(offsets) != 2 or \
                not all(isinstance(o, int) for o in offsets):
            sys.exit("%s: %s has data_offsets %r, not [begin, end]" % (path, name, offsets))
        begin, end = offsets
        count = int(np.prod(shape, dtype=np.int64))
        if not (0 <= begin <= end <= len(body)):
            sys.exit("%s: %s offsets [%s, %s] outside the %d data bytes"
                     % (path, name, begin, end, len(body)))
        if end - begin != count * DTYPES[dt].itemsize:
            sys.exit("%s: %s spans %d bytes, its shape %s of %s needs %d"
                     % (path, name, end - begin, shape, dt, count * DTYPES[dt].itemsize))
        a = np.frombuffer(body[begin:end], dtype=DTYPES[dt]).reshape(shape)
        if dt == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = a
        spans.append((begin, end, name))
    spans.sort()
    for (b0, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            sys.exit("%s: %s and %s overlap" % (path, n0, n1))
    return tensors, metadata, [s[2] for s in spans]


# ---------------------------------------------------------------- the reference run

def batch_tokens():
    """[B, T+1] int64: row b is bytes b*T .. b*T+T of TEXT (llm.c's contiguous batch)."""
    ids = np.frombuffer(TEXT.encode("ascii"), dtype=np.uint8).astype(np.int64)
    assert len(ids) >= B * T + 1
    return torch.from_numpy(np.stack([ids[b * T:b * T + T + 1] for b in range(B)]))


def forward_backward(model, tokens):
    model.zero_grad(set_to_none=True)
    logits, loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    return logits.detach(), loss.detach()


def run_reference(model, tokens):
    """Forward+backward at the initial weights, then STEPS AdamW steps on the same batch
    (llm.c's order: the loss of step i comes from the forward before update i+1)."""
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    logits, loss = forward_backward(model, tokens)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), **ADAMW)
    losses = []
    for _ in range(STEPS):
        _, step_loss = forward_backward(model, tokens)
        losses.append(step_loss.item())
        opt.step()
    with torch.no_grad():
        _, loss_after = model(tokens[:, :-1], tokens[:, 1:])
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.load_state_dict(state, strict=False)  # the caller's model is left as it came
    return dict(logits=logits, loss=loss.item(), grads=grads, losses=losses,
                loss_after=loss_after.item(), after=after)


def stored_after(name):
    return any(name == s or (s.endswith(".") and name.startswith(s)) for s in AFTER_STEPS)


def compare(ref, got):
    """Per quantity: max |got - ref| and that over max |ref| (the tensor's own scale); for
    the many-tensor quantities the largest of each over the tensors."""
    def one(r, g):
        r, g = np.asarray(r, np.float64), np.asarray(g, np.float64)
        d = float(np.max(np.abs(g - r)))
        return d, d / max(float(np.max(np.abs(r))), 1e-30)

    def worst(r, g, names):
        each = [one(r[n], g[n]) for n in names]
        return max(e[0] for e in each), max(e[1] for e in each)

    return {"logits": one(ref["logits"], got["logits"]),
            "loss": one(ref["loss"], got["loss"]),
            "grad.*": worst(ref["grads"], got["grads"], ref["grads"]),
            "adamw.losses": one(ref["losses"], got["losses"]),
            "adamw.loss_after": one(ref["loss_after"], got["loss_after"]),
            "after10.*": worst(ref["after"], got["after"],
                               [n for n in ref["after"] if stored_after(n)])}


def as_numpy(t):
    return t.detach().to(torch.float32).numpy()


def generate(out):
    deterministic(1)
    torch.manual_seed(SEED)
    cfg = CONFIGS["gpt-mini"]
    model = make_model("gpt-mini")
    init_weights(model, SEED)
    tokens = batch_tokens()
    ref = run_reference(model, tokens)

    # The same computation in float64 from the same (float32-valued) weights: how far float32
    # itself is from the exact result tells what tolerance a float32 C implementation can meet.
    model64 = make_model("gpt-mini").double()
    model64.load_state_dict({n: p.detach().double() for n, p in model.named_parameters()},
                            strict=False)
    ref64 = run_reference(model64, tokens)
    errors = compare(ref64, ref)
    # Bitwise determinism: the whole run again in float32 must give the same bytes.
    again = run_reference(model, tokens)
    same = (torch.equal(again["logits"], ref["logits"]) and again["losses"] == ref["losses"]
            and all(torch.equal(again["grads"][n], ref["grads"][n]) for n in ref["grads"])
            and all(torch.equal(again["after"][n], ref["after"][n]) for n in ref["after"]))
    if not same:
        sys.exit("generate: two float32 runs differ; the reference would not be reproducible")

    names = [n for n, _ in model.named_parameters()]
    tensors = [(n, as_numpy(p)) for n, p in model.named_parameters()]
    tensors.append(("tokens", tokens.numpy().astype(np.int32)))
    tensors.append(("logits", as_numpy(ref["logits"])))
    tensors.append(("loss", np.array([ref["loss"]], np.float32)))
    tensors += [("grad." + n, as_numpy(ref["grads"][n])) for n in names]
    tensors.append(("adamw.losses", np.array(ref["losses"], np.float32)))
    tensors.append(("adamw.loss_after", np.array([ref["loss_after"]], np.float32)))
    tensors += [("after10." + n, as_numpy(ref["after"][n])) for n in names if stored_after(n)]
    metadata = {
        "format": "tessera-gpt-reference 1",
        "model": "gpt-mini",
        **{k: str(v) for k, v in cfg.items()},
        "batch": str(B), "tokens": str(T),
        "layernorm_eps": repr(LN_EPS), "gelu": "tanh",
        "linear_layout": "Conv1D: weight [in, out], y = x @ W + b",
        "lm_head": "tied to wte.weight: logits = ln_f(x) @ wte.weight^T",
        "loss": "mean cross-entropy over all batch*tokens positions, natural log",
        "optimizer": "torch.optim.AdamW", "lr": repr(ADAMW["lr"]),
        "beta1": repr(ADAMW["betas"][0]), "beta2": repr(ADAMW["betas"][1]),
        "adam_eps": repr(ADAMW["eps"]), "weight_decay": repr(ADAMW["weight_decay"]),
        "weight_decay_applies_to": "every tensor (one parameter group)",
        "steps": str(STEPS),
        "after10_tensors": ",".join(AFTER_STEPS),
        "seed": str(SEED),
        "init": init_weights.__doc__.replace("\n    ", " ").strip(),
        "text": "opening of Jane Austen, Pride and Prejudice (1813), bytes as tokens",
        "torch_version": torch.__version__, "threads": "1",
        "float32_vs_float64": json.dumps({k: {"max_abs": float("%.3g" % v[0]),
                                              "max_rel_to_tensor_max": float("%.3g" % v[1])}
                                          for k, v in errors.items()}, sort_keys=True),
    }
    write_safetensors(out, tensors, metadata)

    # Read it back with the reader --check and --val use: every byte as meant.
    back, meta, order = read_safetensors(out)
    if meta != metadata or order != [n for n, _ in tensors]:
        sys.exit("generate: %s reads back with other metadata or order" % out)
    for n, a in tensors:
        if back[n].dtype != a.dtype or back[n].shape != a.shape or \
                back[n].tobytes() != a.tobytes():
            sys.exit("generate: %s reads back different" % n)

    print("wrote %s: %d tensors, %d bytes" % (out, len(tensors), os.path.getsize(out)))
    print("loss %.6f, AdamW losses %s, after 10 steps %.6f"
          % (ref["loss"], " ".join("%.4f" % v for v in ref["losses"]), ref["loss_after"]))
    print("two float32 runs: bitwise identical")
    print("float32 against float64 (max |f32 - f64|, and over the tensor's max |f64|):")
    for k, (d, r) in errors.items():
        print("  %-18s %.3e  %.3e" % (k, d, r))


# ---------------------------------------------------------------- --check

# Tolerances against this file for a float32 implementation, 10 to 50 times what float32
# PyTorch itself is off from float64 (more for the last loss) (tests/ref/README.md has the measurements). "rel": max
# |got - ref| over max |ref| of each tensor; "abs": max |got - ref|. The weights after the
# steps are absolute: AdamW divides by sqrt(v), so an element with a gradient near zero moves
# by up to lr whatever its rounding; float32 already lands 1.8e-5 from float64 there.
TOLERANCE = {"logits": ("rel", 1e-5), "loss": ("abs", 1e-5), "grad.*": ("rel", 3e-5),
             "adamw.losses": ("abs", 1e-4), "adamw.loss_after": ("abs", 1e-4),
             "after10.*": ("abs", 2e-4)}


def model_from_file(tensors, metadata, heads=None):
    """A GPT whose shape follows the tensors (heads from --heads or the metadata)."""
    names = {n[len("transformer."):] if n.startswith("transformer.") else n: n
             for n in tensors}
    for need in ("wte.weight", "wpe.weight", "ln_f.weight"):
        if need not in names:
            sys.exit("model file: no %s tensor (Hugging Face GPT-2 names expected)" % need)
    vocab, n_embd = tensors[names["wte.weight"]].shape
    n_ctx = tensors[names["wpe.weight"]].shape[0]
    n_layer = len({n.split(".")[1] for n in names if n.startswith("h.")})
    heads = heads or next((int(metadata[k]) for k in ("n_head", "num_heads", "n_heads")
                           if k in metadata), None)
    if not heads:
        sys.exit("model file: its metadata names no n_head; give --heads N")
    if heads < 1 or n_embd % heads:
        sys.exit("model file: %d channels do not split into %d heads" % (n_embd, heads))
    model = GPT(n_layer, heads, n_embd, n_ctx, vocab)
    state = {}
    for n, p in model.named_parameters():
        if n not in names:
            sys.exit("model file: no %s tensor" % n)
        a = tensors[names[n]]
        if tuple(a.shape) != tuple(p.shape):
            sys.exit("model file: %s is %s, the model needs %s"
                     % (n, list(a.shape), list(p.shape)))
        state[n] = torch.from_numpy(np.array(a, dtype=np.float32))
    model.load_state_dict(state, strict=False)  # mask buffers (h.N.attn.bias) are not read
    return model


def check(path):
    deterministic(1)
    tensors, metadata, _ = read_safetensors(path)
    if metadata.get("format") != "tessera-gpt-reference 1":
        sys.exit("%s: not a tessera GPT reference (metadata format %r)"
                 % (path, metadata.get("format")))
    model = model_from_file({n: a for n, a in tensors.items() if "." in n and
                             not n.startswith(("grad.", "after10.", "adamw."))}, metadata)
    if float(metadata["weight_decay"]) != ADAMW["weight_decay"] or \
            float(metadata["lr"]) != ADAMW["lr"] or int(metadata["steps"]) != STEPS:
        sys.exit("%s: written with other AdamW settings than this script's" % path)
    tokens = torch.from_numpy(tensors["tokens"].astype(np.int64))
    got = run_reference(model, tokens)
    t = lambda n: torch.from_numpy(np.array(tensors[n]))  # noqa: E731
    ref = dict(logits=t("logits"), loss=float(tensors["loss"][0]),
               grads={n: t("grad." + n) for n, _ in model.named_parameters()},
               losses=[float(v) for v in tensors["adamw.losses"]],
               loss_after=float(tensors["adamw.loss_after"][0]),
               after={n[len("after10."):]: t(n) for n in tensors if n.startswith("after10.")})
    diffs, failed = compare(ref, got), []
    for k, (d, r) in diffs.items():
        kind, bound = TOLERANCE[k]
        ok = (d if kind == "abs" else r) <= bound
        failed += [] if ok else [k]
        print("  %-18s max abs %.3e  rel %.3e  tolerance %s %.0e  %s"
              % (k, d, r, kind, bound, "ok" if ok else "FAILED"))
    if failed:
        sys.exit("check %s: %s beyond tolerance" % (path, ", ".join(failed)))
    print("check %s: logits, loss, every gradient and the %d AdamW steps reproduce"
          % (path, STEPS))


# ---------------------------------------------------------------- --val

def read_tokens(path):
    """llm.c's token file: 256 little-endian int32 (magic 20240520, version 1, count), then
    count uint16 tokens."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 1024:
        sys.exit("%s: %d bytes, shorter than the 1024-byte header" % (path, len(data)))
    magic, version, count = struct.unpack("<3i", data[:12])
    if magic != 20240520:
        sys.exit("%s: magic %d, a token file has 20240520" % (path, magic))
    if version != 1:
        sys.exit("%s: version %d, only version 1 (uint16 tokens) is read" % (path, version))
    if count < 0 or len(data) != 1024 + 2 * count:
        sys.exit("%s: header says %d tokens, the file holds %d bytes of them"
                 % (path, count, len(data) - 1024))
    return np.frombuffer(data, dtype="<u2", offset=1024).astype(np.int64)


def validation_loss(model_path, tokens_path, heads=None, context=None, batch=8,
                    max_batches=None, threads=1):
    """Mean cross-entropy over every position of consecutive windows: window i is tokens
    i*T .. i*T+T (inputs) and their successors (targets), T the context; as llm.c's loader."""
    deterministic(threads)
    tensors, metadata, _ = read_safetensors(model_path)
    model = model_from_file(tensors, metadata, heads).eval()
    ids = read_tokens(tokens_path)
    vocab, n_ctx = model.config["vocab"], model.config["n_ctx"]
    if ids.size and ids.max() >= vocab:
        sys.exit("%s: token %d outside the model's vocabulary of %d"
                 % (tokens_path, ids.max(), vocab))
    t = context or n_ctx
    if not 1 <= t <= n_ctx:
        sys.exit("--context %d outside 1..%d (the model's context)" % (t, n_ctx))
    windows = (len(ids) - 1) // t
    if windows < 1:
        sys.exit("%s: %d tokens, fewer than one window of %d+1" % (tokens_path, len(ids), t))
    starts = np.arange(windows) * t
    if max_batches:
        starts = starts[:max_batches * batch]
    total, positions = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(starts), batch):
            rows = np.stack([ids[s:s + t + 1] for s in starts[i:i + batch]])
            x = torch.from_numpy(rows)
            _, loss = model(x[:, :-1], x[:, 1:])
            total += loss.item() * x[:, 1:].numel()
            positions += x[:, 1:].numel()
    return total / positions, positions, model.config


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(here, "..", "tests", "ref",
                                                 "gpt_mini_ref.safetensors"))
    p.add_argument("--check", metavar="FILE")
    p.add_argument("--val", nargs=2, metavar=("MODEL", "TOKENS"))
    p.add_argument("--heads", type=int, help="--val: attention heads, if the file's "
                   "metadata does not name n_head")
    p.add_argument("--context", type=int, help="--val: tokens per window (default the "
                   "model's context)")
    p.add_argument("--batch", type=int, default=8, help="--val: windows per forward")
    p.add_argument("--max-batches", type=int, help="--val: stop after this many batches")
    p.add_argument("--threads", type=int, default=1, help="--val: PyTorch threads")
    a = p.parse_args()
    if a.check:
        check(a.check)
    elif a.val:
        loss, positions, cfg = validation_loss(a.val[0], a.val[1], a.heads, a.context,
                                               a.batch, a.max_batches, a.threads)
        print(json.dumps({"val_loss": round(loss, 6), "positions": positions,
                          "model": cfg, "context": a.context or cfg["n_ctx"]}))
    else:
        generate(os.path.normpath(a.out))


if __name__ == "__main__":
    main()
