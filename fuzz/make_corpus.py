#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_safetensors into fuzz/corpus/safetensors/ (each file < 4 KB).

Standard-library only: python3 fuzz/make_corpus.py
"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "safetensors")

SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
         "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def image(tensors, metadata=None, pad=True, header_len=None):
    """tensors: list of (name, dtype, shape, bytes); laid out in order, no gaps."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    n = len(text) if header_len is None else header_len
    return struct.pack("<Q", n) + text + data


def pattern(n):
    return bytes((i * 37 + 11) % 256 for i in range(n))


def main():
    os.makedirs(OUT, exist_ok=True)
    files = {}
    files["valid_small.safetensors"] = image(
        [("blocks.0.self_attn.q.weight", "F32", [2, 2], struct.pack("<4f", 1, -2, 0.5, 3)),
         ("blocks.0.self_attn.q.bias", "BF16", [2], struct.pack("<2H", 0x3F80, 0xC040)),
         ("head.modulation", "F8_E4M3", [1, 2, 2], bytes([0x38, 0x7E, 0x01, 0x7F]))],
        metadata={"format": "pt", "note": "seed"})
    all_dtypes = []
    for dtype, size in SIZES.items():
        all_dtypes.append(("t_" + dtype, dtype, [3], pattern(3 * size)))
    all_dtypes.append(("empty", "F32", [0, 5], b""))
    all_dtypes.append(("scalar", "I32", [], struct.pack("<i", 7)))
    files["valid_all_dtypes.safetensors"] = image(all_dtypes)
    files["valid_unpadded_misaligned.safetensors"] = image(
        [("x", "F64", [2], struct.pack("<2d", 1.5, -0.25))], pad=False)
    overlap = image([("a", "F32", [2], pattern(8)), ("b", "F32", [2], pattern(8))])
    files["invalid_overlap.safetensors"] = overlap.replace(b'"data_offsets":[8,16]',
                                                           b'"data_offsets":[4,12]')
    files["invalid_header_past_end.safetensors"] = image(
        [("w", "F32", [1], pattern(4))], header_len=4096)
    for name, data in files.items():
        assert len(data) < 4096, name
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print(name, len(data))


if __name__ == "__main__":
    main()
