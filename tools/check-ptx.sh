#!/bin/sh
# Offline check of the tensor-core GEMM (backends/opencl/kernels/mma.cl): compiles each
# variant (bf16, fp16, tf32) to PTX with clang's NVPTX back-end, links tools/ptx-builtins.cl
# for the OpenCL built-ins it calls, and assembles the PTX with NVIDIA's ptxas for sm_80 and
# sm_90, printing ptxas' resource use (registers, spills, shared memory). Proves the inline
# PTX and the kernel assemble for Ampere and Hopper; not what NVIDIA's OpenCL compiler makes
# of the source, nor that the numbers are right (tests/unit/test_mma.c on the device does).
# Not part of `make test`. Tools: CLANG (clang-15, clang), PTXAS (PATH, /usr/local/cuda/bin,
# a pip-installed CUDA nvcc wheel's bin). Exit 0: all assembled; 77: skipped (tool missing).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/backends/opencl/kernels/mma.cl
shim=$root/tools/ptx-builtins.cl

find_tool() { # first of the candidates that runs
    for t in "$@"; do
        if command -v "$t" >/dev/null 2>&1; then command -v "$t"; return 0; fi
    done
    return 1
}
CLANG=${CLANG:-$(find_tool clang-15 clang || true)}
llvm_bin=$(dirname "$(readlink -f "${CLANG:-/nonexistent}")" 2>/dev/null || true)
LLVM_LINK=${LLVM_LINK:-$(find_tool "$llvm_bin/llvm-link" llvm-link-15 llvm-link || true)}
LLC=${LLC:-$(find_tool "$llvm_bin/llc" llc-15 llc || true)}
OPT=${OPT:-$(find_tool "$llvm_bin/opt" opt-15 opt || true)}
PTXAS=${PTXAS:-$(find_tool ptxas /usr/local/cuda/bin/ptxas /tmp/ptx/lib/python3*/site-packages/nvidia/cuda_nvcc/bin/ptxas || true)}
for v in CLANG LLVM_LINK LLC OPT PTXAS; do
    eval "t=\${$v}"
    if [ -z "$t" ]; then
        echo "check-ptx: SKIPPED: no $v found (set $v=/path/to/tool)"
        exit 77
    fi
done
echo "check-ptx: $("$CLANG" --version | head -1); $("$PTXAS" --version | tail -1)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cl="$CLANG -x cl -cl-std=CL1.2 -target nvptx64-nvidia-nvcl -Xclang -finclude-default-header -O3 -c -emit-llvm"
$cl -o "$tmp/shim.bc" "$shim"
fail=0
for variant in 1:bf16:m16n8k16.row.col.f32.bf16.bf16.f32 2:fp16:m16n8k16.row.col.f32.f16.f16.f32 \
               3:tf32:m16n8k8.row.col.f32.tf32.tf32.f32; do
    id=${variant%%:*}; rest=${variant#*:}; name=${rest%%:*}; insn=mma.sync.aligned.${rest#*:}
    $cl -DTSR_MMA="$id" -o "$tmp/$name.bc" "$src"
    "$LLVM_LINK" -o "$tmp/$name.linked.bc" "$tmp/$name.bc" "$tmp/shim.bc"
    "$OPT" -O3 -o "$tmp/$name.opt.bc" "$tmp/$name.linked.bc"
    # clang 15 knows no sm_90: PTX for sm_80 (PTX ISA 7.0) is what sm_90 runs too
    "$LLC" -O3 -mcpu=sm_80 -mattr=+ptx70 -o "$tmp/$name.ptx" "$tmp/$name.opt.bc"
    [ -n "${KEEP_PTX:-}" ] && cp "$tmp/$name.ptx" "$KEEP_PTX/mma-$name.ptx"
    count=$(grep -c "$insn" "$tmp/$name.ptx" || true)
    if [ "$count" -eq 0 ]; then
        echo "check-ptx: FAIL: $name: no $insn in the PTX"
        fail=1
        continue
    fi
    if grep -q "^\.extern\|call" "$tmp/$name.ptx"; then
        echo "check-ptx: FAIL: $name: the PTX still calls functions:"
        grep "call" "$tmp/$name.ptx" | sort | uniq -c
        fail=1
        continue
    fi
    for arch in sm_80 sm_90; do
        if out=$("$PTXAS" -arch=$arch -v -o "$tmp/$name.$arch.cubin" "$tmp/$name.ptx" 2>&1); then
            info=$(echo "$out" | grep -o "Used .*" | head -1)
            spill=$(echo "$out" | grep -o "[0-9]* bytes spill stores" | head -1)
            echo "check-ptx: ok: $name $arch: $count x $insn; $info; $spill"
        else
            echo "check-ptx: FAIL: $name $arch:"
            echo "$out"
            fail=1
        fi
    done
done
exit $fail
