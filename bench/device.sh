#!/bin/sh
# Figures that only a GPU machine can give, in one command (device time is short).
# Build here first with `CFLAGS=-O2 make BUILD=build/gpu lib samples tests`, copy the data set
# into .device/data, then on the GPU machine (../shared/device/README.md):
#   bash .device/env.sh sh bench/device.sh tests|quicktests|topo|gemm|mma|blas|train|allreduce|scaling|hetero ...
# Each part prints a header; every figure is a side-by-side ratio against its peer.
BUILD=${BUILD:-build/gpu}
export BUILD
export TSR_DATA_DIR=${TSR_DATA_DIR:-$PWD/.device/data}
export TSR_CACHE_DIR=${TSR_CACHE_DIR:-/tmp/tsr-cache}
bin=$BUILD/bin
gpu=${TSR_BENCH_GPU:-}   # tessera device id of the GPU; found from tsr-topo when empty
find_gpu() {
    [ -n "$gpu" ] && return
    gpu=$($bin/tsr-topo --json 2>/dev/null | python3 -c '
import json, sys
t = json.load(sys.stdin)
for d in t.get("devices", []):
    if d.get("kind") == "gpu":
        print(d["id"]); break')
}

for part in "$@"; do
    echo "=== $part ($(date -u +%H:%M:%S))"
    case $part in
    tests)
        nvidia-smi -L; clinfo -l
        TSR_TEST_NO_FUZZ=1 sh tests/run-tests.sh 2>&1 | grep -v '^PASS' | tail -60 ;;
    quicktests)
        TSR_TEST_FILTER=${TSR_TEST_FILTER:-test_opencl} TSR_TEST_NO_FUZZ=1 TSR_TEST_NO_FAULT=1 \
            sh tests/run-tests.sh 2>&1 | tail -12 ;;
    topo)
        $bin/tsr-topo --recalibrate ;;
    gemm)
        find_gpu
        $bin/tsr-gemm-bench --device "$gpu" --sizes 1024,2048,4096,8192
        $bin/tsr-gemm-bench --device host --sizes 1024,2048,4096
        python3 -c '
import time, numpy as np
for n in (1024, 2048, 4096):
    a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)
    a @ b; reps = 5; t = time.perf_counter()
    for _ in range(reps): a @ b
    print("numpy %s host n=%-5d %9.1f GFLOP/s" % (np.__version__, n, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9))'
        python3 - <<'PY'
import time, torch
torch.backends.cuda.matmul.allow_tf32 = False
for n in (1024, 2048, 4096, 8192):
    a = torch.randn(n, n, device="cuda"); b = torch.randn(n, n, device="cuda")
    for _ in range(3): a @ b
    torch.cuda.synchronize(); reps = max(3, int(2e12 / (2 * n**3))); t = time.perf_counter()
    for _ in range(reps): a @ b
    torch.cuda.synchronize(); t = time.perf_counter() - t
    print("cuBLAS FP32 (torch %s) n=%-5d %9.1f GFLOP/s" % (torch.__version__, n, 2 * n**3 * reps / t / 1e9))
PY
        ;;
    mma)
        # The tensor-core GEMM (kernels/mma.cl, opt-in through TSR_TENSOR_CORES). Correctness
        # first: test_mma_hw against a double reference (bf16, fp16, tf32; odd
        # shapes, transposes, batches); a failure or a skip ends the part. Then 4096^3 and
        # 8192^3 side by side with cuBLAS at the same precision (fp32 accumulation), REPEAT
        # rounds. Ours is the op as training runs it: float32 operands in memory, rounded by
        # mma.cl while staged; cuBLAS gets 16-bit operands already in memory. It needs only
        # three binaries of an ordinary build (make all tests), so a run is, from the root:
        #   command: bash .device/env.sh env BUILD=build sh bench/device.sh mma
        #   carry: [".device", "build/tests/test_mma_hw", "build/bin/tsr-gemm-bench",
        #           "build/bin/tsr-topo"]   (~8 MiB + the runtime; about 2 minutes)
        find_gpu
        out=$($BUILD/tests/test_mma_hw 2>&1); rc=$?
        echo "$out" | grep -E 'verified|SKIP|ERROR|FAILED|PASSED'
        if [ $rc -ne 0 ] || ! echo "$out" | grep -q 'mma.sync verified'; then
            echo "mma: test_mma_hw did not verify mma.sync (rc $rc): no timings"; continue
        fi
        for r in $(seq ${REPEAT:-3}); do
            echo "--- round $r"
            for p in bf16 fp16; do
                TSR_TENSOR_CORES=1 $bin/tsr-gemm-bench --device "$gpu" --precision $p --sizes 4096,8192
            done
            TSR_TENSOR_CORES=tf32 $bin/tsr-gemm-bench --device "$gpu" --sizes 4096,8192
            $bin/tsr-gemm-bench --device "$gpu" --precision bf16 --sizes 4096,8192 # CLBlast's path
            python3 - <<'PY'
