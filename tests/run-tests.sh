#!/bin/sh
# Runs every unit test binary, then the MPI tests at 1..4 ranks. Prints one closing line
# "N passed, N failed". Env: BUILD (build folder), TSR_TEST_FILTER (substring of test names),
# TSR_TEST_WRAPPER (e.g. "valgrind --error-exitcode=9 --leak-check=full" or a qemu runner),
# TSR_TEST_NO_MPI=1 to skip the MPI tests.
BUILD=${BUILD:-build}
passed=0
failed=0
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

run() { # name, command...
    name=$1; shift
    start=$(date +%s)
    if "$@" > "$tmp/out" 2>&1; then
        passed=$((passed + 1)); echo "PASS  $name ($(( $(date +%s) - start ))s)"
    else
        rc=$?
        failed=$((failed + 1)); failures="$failures $name"
        echo "FAIL  $name (exit $rc)"; sed 's/^/      | /' "$tmp/out" | tail -40
    fi
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
        for np in 1 2 3 4; do
            run "$n -n $np" timeout 300 mpiexec -n $np sh -c \
                "POCL_CACHE_DIR=$pocl_cache/rank\$PMI_RANK exec $t"
        done
    done
fi

# --- embedding: install into a temporary DESTDIR, build samples/embed out of tree with
# pkg-config alone, run it (tests/embed-test.sh; it skips itself on cross ports).
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

# --- regress block: tests/regress/modes.sh trains mlp and cnn in every mode on a slice of
# Fashion-MNIST and compares losses, accuracy and parameter hashes bitwise with
# tests/regress/modes.ref. Skipped under a TSR_TEST_WRAPPER: the script starts its programs.
if [ -z "$TSR_TEST_WRAPPER" ] && { [ -z "$TSR_TEST_FILTER" ] ||
    case regress_modes in *"$TSR_TEST_FILTER"*) true ;; *) false ;; esac; }; then
    run regress_modes env BUILD="$BUILD" sh tests/regress/modes.sh
fi

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
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
