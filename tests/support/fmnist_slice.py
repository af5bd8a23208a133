#!/usr/bin/env python3
"""Writes the first TRAIN training and TEST test samples of Fashion-MNIST (the gzipped IDX
files in SRC) as plain MNIST-format IDX files into DST, for tests that train on a small slice.
Usage: fmnist_slice.py SRC DST TRAIN TEST"""
import gzip
import struct
import sys

src, dst, train, test = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for split, n in (("train", train), ("t10k", test)):
    for kind, rec in (("images-idx3", 784), ("labels-idx1", 1)):
        name = "%s-%s-ubyte" % (split, kind)
        raw = gzip.open("%s/%s.gz" % (src, name)).read()
        hdr = 16 if rec > 1 else 8
        out = raw[:4] + struct.pack(">I", n) + raw[8:hdr] + raw[hdr:hdr + n * rec]
        with open("%s/%s" % (dst, name), "wb") as f:
            f.write(out)
