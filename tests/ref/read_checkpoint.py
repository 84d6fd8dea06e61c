#!/usr/bin/python3
"""tests/ref/read_checkpoint.py — reads an anyref training checkpoint with h5py.

Usage:  /usr/bin/python3 tests/ref/read_checkpoint.py run/checkpoints/step_000100.h5

Prints the root attributes, the config text and, for /weights, /adam_m and
/adam_v, every tensor's name, shape, dtype and L2 norm. It is the proof that
the files checkpoints/checkpoint.c writes (layout documented in
checkpoints/checkpoint.h) open in standard tooling; no C test depends on it.
Exit status 1 if the file is not an anyref checkpoint.
"""
import sys

import h5py
import numpy as np


def text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def main(path):
    with h5py.File(path, "r") as f:
        fmt = text(f.attrs.get("format", b""))
        if fmt != "anyref-checkpoint":
            print(f"{path}: attribute 'format' is {fmt!r}, expected 'anyref-checkpoint'")
            return 1
        print(f"{path}")
        for key in ("format", "version", "step", "epoch", "data_position", "seed", "rng_state", "created",
                    "frozen_included", "complete"):
            v = f.attrs.get(key)
            if isinstance(v, np.ndarray):
                v = "[" + ", ".join(f"0x{int(x):016x}" for x in v) + "]"
            elif isinstance(v, bytes):
                v = text(v)
            print(f"  {key:16s} {v}")
        config = text(f["config"][()])
        print(f"  config           {len(config)} characters")
        for line in config.splitlines():
            print(f"    | {line}")
        for group in ("weights", "adam_m", "adam_v"):
            if group not in f:
                print(f"/{group}: absent")
                continue
            g = f[group]
            total = sum(d.size for d in g.values())
            print(f"/{group}: {len(g)} tensors, {total} values")
            for name, d in g.items():
                x = d[()]
                shape = "[" + ",".join(str(s) for s in x.shape) + "]"
                print(f"  {name:60s} {shape:16s} {str(d.dtype):8s} |x| = {np.linalg.norm(x.astype(np.float64)):.6g}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2])
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
