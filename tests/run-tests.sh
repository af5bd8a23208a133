#!/bin/sh
# Runs every unit test binary, then the MPI tests at 1..4 ranks, the embedding test, the fault
# scripts and the fuzz targets. Prints PASS, SKIP or FAIL per test and one closing line
# "N passed, N failed, N skipped".
# A test passes with exit status 0 and is skipped with 77 (the automake convention; a cmocka
# binary that exits 0 after skip() counts as skipped too); anything else fails. The reason shown
# for a skip is the test's last "SKIP: <why>" line, else its last line. A reason that starts with
# "missing " names a prerequisite the suite promises (Fashion-MNIST, mpiexec, python3, an OpenCL
# device): with TSR_TEST_REQUIRE=1 (`make test` sets it) such a skip is a failure.
# Env: BUILD (build folder), TSR_TEST_FILTER (substring of test names), TSR_TEST_REQUIRE (1: a
# missing prerequisite fails; default 0 here, 1 under make test), TSR_TEST_WRAPPER (e.g.
# "valgrind --error-exitcode=9 --leak-check=full" or a qemu runner), TSR_TEST_NO_MPI=1 to leave
# out the MPI tests.
BUILD=${BUILD:-build}
TSR_TEST_REQUIRE=${TSR_TEST_REQUIRE:-0}
passed=0
failed=0
skipped=0
failures=""
# Every rank and test gets its own PoCL cache and a bounded thread count (DESIGN.md gotchas).
export POCL_MAX_PTHREAD_COUNT=${POCL_MAX_PTHREAD_COUNT:-2}
tmp=$(mktemp -d /tmp/tsr-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export TSR_CACHE_DIR=${TSR_CACHE_DIR:-$tmp/cache}
# PoCL's compiled-kernel cache persists in the build folder (CLBlast's kernels take ~a minute
# to compile on PoCL): one folder for the sequential unit tests, one per rank for MPI tests,
# since concurrent builds in a shared PoCL cache have crashed.
pocl_cache=${TSR_TEST_POCL_CACHE:-$BUILD/pocl-cache}
mkdir -p "$pocl_cache"

# report NAME STATUS SECONDS: counts and prints the outcome of a test whose output is $tmp/out.
report() {
    case $2 in
    0) passed=$((passed + 1)); echo "PASS  $1 (${3}s)"; return ;;
    77)
        missing=$(grep '^SKIP: missing ' "$tmp/out" | head -n 1)
        if [ "$TSR_TEST_REQUIRE" = 1 ] && [ -n "$missing" ]; then
            failed=$((failed + 1)); failures="$failures $1"
            echo "FAIL  $1 (${missing#SKIP: }: a prerequisite of the suite; TSR_TEST_REQUIRE=0 skips instead)"
            return
        fi
        why=$(grep '^SKIP: ' "$tmp/out" | tail -n 1)
        [ -n "$why" ] || why=$(grep -v '^[[:space:]]*$' "$tmp/out" | tail -n 1)
        skipped=$((skipped + 1)); echo "SKIP  $1 (${why#SKIP: })"; return ;;
    esac
    failed=$((failed + 1)); failures="$failures $1"
    echo "FAIL  $1 (exit $2)"; sed 's/^/      | /' "$tmp/out" | tail -40
}

run() { # name, command...
    name=$1; shift
    start=$(date +%s)
    "$@" > "$tmp/out" 2>&1
    rc=$?
    # cmocka cannot exit 77: a binary whose tests passed but some skipped says "[  SKIPPED ]"
    [ "$rc" = 0 ] && grep -q '^\[  SKIPPED \]' "$tmp/out" && rc=77
    report "$name" "$rc" $(( $(date +%s) - start ))
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *.d) continue ;; esac
    n=$(basename "$t")
    [ -n "$TSR_TEST_FILTER" ] && case "$n" in *"$TSR_TEST_FILTER"*) ;; *) continue ;; esac
    POCL_CACHE_DIR="$pocl_cache/unit" run "$n" $TSR_TEST_WRAPPER "$t"
done

