#!/bin/sh
# tsr-train refuses careless use early and loses nothing (issue 14's probe findings):
#  - resuming with another --batch or --limit is refused, naming both epoch shapes (it used to
#    continue past the end of the recomputed cosine schedule, at learning rate 0);
#  - a run that fails before its first checkpoint leaves the manifest of the checkpoint it
#    would have overwritten byte for byte as it was (it used to replace it, without hashes);
#  - --batch beyond the trainer's bound names the bound;
#  - a --checkpoint that cannot be written (a folder, a missing folder, no room) is refused
#    before the first epoch, not after it;
#  - a model too large for the host's memory is refused before anything is allocated;
#  - a label out of range and test images of another shape are blamed on the data;
#  - a TSR_TOPOLOGY file that cannot be read is named; tsr-topo names an unknown option;
#  - under mpiexec without --mode the ranks train data parallel (they used to train one model
#    each, all onto one checkpoint), and --stages naming fewer stages than ranks says why.
# Env: BUILD.
set -u
BUILD=${BUILD:-build}
. "$(dirname "$0")/../support/prereq.sh"
fmnist_workdir 512 128
train() { "$BUILD/bin/tsr-train" --data "$d" --quiet --epochs 2 "$@"; }
fail() { echo "FAIL: $*"; sed 's/^/  | /' "$d/err"; exit 1; }

train --batch 32 --checkpoint "$d/ck" > /dev/null 2> "$d/err" || fail "the first run"
cp "$d/ck.manifest.json" "$d/manifest.before"

# another epoch shape: exit 2 before any epoch, both shapes named
for opts in "--batch 64" "--limit 256"; do
    train --epochs 4 --batch 32 $opts --resume "$d/ck" > "$d/out" 2> "$d/err"
    rc=$?
    [ $rc = 2 ] || fail "resume with $opts: exit $rc, expected 2"
    grep -q "was trained with 16 steps per epoch (batch 32, 512 samples); this run has 8" "$d/err" ||
        fail "resume with $opts: the message does not name both epoch shapes"
    ! grep -q "^epoch" "$d/out" || fail "resume with $opts trained"
done

# a run that fails at its first step (a poisoned gradient, policy stop) keeps the manifest
TSR_FAULT_GRAD_NAN=0 train --batch 32 --checkpoint "$d/ck" > /dev/null 2> "$d/err"
rc=$?
[ $rc != 0 ] || fail "the poisoned run succeeded"
cmp -s "$d/manifest.before" "$d/ck.manifest.json" || fail "the failed run changed the manifest"

# a checkpoint that cannot be written is refused before any training: a folder, a missing
# folder, a file size limit below the checkpoint's size (ulimit -f, in 1 KiB blocks here)
mkdir "$d/folder"
for target in "$d/folder" "$d/missing/ck"; do
    train --checkpoint "$target" > "$d/out" 2> "$d/err"
    rc=$?
    [ $rc = 2 ] && grep -q "option --checkpoint: $target" "$d/err" || fail "--checkpoint $target: exit $rc"
    ! grep -q "^epoch" "$d/out" || fail "--checkpoint $target trained first"
done
(ulimit -f 100 && train --checkpoint "$d/small" > "$d/out" 2> "$d/err")
rc=$?
[ $rc = 2 ] && grep -q "file size limit (RLIMIT_FSIZE, ulimit -f) allows" "$d/err" || fail "ulimit -f 100: exit $rc"
! grep -q "^epoch" "$d/out" || fail "ulimit -f 100: trained first"

# a TSR_TOPOLOGY file that cannot be read is named with the setting (the detail used to be lost
# with the context: "context: I/O error"); tsr-topo names an unknown option
TSR_TOPOLOGY="$d/none.json" "$BUILD/bin/tsr-train" --data "$d" > /dev/null 2> "$d/err"
[ $? != 0 ] && grep -q "TSR_TOPOLOGY (topology_file): .*$d/none.json" "$d/err" || fail "TSR_TOPOLOGY detail"
"$BUILD/bin/tsr-topo" --bogus > /dev/null 2> "$d/err"
[ $? = 2 ] && grep -q "option --bogus: unknown option" "$d/err" || fail "tsr-topo --bogus"

