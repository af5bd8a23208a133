#!/usr/bin/env python3
"""Reference safetensors reader and writer in plain Python (struct, json), for the interop test
of tests/unit/test_safetensors.c. Where the `safetensors` package is importable, it is used as
well, as the authority.

  safetensors_ref.py dump FILE     validates FILE as the reference does, re-serialises its header
                                   as the reference writer would, and prints one JSON line per
                                   tensor ({"name", "dtype", "shape", "hex", "same_header"}) and per
                                   metadata entry ({"meta": key, "value": v}); exit 1 if refused
  safetensors_ref.py write FILE    writes a file built by hand (all dtypes, awkward values, a
                                   scalar, an empty tensor, metadata, an unaligned header, tensors
                                   listed out of offset order) and prints the same dump of it;
                                   with the package, also FILE.pkg written by safetensors itself
Where the package is installed, `dump` also checks that it reads the same bytes.
"""
import json
import math
import struct
import sys

MAX_HEADER = 100_000_000
# The reference's dtypes in its enum order (increasing alignment); bits per element.
DTYPES = [("BOOL", 8), ("F4", 4), ("F6_E2M3", 6), ("F6_E3M2", 6), ("U8", 8), ("I8", 8),
          ("F8_E5M2", 8), ("F8_E4M3", 8), ("F8_E8M0", 8), ("I16", 16), ("U16", 16), ("F16", 16),
          ("BF16", 16), ("I32", 32), ("U32", 32), ("F32", 32), ("C64", 64), ("F64", 64),
          ("I64", 64), ("U64", 64)]
BITS = dict(DTYPES)
RANK = {name: i for i, (name, _) in enumerate(DTYPES)}


class Refused(Exception):
    pass


def read(data):
    """(tensors {name: (dtype, shape, bytes)}, metadata dict or None, header length)."""
    if len(data) < 8:
        raise Refused("HeaderTooSmall")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER:
        raise Refused("HeaderTooLarge")
    if 8 + n > len(data):
        raise Refused("InvalidHeaderLength")
    try:
        text = data[8:8 + n].decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("InvalidHeader")

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise Refused("duplicate key")
        return dict(pairs)

    try:
        header = json.loads(text, object_pairs_hook=no_duplicates)
    except ValueError:
        raise Refused("InvalidHeaderDeserialization")
    if not isinstance(header, dict):
        raise Refused("InvalidHeaderDeserialization")
    meta = header.pop("__metadata__", None)
    if meta is not None and (not isinstance(meta, dict)
                             or not all(isinstance(v, str) for v in meta.values())):
        raise Refused("metadata values are strings")
    entries = []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise Refused("InvalidHeaderDeserialization")
        ints = list(shape) + [begin, end]
        if dtype not in BITS or not all(type(v) is int and 0 <= v < 2**64 for v in ints):
            raise Refused("InvalidHeaderDeserialization")
        entries.append((begin, end, name, dtype, shape))
    entries.sort()
    start = 8 + n
    at = 0
    tensors = {}
    for begin, end, name, dtype, shape in entries:
        if begin != at or end < begin:
            raise Refused("InvalidOffset(%s)" % name)
        at = end
        bits = math.prod(shape) * BITS[dtype]
        if bits % 8 or bits // 8 != end - begin:
            raise Refused("TensorInvalidInfo")
        tensors[name] = (dtype, list(shape), bytes(data[start + begin:start + end]))
    if start + at != len(data):
        raise Refused("MetadataIncompleteBuffer")
    return tensors, meta, n


def serialize(tensors, meta):
    """The file the reference writer makes: widest dtype first, then by name; compact JSON,
    metadata first (in the order given: the reference writes its hash map's order); padded
    with spaces to a multiple of 8."""
    order = sorted(tensors.items(), key=lambda kv: (-RANK[kv[1][0]], kv[0].encode("utf-8")))
    header = {}
    if meta:
        header["__metadata__"] = meta
    at = 0
    for name, (dtype, shape, raw) in order:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(raw)]}
        at += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(raw for _, (_, _, raw) in order)


def dump(data):
    tensors, meta, _ = read(data)
    same = serialize(tensors, meta) == data
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        print(json.dumps({"name": name, "dtype": dtype, "shape": shape, "hex": raw.hex(),
                          "same_header": same}))
    for key in sorted(meta or {}):
        print(json.dumps({"meta": key, "value": meta[key]}))


def package_check(path, data):
    """Where the safetensors package is installed, it must read the file to the same bytes."""
    try:
        from safetensors import deserialize
    except ImportError:
        return
    tensors, _, _ = read(data)
    loaded = {name: t for name, t in deserialize(data)}
    if sorted(loaded) != sorted(tensors):
        raise SystemExit("%s: the safetensors package finds other tensors" % path)
    for name, (dtype, shape, raw) in tensors.items():
        t = loaded[name]
        if (t["dtype"], list(t["shape"]), bytes(t["data"])) != (dtype, shape, raw):
            raise SystemExit("%s: the safetensors package reads %r differently" % (path, name))