import time, torch
m = torch.backends.cuda.matmul
m.allow_fp16_reduced_precision_reduction = False  # float32 accumulation throughout, as ours
m.allow_bf16_reduced_precision_reduction = False
for name, dt, tf32 in (("bf16", torch.bfloat16, False), ("fp16", torch.float16, False),
                       ("tf32", torch.float32, True)):
    m.allow_tf32 = tf32
    for n in (4096, 8192):
        a = torch.randn(n, n, device="cuda").to(dt); b = torch.randn(n, n, device="cuda").to(dt)
        for _ in range(3): a @ b
        torch.cuda.synchronize(); reps = 0; t0 = time.perf_counter()
        while True:
            for _ in range(max(1, reps)): a @ b
            torch.cuda.synchronize(); reps += max(1, reps); t = time.perf_counter() - t0
            if t >= 0.3: break
        print("cuBLAS %s (torch %s) n=%-5d %9.1f GFLOP/s" % (name, torch.__version__, n, 2 * n**3 * reps / t / 1e9))
PY
        done ;;
    blas)
        # which OpenBLAS kernel the host backend gets, and what forcing SkylakeX gives
        OPENBLAS_VERBOSE=2 $bin/tsr-gemm-bench --device host --sizes 2048 2>&1 | head -4
        OPENBLAS_CORETYPE=SkylakeX OPENBLAS_VERBOSE=2 $bin/tsr-gemm-bench --device host --sizes 2048 2>&1 | head -4 ;;
    train)
        find_gpu
        for b in 64 256; do
            python3 bench/train_vs_torch.py --tsr-train $bin/tsr-train --models mlp,cnn \
                --batch $b --threads 16 --device "$gpu" --torch-device cuda --data "$TSR_DATA_DIR"
        done ;;
    allreduce)
        for n in 2 4 8 16; do
            mpiexec -n $n $bin/tsr-allreduce-bench --algos ${TSR_BENCH_ALGOS:-mpi,auto} --iters 10 --csv
        done ;;
    scaling)
        # weak scaling, one core per rank, local batch 64: N ranks against 1 rank, same run
        for z in ${ZEROS:-0 1}; do
            for n in 1 2 4 8 16; do
                printf 'zero=%s ranks=%-2s ' $z $n
                TSR_ZERO=$z OPENBLAS_NUM_THREADS=1 TSR_HOST_THREADS=1 mpiexec -n $n $bin/tsr-train --mode data \
                    --model mlp --epochs 1 --batch $((64 * n)) --json --quiet 2>/dev/null | tail -1 |
                    grep -o '"samples_per_s":[0-9.]*'
            done
        done
        # the issue's setting: 2 ranks on 2 cores against 1 rank on 1 core, with the ceiling of
        # two independent processes; on SMT siblings of one core and on two separate cores
        lscpu | grep -iE 'model name|thread|core|socket'
        sib=$(cat /sys/devices/system/cpu/cpu0/topology/thread_siblings_list)
        other=$(awk -v s="$sib" 'BEGIN {n = split(s, a, /[,-]/); for (c = 1; c < 64; c++) {f = 0; for (i = 1; i <= n; i++) if (a[i] == c) f = 1; if (!f) {print c; exit}}}')
        echo "cpu0 siblings: $sib; a separate core: $other"
        for pair in "$sib" "0,$other"; do
            case $pair in *,*|*-*) ;; *) continue ;; esac
            for z in ${ZEROS:-0 1}; do
                echo "cores $pair, TSR_ZERO=$z:"
                TSR_ZERO=$z REPEAT=${REPEAT:-3} LIMIT=60000 taskset -c "$pair" sh bench/scaling.sh 2>&1 | tail -1
            done
        done ;;
    pipeline)
        # model parallelism on GPU + CPU: the planner's choice, then measured single-process
        # against 2-stage pipelines (GPU first, host CPU second)
        find_gpu
        m=${PIPE_MODEL:-conv5x5:64,relu,pool2,conv5x5:128,relu,pool2,dense:4096,relu,dense:4096,relu,dense:10}
        $bin/tsr-plan --model "$m" --batch 256 --optimizer adam
        t=$BUILD/tests/mpi/test_pipeline
        mpiexec -n 1 $t --bench "$m" --batch 256 --steps 10 --micro 0 --device "$gpu"
        for st in ${PIPE_SPLITS:-10 8}; do
            mpiexec -n 2 $t --bench "$m" --batch 256 --steps 10 --micro 8 --stages $st --device "$gpu" --device1 host
        done ;;
    hetero)
        # rank 0 on the GPU, rank 1 on the host CPU: the batch split follows throughput
        find_gpu
        echo "GPU alone:"
        mpiexec -n 1 $bin/tsr-train --mode data --device "$gpu" --model cnn --epochs 1 --json --quiet 2>&1 | tail -1
        echo "GPU + CPU:"
        TSR_LOG=info mpiexec -n 1 $bin/tsr-train --mode data --device "$gpu" --model cnn --epochs 1 --json --quiet : \
            -n 1 $bin/tsr-train --mode data --device 0 --model cnn --epochs 1 --json --quiet 2>&1 | tail -8 ;;
    *) echo "device.sh: unknown part '$part'" >&2; exit 2 ;;
    esac
done
