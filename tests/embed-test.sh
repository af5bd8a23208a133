#!/bin/sh
# Embedding test: `make install` of the build in $BUILD into a temporary DESTDIR, then builds
# samples/embed out of tree against that install through pkg-config alone, and runs it.
# Env: BUILD (build folder, default build). The build's configuration (WITH_*, SANITIZE) comes
# from $BUILD/config.sh, written by make. Cross ports are skipped (the app would need the
# port's sysroot and qemu; their libraries are covered by the unit tests).
# Prints a PASS or FAIL line like tests/run-tests.sh, exit status 0 or 1; a skip prints
# "SKIP: <why>" and exits 77 (tests/support/prereq.sh).
BUILD=${BUILD:-build}
MAKE=${MAKE:-make}
top=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$BUILD/config.sh" ]; then
    echo "FAIL  embed (no $BUILD/config.sh: build the library with make first)"
    exit 1
fi
. "$BUILD/config.sh"
. "$top/tests/support/prereq.sh"
[ "$TSR_CROSS" = 1 ] && skip "cross port $TSR_PORT (the app would need its sysroot and qemu)"
tmp=$(mktemp -d /tmp/tsr-embed.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
fail() {
    echo "FAIL  embed ($1)"
    sed 's/^/      | /' "$tmp/log" | tail -40
    exit 1
}
# shellcheck disable=SC2086 # TSR_MAKE_ARGS is a list of VAR=value words
$MAKE -C "$top" --no-print-directory $TSR_MAKE_ARGS DESTDIR="$tmp/stage" install > "$tmp/log" 2>&1 ||
    fail "make install"
pcdir=$(find "$tmp/stage" -name tessera.pc -exec dirname {} \;)
[ -n "$pcdir" ] || fail "no tessera.pc under DESTDIR"
# The app is copied out of the tree, so nothing but pkg-config can lead it to tessera.
mkdir -p "$tmp/app"
cp "$top/samples/embed/Makefile" "$top/samples/embed/main.c" "$tmp/app/"
PKG_CONFIG_PATH="$pcdir" $MAKE -C "$tmp/app" --no-print-directory CC="$TSR_CC" \
    PKG_CONFIG_FLAGS="--define-variable=destdir=$tmp/stage" >> "$tmp/log" 2>&1 || fail "build"
(cd "$tmp/app" && TSR_CACHE_DIR="$tmp/cache" ./embed-app) >> "$tmp/log" 2>&1 || fail "run"
grep -q "embed-app: ok" "$tmp/log" || fail "no ok line"
echo "PASS  embed ($(( $(date +%s) - start ))s)"