# The package's names of the dtypes (TensorSpec, safetensors >= 0.7).
PACKAGE_DTYPE = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
                 "I32": "int32", "U32": "uint32", "I64": "int64", "U64": "uint64",
                 "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


def package_write(path, tensors, meta):
    """FILE written by the safetensors package itself, where it is installed."""
    try:
        import safetensors
    except ImportError:
        return
    spec = getattr(safetensors, "TensorSpec", None)
    if spec is None:  # older releases take plain dictionaries
        arg = {name: {"dtype": d, "shape": s, "data": raw} for name, (d, s, raw) in tensors.items()}
        data = safetensors.serialize(arg, meta)
    else:
        import ctypes
        keep = {name: ctypes.create_string_buffer(raw, max(len(raw), 1))
                for name, (_, _, raw) in tensors.items()}
        arg = {name: spec(dtype=PACKAGE_DTYPE[d], shape=s, data_ptr=ctypes.addressof(keep[name]),
                          data_len=len(raw)) for name, (d, s, raw) in tensors.items()}
        data = safetensors.serialize(arg, meta)
    with open(path, "wb") as f:
        f.write(bytes(data))


def build():
    """Tensors written by hand: {name: (dtype, shape, raw bytes)}."""
    f32 = [0.0, -0.0, 1.0, -2.5, 3.4028234663852886e38, 1.401298464324817e-45, 1e-40,
           float("inf"), float("-inf")]
    raw_f32 = struct.pack("<%df" % len(f32), *f32) + struct.pack("<I", 0x7FA00001)  # sNaN payload
    f16 = [0.0, -0.0, 1.0, 65504.0, -65504.0, 5.960464477539063e-08, 6.097555160522461e-05,
           float("inf"), 0.333251953125]
    raw_f16 = struct.pack("<%de" % len(f16), *f16) + struct.pack("<H", 0x7E01)
    bf16_bits = [0x0000, 0x8000, 0x3F80, 0x7F7F, 0x0001, 0x807F, 0x7F80, 0xFF80, 0x7FC1, 0x3EAB]
    raw_bf16 = struct.pack("<%dH" % len(bf16_bits), *bf16_bits)
    f64 = [0.1, -1e300, 5e-324, 1.0000000596046448, 3.4028235677973366e38, float("nan")]
    return {
        "wte.weight": ("F32", [2, 5], raw_f32),
        "h.0.attn.c_attn.weight": ("F16", [10], raw_f16),
        "h.0.ln_1.bias": ("BF16", [5, 2], raw_bf16),
        "double": ("F64", [3, 2], struct.pack("<6d", *f64)),
        "ids": ("I64", [3], struct.pack("<3q", -1, 2**62, -(2**63))),
        "i32": ("I32", [2], struct.pack("<2i", -7, 2**31 - 1)),
        "u16": ("U16", [3], struct.pack("<3H", 0, 1, 65535)),
        "i8": ("I8", [4], struct.pack("<4b", -128, -1, 0, 127)),
        "mask": ("BOOL", [2, 2], bytes([1, 0, 0, 1])),
        "scalar": ("F32", [], struct.pack("<f", 42.0)),
        "empty": ("F32", [0, 3], b""),
        "caf\u00e9 \"q\"": ("U8", [2], b"\x00\xff"),
    }


def write(path):
    tensors = build()
    meta = {"format": "pt", "note": "line\nbreak \"quoted\" \u00e9"}
    # By hand: a header two bytes short of 8-alignment, listed in reverse offset order, with
    # leading and trailing spaces (all valid; the reference reader sorts by offset).
    order = sorted(tensors.items(), key=lambda kv: kv[0])
    header = {}
    at = 0
    for name, (dtype, shape, raw) in order:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(raw)]}
        at += len(raw)
    header = dict(reversed(list(header.items())))
    header["__metadata__"] = meta
    text = b" " + json.dumps(header).encode("utf-8")
    text += b" " * ((6 - len(text)) % 8)
    data = struct.pack("<Q", len(text)) + text + b"".join(raw for _, (_, _, raw) in order)
    with open(path, "wb") as f:
        f.write(data)
    dump(data)
    package_write(path + ".pkg", tensors, meta)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("dump", "write"):
        sys.exit(__doc__)
    if sys.argv[1] == "write":
        write(sys.argv[2])
        return
    with open(sys.argv[2], "rb") as f:
        data = f.read()
    try:
        dump(data)
    except Refused as e:
        sys.exit("%s: refused: %s" % (sys.argv[2], e))
    package_check(sys.argv[2], data)


if __name__ == "__main__":
    main()
