#!/usr/bin/env python3
"""Writes the seed corpus of the apply_layer fuzz target (seeds_apply_layer/).

Each seed is a small layer tar trying one way out of the root. The fuzz target
applies layers to /parent/root next to /parent/sentinel, so the seeds aim at
the sentinel by absolute path, by `..` and through symlinks. Python's tarfile
writes `..`, absolute names and links without complaint, which is why the
seeds are made here. Run it from anywhere; it rewrites the directory.
"""

import gzip
import io
import os
import shutil
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "seeds_apply_layer")
SENTINEL = "/parent/sentinel"
UP = "../" * 8


def entry(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644, pax=None):
    return (name, kind, data, link, mode, pax)


def sym(name, target):
    return entry(name, tarfile.SYMTYPE, link=target, mode=0o777)


def hard(name, target):
    return entry(name, tarfile.LNKTYPE, link=target)


def d(name, mode=0o755):
    return entry(name, tarfile.DIRTYPE, mode=mode)


def f(name, data=b"PWNED\n", mode=0o644, pax=None):
    return entry(name, data=data, mode=mode, pax=pax)


def tar(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, kind, data, link, mode, pax in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = mode
            info.mtime = 1600000000
            info.linkname = link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            if pax:
                info.pax_headers = pax
            t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    # tarfile pads to 10 KiB records; keep only the two zero blocks that end
    # the archive, so seeds stay small for -max_len.
    data = buf.getvalue().rstrip(b"\0")
    blocks = (len(data) + 511) // 512
    return data + b"\0" * (blocks * 512 - len(data)) + b"\0" * 1024


SEEDS = {
    # Symlinks planted by the layer, then used as a way out.
    "abs-symlink-opaque": [sym("evil", SENTINEL), f("evil/.wh..wh..opq", b"")],
    "abs-symlink-whiteout": [sym("evil", SENTINEL), f("evil/.wh.file", b"")],
    "abs-symlink-write": [sym("evil", SENTINEL), f("evil/file")],
    "rel-symlink-opaque": [sym("evil", "../sentinel"), f("evil/.wh..wh..opq", b"")],
    "rel-symlink-write": [sym("evil", UP + "parent/sentinel"), f("evil/file"), f("evil/new")],
    "symlink-dir-chain": [sym("a", "."), sym("b", "a/a/a/.."), f("b/x"), sym("c", "b/../.."), f("c/sentinel/file")],
    "dir-then-symlink-same-name": [d("d"), f("d/x"), sym("d", "../sentinel"), f("d/file"), f("d/.wh.dir", b"")],
    "symlink-loop": [sym("l1", "l2"), sym("l2", "l1"), f("l1/x")],
    # Names that leave the root.
    "dotdot-write": [f("../sentinel/file"), f(UP + "parent/sentinel/new")],
    "dotdot-opaque": [f("../sentinel/.wh..wh..opq", b"")],
    "dotdot-whiteout": [f("../sentinel/.wh.file", b""), f("x/../../sentinel/.wh.dir", b"")],
    "absolute-write": [f(SENTINEL + "/file"), d(SENTINEL + "/dir", 0o700)],
    "absolute-opaque": [f(SENTINEL + "/.wh..wh..opq", b"")],
    "pax-path-dotdot": [f("innocent", pax={"path": "../sentinel/file"})],
    "pax-linkpath-out": [entry("innocent", tarfile.SYMTYPE, link="x", mode=0o777, pax={"linkpath": SENTINEL}),
                         f("innocent/file")],
    # Hard links out, and writes through them.
    "hardlink-absolute": [hard("h", SENTINEL + "/file")],
    "hardlink-dotdot": [hard("h", "../sentinel/file"), f("h")],
    "hardlink-through-symlink": [sym("evil", SENTINEL), hard("h", "evil/file"), f("h")],
    "hardlink-then-write": [f("t", b"inside\n"), hard("h", "t"), f("h")],
    # Metadata on the way out: modes, owners, xattrs, times through a symlink.
    "symlink-then-dir-meta": [sym("evil", SENTINEL), d("evil", 0o000), d("evil/dir", 0o777)],
    "xattrs": [f("x", pax={"SCHILY.xattr.user.k": "v", "SCHILY.xattr.trusted.overlay.opaque": "y"})],
    "whiteout-of-parent": [f(".wh..", b""), f(".wh...", b""), f("x/.wh.", b"")],
    # A plain layer, so the fuzzer also starts from something that applies.
    "benign": [d("bin"), f("bin/sh", b"#!/bin/sh\n", 0o755), sym("bin/ln", "sh"), hard("bin/hl", "bin/sh"),
               d("etc"), f("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"), f("etc/.wh.gone", b"")],
}


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    for name, entries in SEEDS.items():
        data = tar(entries)
        with open(os.path.join(OUT, name + ".tar"), "wb") as out:
            out.write(data)
    # One GNU-format (long name records) and one gzip'd seed, as layers come.
    with open(os.path.join(OUT, "gnu-longname-dotdot.tar"), "wb") as out:
        out.write(tar([f("../" * 40 + "parent/sentinel/file")], fmt=tarfile.GNU_FORMAT))
    with open(os.path.join(OUT, "abs-symlink-write.tar.gz"), "wb") as out:
        out.write(gzip.compress(tar(SEEDS["abs-symlink-write"]), mtime=0))


if __name__ == "__main__":
    main()
