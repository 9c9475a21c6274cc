"""Relative L2 between one tensor of two safetensors files (float32), without third-party
safetensors packages: python3 bench/compare_st.py A.safetensors B.safetensors NAME"""
import json
import struct
import sys

import numpy as np


def read(path, name):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        info = header[name]
        assert info["dtype"] == "F32", info["dtype"]
        start, end = info["data_offsets"]
        f.seek(8 + n + start)
        return np.frombuffer(f.read(end - start), dtype="<f4").reshape(info["shape"])


a, b = read(sys.argv[1], sys.argv[3]), read(sys.argv[2], sys.argv[3])
err = float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))
print(f"{sys.argv[3]}: rel L2 {err:.3g} ({sys.argv[1]} vs {sys.argv[2]})")