# data errors are blamed on the data: a label of 200 among Fashion-MNIST's 0..9 is shown with
# its sample; test images of another shape (14x56, the same pixel count) are refused
mkdir "$d/bad"
cp "$d"/*-ubyte "$d/bad/"
python3 - "$d/bad" <<'PY'
import struct, sys
d = sys.argv[1]
p = d + "/train-labels-idx1-ubyte"
b = bytearray(open(p, "rb").read()); b[8 + 17] = 200; open(p, "wb").write(b)
PY
"$BUILD/bin/tsr-train" --data "$d/bad" > /dev/null 2> "$d/err"
[ $? = 2 ] && grep -q "the class count 201 comes from the training labels, whose largest is 200 (sample 17)" "$d/err" ||
    fail "label 200"
cp "$d"/train-labels-idx1-ubyte "$d/bad/"
python3 - "$d/bad" <<'PY'
import struct, sys
d = sys.argv[1]
p = d + "/t10k-images-idx3-ubyte"
b = bytearray(open(p, "rb").read()); b[8:16] = struct.pack(">II", 14, 56); open(p, "wb").write(b)
PY
"$BUILD/bin/tsr-train" --data "$d/bad" > /dev/null 2> "$d/err"
[ $? = 2 ] && grep -q "test data: images are 1x14x56 (channels x height x width), the training images 1x28x28" "$d/err" ||
    fail "test images 14x56"

# a model that does not fit the host's memory is refused with the figures before allocating
# (it used to grow to ~24 GB and be OOM-killed without a word); skipped where it would fit
train --model "dense:65536,dense:65536,dense:10" > /dev/null 2> "$d/err"
rc=$?
if ! grep -q "MemAvailable" /proc/meminfo || [ "$(awk '/MemAvailable/ {print $2}' /proc/meminfo)" -lt 60000000 ]; then
    [ $rc = 1 ] && grep -q "model does not fit the host's memory for device host: it needs .* GiB ([0-9]* bytes: parameters" "$d/err" ||
        fail "the oversized model: exit $rc"
fi

# the batch bound is named
"$BUILD/bin/tsr-train" --batch 2147483648 > /dev/null 2> "$d/err"
[ $? = 2 ] && grep -q "not an integer in 1..1048576" "$d/err" || fail "--batch 2147483648"

if command -v mpiexec > /dev/null && [ -x "$BUILD/tests/mpi/test_dp" ]; then
    mpiexec -n 2 "$BUILD/bin/tsr-train" --data "$d" --quiet --epochs 1 --json > "$d/out" 2> "$d/err" ||
        fail "mpiexec -n 2 without --mode"
    grep -q "2 ranks and no --mode: training data parallel" "$d/err" || fail "no note of data mode"
    [ "$(grep -c '^{' "$d/out")" = 1 ] && grep -q '"mode":"data","ranks":2' "$d/out" ||
        fail "mpiexec -n 2 without --mode did not train one data-parallel run: $(cat "$d/out")"
    mpiexec -n 3 "$BUILD/bin/tsr-train" --data "$d" --quiet --mode pipeline --stages 7 > /dev/null 2> "$d/err"
    [ $? != 0 ] && grep -q "'7' makes 1 stage (it lists the layers of each stage" "$d/err" &&
        grep -q "3 ranks need 3, one rank each" "$d/err" || fail "--stages 7 on 3 ranks"
    mpi="; mpiexec without --mode trains data parallel; --stages explained"
else
    mpi="; MPI parts not built (WITH_MPI=0)"
fi
echo "resume with another --batch or --limit refused; a failed run kept the manifest; unwritable checkpoints refused up front; the batch bound named$mpi"
