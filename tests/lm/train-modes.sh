#!/bin/sh
# A GPT trains on token files in every mode: gpt-mini (context 32, batch 8, 24 steps) on the
# fortunes corpus (Debian's fortunes packages, tokenized by tsr-tokenize --bytes) as one
# process, data parallel (n = 2, with and without --zero), pipeline (n = 2 with 2
# micro-batches, n = 3: stages cut at block boundaries, the head on the last stage tied to the
# first stage's embedding through a synchronised copy), hybrid (n = 4, 2 replicas), gossip
# (n = 2), async (n = 3) and tensor parallel (--tp 2 at n = 2, evenly and with shares 3,1;
# --tp 2 --mode data at n = 4, with and without --zero; --tp 2 x 2 pipeline stages at n = 4,
# evenly with 2 micro-batches and with shares 3,1; --tp 2 x hybrid 2 replicas at n = 4). Each
# must bring the validation loss well below ln 256 = 5.55 (the loss of a uniform guess; < 4.5
# here); data, pipeline, hybrid and tensor parallel must equal one process's figures (the same
# windows, sums in another order: relative 1e-5; the last training losses too; the validation
# accuracy within one position, tensor parallel's from the vocabulary slices); so must gradient
# clipping (--clip-grad 0.5) inside --tp 2 pipeline stages and hybrid replicas. A run stopped by
# SIGTERM at step 13 and resumed (one process, and a 2-stage pipeline) continues the same
# window stream and schedule: the one-process figures; so do checkpoints crossing layouts (a
# --tp 2 run's resumed by one process, one process's resumed under --tp 2, a --tp 2 x pipeline
# 2 run's resumed under --tp 2 alone and by one process, one process's resumed under --tp 2 x
# pipeline 2): one unsharded file. Refused with a clear message naming the bound: token ids
# outside the model's vocabulary, --tp with gossip, ranks that are not replicas x tensor x
# stages, --stages not matching them, more tensor-parallel ranks than heads.
# Env: BUILD.
set -u
BUILD=${BUILD:-build}
. "$(dirname "$0")/../support/prereq.sh"
need_mpi
need_python3
corpus=/usr/share/games/fortunes
[ -f "$corpus/fortunes" ] || skip "missing $corpus/fortunes (Debian package fortunes-min)"
train=$BUILD/bin/tsr-train
d=$(mktemp -d /tmp/tsr-lm.XXXXXX)
trap 'rm -rf "$d"' EXIT
"$BUILD/bin/tsr-tokenize" --bytes "$corpus/fortunes" "$d/data" > /dev/null || { echo "FAIL: tokenize"; exit 1; }
common="--model gpt-mini --data $d/data --context 32 --batch 8 --steps 24 --val-windows 48 --json --quiet"
run() { # name, then the command
    name=$1
    shift
    timeout 300 "$@" > "$d/$name.json" 2> "$d/$name.err" || { echo "FAIL: $name"; cat "$d/$name.err"; exit 1; }
    echo "$name: $(cat "$d/$name.json")"
}
run single "$train" $common
run data mpiexec -n 2 "$train" --mode data $common
run zero mpiexec -n 2 "$train" --mode data --zero $common
run pipe2 mpiexec -n 2 "$train" --mode pipeline --microbatches 2 $common
run pipe3 mpiexec -n 3 "$train" --mode pipeline $common
run hybrid mpiexec -n 4 "$train" --mode hybrid --replicas 2 $common
run tp2 mpiexec -n 2 "$train" --tp 2 $common
run tp31 mpiexec -n 2 "$train" --tp 2 --tp-shares 3,1 $common
run tpdata mpiexec -n 4 "$train" --tp 2 --mode data $common
run tpzero mpiexec -n 4 "$train" --tp 2 --mode data --zero $common
run tppipe mpiexec -n 4 "$train" --tp 2 --mode pipeline --microbatches 2 $common
run tppipe31 mpiexec -n 4 "$train" --tp 2 --tp-shares 3,1 --mode pipeline --stages 22,22 $common
run tphybrid mpiexec -n 4 "$train" --tp 2 --mode hybrid --replicas 2 $common
run gossip mpiexec -n 2 "$train" --mode gossip $common
run async mpiexec -n 3 "$train" --mode async $common
TSR_FAULT_SIGTERM_AT_STEP=12 "$train" $common --checkpoint "$d/ck.bin" > /dev/null 2> "$d/first.err"
[ $? = 143 ] && grep -q "interrupted by SIGTERM at step 13" "$d/first.err" || { echo "FAIL: SIGTERM"; cat "$d/first.err"; exit 1; }
run resumed "$train" $common --resume "$d/ck.bin"
TSR_FAULT_SIGTERM_AT_STEP=12 mpiexec -n 2 "$train" --mode pipeline $common --checkpoint "$d/pk.bin" > /dev/null 2> "$d/pfirst.err"
[ $? != 0 ] && grep -q "interrupted by SIGTERM at step 13" "$d/pfirst.err" || { echo "FAIL: pipeline SIGTERM"; cat "$d/pfirst.err"; exit 1; }
run presumed mpiexec -n 2 "$train" --mode pipeline $common --resume "$d/pk.bin"
run tpresumed mpiexec -n 2 "$train" --tp 2 $common --resume "$d/ck.bin"
TSR_FAULT_SIGTERM_AT_STEP=12 mpiexec -n 2 "$train" --tp 2 $common --checkpoint "$d/tk.bin" > /dev/null 2> "$d/tfirst.err"
[ $? != 0 ] && grep -q "interrupted by SIGTERM at step 13" "$d/tfirst.err" || { echo "FAIL: --tp SIGTERM"; cat "$d/tfirst.err"; exit 1; }
run fromtp "$train" $common --resume "$d/tk.bin"
TSR_FAULT_SIGTERM_AT_STEP=12 mpiexec -n 4 "$train" --tp 2 --mode pipeline $common --checkpoint "$d/tpk.bin" > /dev/null 2> "$d/tpfirst.err"
[ $? != 0 ] && grep -q "interrupted by SIGTERM at step 13" "$d/tpfirst.err" || { echo "FAIL: --tp pipeline SIGTERM"; cat "$d/tpfirst.err"; exit 1; }
run tppipetotp mpiexec -n 2 "$train" --tp 2 $common --resume "$d/tpk.bin"
run tppipetoone "$train" $common --resume "$d/tpk.bin"
run onetotppipe mpiexec -n 4 "$train" --tp 2 --mode pipeline $common --resume "$d/ck.bin"
# clipping by the global norm (0.5, below the norms here, so every step is clipped) inside
# tensor-parallel pipeline stages and hybrid replicas: the whole model's norm, as one process's
run clip "$train" $common --clip-grad 0.5
run tppipeclip mpiexec -n 4 "$train" --tp 2 --mode pipeline $common --clip-grad 0.5
run tphybridclip mpiexec -n 4 "$train" --tp 2 --mode hybrid --replicas 2 $common --clip-grad 0.5
python3 - "$d" << 'PY' || exit 1
import json, sys
d = sys.argv[1]
c = {n: json.load(open(f"{d}/{n}.json")) for n in ("clip", "tppipeclip", "tphybridclip")}
assert c["clip"]["grad_norm"] > 0.5, f"clip: the last norm {c['clip']['grad_norm']} is not above the bound"
for n in ("tppipeclip", "tphybridclip"):
    for k in ("grad_norm", "val_loss", "final_loss"):
        a, b = c[n][k], c["clip"][k]
        assert abs(a - b) <= 1e-5 * b, f"{n}: {k} {a} vs one process {b}"
