#!/bin/sh
# Fault: kill -9 of rank 1 of `mpiexec -n 2 tsr-train --mode data` in mid-training (after its
# first checkpoint). Rank 0 must stop with "rank 1 lost" (TSR_COMM_TIMEOUT=3) instead of
# hanging, and the last checkpoint must load. mpiexec runs with -disable-auto-cleanup and each
# rank under a shell that outlives it, so the launcher does not end rank 0 for us. Env: BUILD.
set -u
BUILD=${BUILD:-build}
src=${TSR_DATA_DIR:-/usr/share/datasets/fashion-mnist}
command -v mpiexec > /dev/null || { echo "SKIP: no mpiexec"; exit 0; }
grep -q "WITH_MPI=0" "$BUILD/config.sh" 2> /dev/null && { echo "SKIP: built without MPI"; exit 0; }
command -v python3 > /dev/null || { echo "SKIP: no python3"; exit 0; }
[ -f "$src/train-images-idx3-ubyte.gz" ] || { echo "SKIP: no Fashion-MNIST in $src"; exit 0; }
grep -q -- "--mode" "$BUILD/bin/tsr-train" 2> /dev/null || { echo "SKIP: tsr-train without --mode"; exit 0; }
d=$(mktemp -d /tmp/tsr-fault.XXXXXX)
trap 'rm -rf "$d"' EXIT
python3 - "$src" "$d" <<'PY' || exit 1
import gzip, struct, sys
src, dst = sys.argv[1:]
for split, n in (("train", 4096), ("t10k", 128)):
    for kind, rec in (("images-idx3", 784), ("labels-idx1", 1)):
        name = "%s-%s-ubyte" % (split, kind)
        raw = gzip.open("%s/%s.gz" % (src, name)).read()
        hdr = 16 if rec > 1 else 8
        open("%s/%s" % (dst, name), "wb").write(raw[:4] + struct.pack(">I", n) + raw[8:hdr] + raw[hdr:hdr + n * rec])
PY
prog=$(pwd)/$BUILD/bin/tsr-train
start=$(date +%s)
TSR_COMM_TIMEOUT=3 OMP_NUM_THREADS=1 timeout 90 mpiexec -disable-auto-cleanup -n 2 sh -c \
    "'$prog' --mode data --data '$d' --epochs 1000 --quiet --checkpoint '$d/run.ckpt' \
        > '$d/out.'\$PMI_RANK 2>&1 & echo \$! > '$d/pid.'\$PMI_RANK; wait \$!" > "$d/mpiexec" 2>&1 &
launcher=$!
i=0
while [ ! -f "$d/run.ckpt" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
[ -f "$d/run.ckpt" ] || { echo "FAIL: no checkpoint after 60 s"; cat "$d"/out.*; kill $launcher; exit 1; }
sleep 1
kill -9 "$(cat "$d/pid.1")"
killed=$(date +%s)
wait $launcher
rc=$?
took=$(( $(date +%s) - killed ))
echo "rank 1 killed after $((killed - start))s; mpiexec exit $rc ${took}s later; rank 0 said:"
tail -n 3 "$d/out.0"
[ "$rc" != 124 ] || { echo "FAIL: hang (killed by timeout)"; exit 1; }
[ "$took" -le 20 ] || { echo "FAIL: rank 0 took ${took}s to stop"; exit 1; }
grep -q "rank 1 lost: no progress for 3 s" "$d/out.0" || { echo "FAIL: no clear error on rank 0"; exit 1; }
"$BUILD/tests/fault/fault_train" --verify "$d/run.ckpt" || { echo "FAIL: last checkpoint does not load"; exit 1; }
python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$d/run.ckpt.manifest.json" ||
    { echo "FAIL: manifest unreadable"; exit 1; }
echo "last checkpoint and manifest intact"
