#!/usr/bin/env python3
"""Writes a HunyuanVideo 1.5 vision encoder folder of random weights (SigLIP so400m-patch14-384 as
vision_encoder/siglip/image_encoder: config.json and model.safetensors with the released names,
bf16) and an 848x480 PNG, for timing `fisdit image encode` at the real size.

  python3 bench/make_random_siglip.py --out DIR

DIR/vision_encoder/siglip gets the encoder, DIR/first.png the image.
"""
import argparse
import json
import os
import struct
import zlib


def write_png(path, width, height, pixel):
    rows = b"".join(b"\x00" + bytes(c for x in range(width) for c in pixel(x, y))
                    for y in range(height))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(rows)))
        f.write(chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file

    cfg = {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
           "num_hidden_layers": 27, "num_attention_heads": 16, "image_size": 384,
           "patch_size": 14, "num_channels": 3, "layer_norm_eps": 1e-6,
           "hidden_act": "gelu_pytorch_tanh"}
    d, ff, p, n = 1152, 4304, 14, 27 * 27
    folder = os.path.join(args.out, "vision_encoder", "siglip", "image_encoder")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, std=0.02):
        return (torch.randn(*shape, generator=gen) * std).to(torch.bfloat16)

    t = {"vision_model.embeddings.patch_embedding.weight": rand(d, 3, p, p),
         "vision_model.embeddings.patch_embedding.bias": rand(d),
         "vision_model.embeddings.position_embedding.weight": rand(n, d),
         "vision_model.post_layernorm.weight": torch.ones(d, dtype=torch.bfloat16),
         "vision_model.post_layernorm.bias": rand(d)}
    for i in range(cfg["num_hidden_layers"]):
        b = f"vision_model.encoder.layers.{i}."
        for ln in ("layer_norm1", "layer_norm2"):
            t[b + ln + ".weight"] = (1 + rand(d, std=0.1).float()).to(torch.bfloat16)
            t[b + ln + ".bias"] = rand(d)
        for m in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t[b + "self_attn." + m + ".weight"] = rand(d, d)
            t[b + "self_attn." + m + ".bias"] = rand(d)
        t[b + "mlp.fc1.weight"], t[b + "mlp.fc1.bias"] = rand(ff, d), rand(ff)
        t[b + "mlp.fc2.weight"], t[b + "mlp.fc2.bias"] = rand(d, ff), rand(d)
    save_file(t, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    write_png(os.path.join(args.out, "first.png"), 848, 480,
              lambda x, y: ((x * 3) % 256, (y * 5) % 256, (x + y) % 256))
    print(f"wrote {folder} and {os.path.join(args.out, 'first.png')}")


if __name__ == "__main__":
    main()
