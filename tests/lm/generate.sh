#!/bin/sh
# tsr-generate on a GPT that tsr-train wrote: gpt-mini trained 30 steps (context 64, batch 8) on
# the fortunes corpus (tsr-tokenize --bytes) prints exactly N bytes and exits 0; greedy output
# repeats itself, equals the uncached path's (--no-cache recomputes the window per token) and
# top-k 1's; a seed repeats its sample, with and without the cache; generation past the
# context (256) slides; --bench reports both speeds and the same tokens. The two ways to name a
# model agree: --model gpt-mini --init FILE (the PyTorch reference weights of
# tests/ref/gpt_mini_ref.safetensors under Hugging Face's names) generates the same bytes as the
# checkpoint tsr-train writes from that file after one step at learning rate 1e-12 (--lr takes no 0;
# steps of about 1e-12 move only the last bits of the smallest weights: logits change by ~1e-10). Bad options,
# a model that is not a GPT, a prompt longer than the context and bytes outside a model's
# vocabulary are refused with messages.
# Env: BUILD.
set -u
BUILD=${BUILD:-build}
. "$(dirname "$0")/../support/prereq.sh"
need_python3
corpus=/usr/share/games/fortunes
[ -f "$corpus/fortunes" ] || skip "missing $corpus/fortunes (Debian package fortunes-min)"
gen=$BUILD/bin/tsr-generate
train=$BUILD/bin/tsr-train
d=$(mktemp -d /tmp/tsr-gen.XXXXXX)
trap 'rm -rf "$d"' EXIT
fail() {
    echo "FAIL: $*"
    exit 1
}
"$BUILD/bin/tsr-tokenize" --bytes "$corpus/fortunes" "$d/data" > /dev/null || fail "tokenize"
timeout 300 "$train" --model gpt-mini --data "$d/data" --steps 30 --context 64 --batch 8 --quiet \
    --checkpoint "$d/ck.bin" > "$d/train.out" 2>&1 || { cat "$d/train.out"; fail "train"; }
ck=$d/ck.bin

# out NAME ARGS...: runs tsr-generate, which must exit 0, into $d/NAME
out() {
    name=$1
    shift
    timeout 300 "$gen" "$@" > "$d/$name" 2> "$d/$name.err" || { cat "$d/$name.err"; fail "$name: tsr-generate $*"; }
}
same() { cmp -s "$d/$1" "$d/$2" || fail "$1 and $2 differ: '$(head -c 80 "$d/$1")' vs '$(head -c 80 "$d/$2")'"; }
out greedy --checkpoint "$ck" --prompt "The cat " --max-tokens 100
[ "$(wc -c < "$d/greedy")" = 100 ] || fail "greedy printed $(wc -c < "$d/greedy") bytes, not 100"
out greedy2 --checkpoint "$ck" --prompt "The cat " --max-tokens 100
same greedy greedy2
out greedy_nocache --checkpoint "$ck" --prompt "The cat " --max-tokens 100 --no-cache
same greedy greedy_nocache
out topk1 --checkpoint "$ck" --prompt "The cat " --max-tokens 100 --temperature 0.7 --top-k 1 --seed 4
same greedy topk1
out sample --checkpoint "$ck" --prompt "Q: " --max-tokens 120 --temperature 1 --top-k 40 --seed 7
[ "$(wc -c < "$d/sample")" = 120 ] || fail "sample printed $(wc -c < "$d/sample") bytes, not 120"
out sample2 --checkpoint "$ck" --prompt "Q: " --max-tokens 120 --temperature 1 --top-k 40 --seed 7
same sample sample2
out sample_nocache --checkpoint "$ck" --prompt "Q: " --max-tokens 120 --temperature 1 --top-k 40 --seed 7 --no-cache
same sample sample_nocache
out sample8 --checkpoint "$ck" --prompt "Q: " --max-tokens 120 --temperature 1 --top-k 40 --seed 8
cmp -s "$d/sample" "$d/sample8" && fail "seeds 7 and 8 gave the same 120 bytes"
# past the context of 256: the window slides
out long --checkpoint "$ck" --prompt "A" --max-tokens 300 --temperature 0.9 --seed 2
[ "$(wc -c < "$d/long")" = 300 ] || fail "long printed $(wc -c < "$d/long") bytes, not 300"
out long_nocache --checkpoint "$ck" --prompt "A" --max-tokens 300 --temperature 0.9 --seed 2 --no-cache
same long long_nocache
out bench --checkpoint "$ck" --prompt "The " --max-tokens 40 --bench
grep -q '"same_tokens":true' "$d/bench" && grep -q '"cached_tokens_per_s":[1-9]' "$d/bench" || {
    cat "$d/bench"
    fail "bench"
}
echo "bench: $(cat "$d/bench")"