if [ -z "$TSR_TEST_NO_MPI" ] && [ -d "$BUILD/tests/mpi" ]; then
    for t in "$BUILD"/tests/mpi/test_*; do
        [ -x "$t" ] || continue
        case "$t" in *.d) continue ;; esac
        n=$(basename "$t")
        [ -n "$TSR_TEST_FILTER" ] && case "$n" in *"$TSR_TEST_FILTER"*) ;; *) continue ;; esac
        if ! command -v mpiexec > /dev/null; then
            echo "SKIP: missing mpiexec (Debian package mpich)" > "$tmp/out"
            report "$n" 77 0
            continue
        fi
        for np in 1 2 3 4; do
            run "$n -n $np" timeout 300 mpiexec -n $np sh -c \
                "POCL_CACHE_DIR=$pocl_cache/rank\$PMI_RANK exec $t"
        done
    done
fi

# --- embedding: install into a temporary DESTDIR, build samples/embed out of tree with
# pkg-config alone, run it (tests/embed-test.sh; skipped on cross ports).
if [ -z "$TSR_TEST_FILTER" ] || case embed in *"$TSR_TEST_FILTER"*) true ;; *) false ;; esac; then
    run embed env BUILD="$BUILD" sh tests/embed-test.sh
fi

# --- fault block (reliability owner): tests/fault/*.sh inject faults (a rank killed, a
# checkpoint write interrupted, resume after a kill, ...) into build/tests/fault programs.
# TSR_TEST_NO_FAULT=1 skips it, as does a TSR_TEST_WRAPPER (qemu, valgrind): the scripts start
# their programs themselves.
if [ -z "$TSR_TEST_NO_FAULT" ] && [ -z "$TSR_TEST_WRAPPER" ] && [ -d "$BUILD/tests/fault" ]; then
    for t in tests/fault/*.sh; do
        [ -f "$t" ] || continue
        n=fault_$(basename "$t" .sh)
        [ -n "$TSR_TEST_FILTER" ] && case "$n" in *"$TSR_TEST_FILTER"*) ;; *) continue ;; esac
        POCL_CACHE_DIR="$pocl_cache/unit" run "$n" env BUILD="$BUILD" sh "$t"
    done
fi

# --- language-model block: tests/lm/*.sh train GPTs through tsr-train on token files.
if [ -z "$TSR_TEST_WRAPPER" ]; then
    for t in tests/lm/*.sh; do
        [ -f "$t" ] || continue
        n=lm_$(basename "$t" .sh)
        [ -n "$TSR_TEST_FILTER" ] && case "$n" in *"$TSR_TEST_FILTER"*) ;; *) continue ;; esac
        run "$n" env BUILD="$BUILD" sh "$t"
    done
fi

# --- regress block: tests/regress/modes.sh trains mlp and cnn in every mode on a slice of
# Fashion-MNIST and compares losses, accuracy and parameter hashes bitwise with
# tests/regress/modes*.ref; --suite gpt does the same for gpt-mini (tests/regress/gpt*.ref).
# Skipped under a TSR_TEST_WRAPPER: the script starts its programs.
for suite in modes gpt; do
    if [ -z "$TSR_TEST_WRAPPER" ] && { [ -z "$TSR_TEST_FILTER" ] ||
        case regress_$suite in *"$TSR_TEST_FILTER"*) true ;; *) false ;; esac; }; then
        run regress_$suite env BUILD="$BUILD" sh tests/regress/modes.sh --suite $suite
    fi
done

# --- fuzz block (reliability owner): each libFuzzer target of build/fuzz (made by `make test`
# where clang exists) replays its seed corpus, regressions included, then fuzzes a few seconds
# (TSR_FUZZ_SECONDS, default 4). New inputs go to a temp folder, not the repository.
# TSR_TEST_NO_FUZZ=1 skips it, as does a TSR_TEST_WRAPPER (the targets are native programs).
fuzz_build=${TSR_FUZZ_BUILD:-build/fuzz}
if [ -z "$TSR_TEST_NO_FUZZ" ] && [ -z "$TSR_TEST_WRAPPER" ] && [ -d "$fuzz_build" ]; then
    for t in "$fuzz_build"/fuzz_*; do
        [ -x "$t" ] || continue
        case "$t" in *.d | *.log) continue ;; esac
        n=$(basename "$t")
        [ -n "$TSR_TEST_FILTER" ] && case "$n" in *"$TSR_TEST_FILTER"*) ;; *) continue ;; esac
        c=${n#fuzz_}
        mkdir -p "$tmp/fuzz-$c"
        run "$n" "$t" -max_total_time="${TSR_FUZZ_SECONDS:-4}" -rss_limit_mb=2048 \
            -artifact_prefix="$tmp/fuzz-$c-" "$tmp/fuzz-$c" "tests/fuzz/corpus/$c"
    done
fi

[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