r = {n: json.load(open(f"{d}/{n}.json"))
     for n in ("single", "data", "zero", "pipe2", "pipe3", "hybrid", "tp2", "tp31", "tpdata", "tpzero", "tppipe",
               "tppipe31", "tphybrid", "gossip", "async", "resumed", "presumed", "tpresumed", "fromtp", "tppipetotp",
               "tppipetoone", "onetotppipe")}
for n, j in r.items():
    assert j["val_loss"] < 4.5, f"{n}: val loss {j['val_loss']} not below 4.5"
    assert j["tokens_per_s"] > 0
for n in ("data", "zero", "pipe2", "pipe3", "hybrid", "tp2", "tp31", "tpdata", "tpzero", "tppipe", "tppipe31",
          "tphybrid", "resumed", "presumed", "tpresumed", "fromtp", "tppipetotp", "tppipetoone", "onetotppipe"):
    a, b = r[n]["val_loss"], r["single"]["val_loss"]
    assert abs(a - b) <= 1e-5 * b, f"{n}: val loss {a} vs one process {b}"
    # the mean training loss since the last evaluation: a resumed run's covers steps 13..24
    ref = r["resumed" if "resumed" in n or n in ("fromtp", "tppipetotp", "tppipetoone", "onetotppipe") else "single"]
    a, b = r[n]["final_loss"], ref["final_loss"]
    assert abs(a - b) <= 1e-5 * b, f"{n}: final training loss {a} vs one process {b}"
    # next-token accuracy (tensor parallel: the group's argmax over the vocabulary slices); a
    # near tie may flip one of the 48 x 32 positions
    a, b = r[n]["val_accuracy"], r["single"]["val_accuracy"]
    assert abs(a - b) <= 1.5 / (48 * 32), f"{n}: val accuracy {a} vs one process {b}"
print("val losses:", {n: round(j["val_loss"], 4) for n, j in r.items()})
PY
# refusals with a clear message
mpiexec -n 2 "$train" --tp 2 --tp-shares 1,x $common > /dev/null 2> "$d/tpshares.err"
[ $? = 2 ] && grep -q "tp-shares needs K positive numbers" "$d/tpshares.err" || { echo "FAIL: --tp-shares"; cat "$d/tpshares.err"; exit 1; }
refused() { # name, expected message, then the command
    name=$1 want=$2
    shift 2
    "$@" $common > /dev/null 2> "$d/$name.err"
    [ $? = 2 ] && grep -q "$want" "$d/$name.err" || { echo "FAIL: $name refusal"; cat "$d/$name.err"; exit 1; }
}
refused tpgossip "composes with --mode data, pipeline and hybrid, not async or gossip" \
    mpiexec -n 2 "$train" --tp 2 --mode gossip
refused tplayout "3 ranks are not replicas 1 x tensor 2 x pipeline stages (a multiple of 2)" \
    mpiexec -n 3 "$train" --tp 2 --mode pipeline
refused tphybridlayout "4 ranks are not replicas 4 x tensor 2 x pipeline stages (a multiple of 8)" \
    mpiexec -n 4 "$train" --tp 2 --mode hybrid --replicas 4
refused tpstages "lists 3 stages, but 4 ranks / (tensor 2 x replicas 1) = 2 stages" \
    mpiexec -n 4 "$train" --tp 2 --mode pipeline --stages 22,12,10
refused tpheads "5 tensor-parallel ranks for 4 heads: each rank needs at least one head" \
    mpiexec -n 5 "$train" --tp 5
"$train" --model 'gpt(layers=1,heads=2,channels=8,context=32,vocab=100)' --data "$d/data" --steps 1 > /dev/null 2> "$d/vocab.err"
[ $? != 0 ] && grep -q "outside the vocabulary of 100" "$d/vocab.err" || { echo "FAIL: vocabulary"; cat "$d/vocab.err"; exit 1; }
echo "ok"