# --model --init and a checkpoint of the same weights
python3 - tests/ref/gpt_mini_ref.safetensors "$d/mini.safetensors" << 'PY' || fail "writing the weights"
import json, struct, sys
src, dst = sys.argv[1], sys.argv[2]
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
body = raw[8 + n:]
keep = sorted(k for k in head if k.startswith(("wte.", "wpe.", "h.", "ln_f.")))
out, parts, at = {}, [], 0
for k in keep:
    b, e = head[k]["data_offsets"]
    out[k] = {"dtype": head[k]["dtype"], "shape": head[k]["shape"], "data_offsets": [at, at + e - b]}
    parts.append(body[b:e])
    at += e - b
h = json.dumps(out, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
open(dst, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(parts))
PY
timeout 300 "$train" --model gpt-mini --data "$d/data" --init "$d/mini.safetensors" --steps 1 --lr 1e-12 \
    --context 64 --batch 8 --quiet --checkpoint "$d/ref.bin" > "$d/train0.out" 2>&1 || { cat "$d/train0.out"; fail "train at lr 1e-12"; }
out init --model gpt-mini --init "$d/mini.safetensors" --prompt "Hello" --max-tokens 60 --temperature 0.8 --seed 5
out init_ck --checkpoint "$d/ref.bin" --prompt "Hello" --max-tokens 60 --temperature 0.8 --seed 5
same init init_ck
out random --model 'gpt(layers=1,heads=2,channels=8,context=16,vocab=300)' --prompt "xyz" --max-tokens 20 --seed 3
[ -s "$d/random" ] || fail "a random gpt(...) printed nothing"

# refusals: option, exit status, a phrase of the message
refuse() {
    want=$1 phrase=$2
    shift 2
    "$gen" "$@" > "$d/r.out" 2> "$d/r.err"
    rc=$?
    [ "$rc" = "$want" ] && grep -q -- "$phrase" "$d/r.err" || {
        cat "$d/r.err"
        fail "tsr-generate $* exited $rc (want $want) without '$phrase'"
    }
    [ -s "$d/r.out" ] && fail "tsr-generate $* printed to stdout"
    return 0
}
refuse 2 "needs exactly one of --checkpoint and --model" --prompt a --max-tokens 3
refuse 2 "needs exactly one of --checkpoint and --model" --checkpoint "$ck" --model gpt-mini --prompt a --max-tokens 3
refuse 2 "needs --model with --init" --checkpoint "$ck" --init "$d/mini.safetensors" --prompt a --max-tokens 3
refuse 2 "needs --prompt" --checkpoint "$ck" --max-tokens 3
refuse 2 "needs --max-tokens" --checkpoint "$ck" --prompt a
refuse 2 "prompt: empty" --checkpoint "$ck" --prompt "" --max-tokens 3
refuse 2 "'0' is not a count of 1 to 1000000" --checkpoint "$ck" --prompt a --max-tokens 0
refuse 2 "'-1' is not a temperature" --checkpoint "$ck" --prompt a --max-tokens 3 --temperature -1
refuse 2 "'x' is not a count of 0" --checkpoint "$ck" --prompt a --max-tokens 3 --top-k x
refuse 2 "unknown option --bogus" --checkpoint "$ck" --prompt a --max-tokens 3 --bogus 1
refuse 2 "needs a value" --checkpoint "$ck" --prompt a --max-tokens
refuse 2 "top-k: 300 is more than the vocabulary of 256" --checkpoint "$ck" --prompt a --max-tokens 3 --temperature 1 --top-k 300
refuse 1 "prompt of 300 tokens: 1 to the context of 256" --checkpoint "$ck" --prompt "$(head -c 300 /dev/zero | tr '\0' a)" --max-tokens 3
refuse 1 "outside the vocabulary \[0, 90)" --model 'gpt(layers=1,heads=2,channels=8,context=16,vocab=90)' --prompt "abc" --max-tokens 3
refuse 1 "tensor 'h.4.ln_1.weight' is missing" --model 'gpt(layers=5,heads=4,channels=128,context=256,vocab=256)' --init "$d/mini.safetensors" --prompt a --max-tokens 3
# the same loader as tsr-train --init: tensors that are not the model's (the reference file's
# tokens, logits and gradients) are refused, GPT-2's mask buffers and lm_head.weight skipped
refuse 1 "tensor 'tokens' is not a parameter of the model" --model gpt-mini --init tests/ref/gpt_mini_ref.safetensors --prompt a --max-tokens 3
refuse 1 "corrupt" --model gpt-mini --init "$d/ref.bin" --prompt a --max-tokens 3
refuse 1 "not a GPT" --model mlp --prompt a --max-tokens 3
refuse 1 "no such file\|cannot open\|No such" --checkpoint "$d/none.bin" --prompt a --max-tokens 3
refuse 1 "tensor 'wte.weight' has shape \[256, 128\], the model's is \[50257, 768\]" --model gpt2 --init "$d/mini.safetensors" --prompt a --max-tokens 3
echo "tsr-generate: greedy, sampled, sliding, uncached, --init and checkpoint agree; refusals"
