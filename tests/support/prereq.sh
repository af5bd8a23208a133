# Sourced by the shell tests (tests/fault/*.sh, tests/embed-test.sh): skips that report
# themselves. A skip prints "SKIP: <why>" as its last line and exits 77 (the automake
# convention), which tests/run-tests.sh counts as skipped. A reason that starts with "missing "
# names a prerequisite the suite promises: `make test` turns it into a failure
# (TSR_TEST_REQUIRE); any other reason says why the test does not apply to this build.

# skip WHY...: reports the skip and ends the test.
skip() {
    echo "SKIP: $*"
    exit 77
}

# need_mpi: this build has MPI and mpiexec is installed.
need_mpi() {
    grep -q "WITH_MPI=0" "${BUILD:-build}/config.sh" 2> /dev/null && skip "built without MPI (WITH_MPI=0)"
    command -v mpiexec > /dev/null || skip "missing mpiexec (Debian package mpich)"
}

# need_python3: python3 is installed (the scripts check results with it).
need_python3() {
    command -v python3 > /dev/null || skip "missing python3"
}

# need_fashion_mnist DIR: DIR holds Fashion-MNIST's gzipped IDX files.
need_fashion_mnist() {
    [ -f "$1/train-images-idx3-ubyte.gz" ] || skip "missing Fashion-MNIST in $1 (TSR_DATA_DIR)"
}

# fmnist_workdir TRAIN TEST: python3 and Fashion-MNIST (TSR_DATA_DIR) are there; $d is a new
# temp folder, removed at exit, holding the first TRAIN training and TEST test samples.
fmnist_workdir() {
    src=${TSR_DATA_DIR:-/usr/share/datasets/fashion-mnist}
    need_python3
    need_fashion_mnist "$src"
    d=$(mktemp -d /tmp/tsr-fault.XXXXXX)
    trap 'rm -rf "$d"' EXIT
    python3 tests/support/fmnist_slice.py "$src" "$d" "$1" "$2" || exit 1
}
