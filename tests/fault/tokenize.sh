#!/bin/sh
# tsr-tokenize end to end: text files -> OUTDIR/train.bin and val.bin, whose bytes Python
# checks against the llm.c layout (256 little-endian int32: 20240520, 1, count; then uint16
# tokens) and nanoGPT's split (train = the first int(n * (1 - F)) bytes); then every misuse
# refused with a message naming what was wrong, and nothing written. With the fortunes
# package installed (make deps), its English files tokenize too. Env: BUILD.
set -u
BUILD=${BUILD:-build}
tok="$BUILD/bin/tsr-tokenize"
. "$(dirname "$0")/../support/prereq.sh"
need_python3
d=$(mktemp -d /tmp/tsr-tokenize.XXXXXX)
trap 'rm -rf "$d"' EXIT
fail() { echo "FAIL: $*"; [ -f "$d/err" ] && sed 's/^/  | /' "$d/err"; exit 1; }

# checks OUTDIR against the concatenated inputs: check OUTDIR FRACTION IN...
check() {
    python3 - "$@" << 'PY' || fail "the token files of $1 differ from the text"
import struct, sys
out, frac, inputs = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
text = b"".join(open(p, "rb").read() for p in inputs)
n = len(text)
split = int(n * (1 - frac))
for name, want in (("train.bin", text[:split]), ("val.bin", text[split:])):
    data = open(f"{out}/{name}", "rb").read()
    header = struct.unpack("<256i", data[:1024])
    assert header[:3] == (20240520, 1, len(want)), (name, header[:3], len(want))
    assert all(h == 0 for h in header[3:]), name
    assert len(data) == 1024 + 2 * len(want), (name, len(data))
    tokens = struct.unpack(f"<{len(want)}H", data[1024:])
    assert tokens == tuple(want), name
print(f"{out}: {split} + {n - split} tokens as expected")
PY
}

printf 'First Citizen:\nBefore we proceed any further, hear me speak.\n' > "$d/a.txt"
printf 'caf\303\251 \000\377 bytes, all 256 of them are tokens\n' > "$d/b.txt"
"$tok" --bytes "$d/a.txt" "$d/b.txt" "$d/out" --val-fraction 0.25 > "$d/log" 2> "$d/err" ||
    fail "tokenizing two files"
grep -q "train.bin: 78 tokens" "$d/log" || fail "no token count printed: $(cat "$d/log")"
check "$d/out" 0.25 "$d/a.txt" "$d/b.txt"
"$tok" --bytes "$d/b.txt" "$d/a.txt" "$d/out" > /dev/null 2> "$d/err" || fail "default fraction"
check "$d/out" 0.1 "$d/b.txt" "$d/a.txt" # written over the previous files

# misuse: exit status, message, and no output folder or files left behind
refused=0
refuse() { # want_rc message args...
    rc=$1 msg=$2; shift 2
    refused=$((refused + 1))
    "$tok" "$@" > /dev/null 2> "$d/err"
    got=$?
    [ $got = "$rc" ] || fail "tsr-tokenize $*: exit $got, expected $rc"
    grep -qF -- "$msg" "$d/err" || fail "tsr-tokenize $*: no '$msg' in the message"
    [ ! -e "$d/new" ] || fail "tsr-tokenize $* left $d/new"
}
: > "$d/empty.txt"
refuse 1 "$d/missing.txt: cannot open: No such file or directory" --bytes "$d/a.txt" "$d/missing.txt" "$d/new"
refuse 1 "$d: read failed: Is a directory" --bytes "$d" "$d/new"
refuse 1 "the corpus is empty" --bytes "$d/empty.txt" "$d/new"
refuse 1 "61 bytes: 61 for training and 0 for validation with --val-fraction 1e-20" \
    --bytes "$d/a.txt" "$d/new" --val-fraction 1e-20
refuse 1 "61 bytes: 0 for training and 61 for validation" --bytes "$d/a.txt" "$d/new" --val-fraction 0.99
for f in 0 1 -0.5 1.5 nan abc ""; do
    refuse 2 "--val-fraction '$f' is not a number in (0, 1)" --bytes "$d/a.txt" "$d/new" --val-fraction "$f"
done
refuse 2 "$d/a.txt exists and is not a folder" --bytes "$d/b.txt" "$d/a.txt"
refuse 2 "--bytes is required" "$d/a.txt" "$d/new"
refuse 2 "at least one input file and the output folder" --bytes "$d/new"
refuse 2 "unknown option '--words'" --words "$d/a.txt" "$d/new"

# the packaged corpus: the plain text files beside fortune's .dat indexes
src=/usr/share/games/fortunes
if [ -d "$src" ]; then
    files=$(find "$src" -maxdepth 1 -type f ! -name '*.*' | sort)
    [ -n "$files" ] || fail "no plain text files in $src"
    "$tok" --bytes $files "$d/fortunes" > /dev/null 2> "$d/err" || fail "tokenizing $src"
    check "$d/fortunes" 0.1 $files > /dev/null
    corpus="; the fortunes corpus ($(echo $files | wc -w) files) tokenized"
else
    corpus="; fortunes not installed (make deps): its corpus part skipped"
fi
echo "two text files tokenized byte for byte (split as nanoGPT's); $refused misuses refused$corpus"
