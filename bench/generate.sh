#!/bin/sh
# Generation speed with and without the key/value cache, side by side in one run of
# tsr-generate --bench (the same prompt, greedy, the tokens compared): gpt-mini over its whole
# context (a 1-byte prompt and 255 tokens) and gpt2 (a 5-byte prompt and TOKENS_GPT2 tokens,
# default 64), random weights (the trainer's initialisation). Each REPEATS times (default 3);
# prints every run's JSON line and, per model, the median tokens/s of both paths, the median
# speedup and the spread (min..max). The uncached path recomputes the whole sequence for each
# token (the head on its last row only), so its cost per token grows with the length.
# Env: BUILD, REPEATS, TOKENS_GPT2.
set -e
BUILD=${BUILD:-build}
REPEATS=${REPEATS:-3}
TOKENS_GPT2=${TOKENS_GPT2:-64}
out=$(mktemp /tmp/tsr-genbench.XXXXXX)
trap 'rm -f "$out"' EXIT
echo "load: $(uptime)"
for r in $(seq "$REPEATS"); do
    "$BUILD/bin/tsr-generate" --model gpt-mini --prompt "T" --max-tokens 255 --bench | tee -a "$out"
    "$BUILD/bin/tsr-generate" --model gpt2 --prompt "Hello" --max-tokens "$TOKENS_GPT2" --bench | tee -a "$out"
done
python3 - "$out" << 'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(f"{'model':10} {'tokens':>6} {'cached tok/s':>22} {'uncached tok/s':>22} {'speedup':>18}  same")
for m in dict.fromkeys(r["model"] for r in runs):
    rs = [r for r in runs if r["model"] == m]
    def col(k):
        v = [r[k] for r in rs]
        return f"{statistics.median(v):8.2f} ({min(v):.2f}..{max(v):.2f})"
    print(f"{m:10} {rs[0]['tokens']:>6} {col('cached_tokens_per_s'):>22} {col('uncached_tokens_per_s'):>22} "
          f"{col('speedup'):>18}  {all(r['same_tokens'] for r in rs)}")
PY
