#!/usr/bin/env python3
"""Writes a HunyuanVideo 1.5 vision encoder folder of random weights (SigLIP so400m-patch14-384 as
vision_encoder/siglip/image_encoder: config.json and model.safetensors with the released names,
pooling head included, bf16; feature_extractor/preprocessor_config.json, SiglipImageProcessor's
settings) and an 848x480 PNG, for timing `fisdit image encode` at the real size.

  python3 bench/make_random_siglip.py --out DIR

DIR/vision_encoder/siglip gets the encoder, DIR/first.png the image.

Random values: matrices N(0, 1/fan_in), biases N(0, 0.1^2), norm gains N(1, 0.1^2) (draw of
make_random_qwen_text.py); drawn on the GPU when there is one.
bench/make_random_hunyuan15_release.py imports siglip_config, siglip_shapes, write_siglip and
write_png.
"""
import argparse
import json
import os
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_random_qwen_text import draw  # noqa: E402


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


def siglip_config(tiny=False):
    """image_encoder/config.json (SiglipVisionConfig of so400m-patch14-384, as FLUX.1-Redux-dev's
    image_encoder); tiny: 3 layers, hidden 64, 4 heads, intermediate 112, 56 px (16 tokens)."""
    cfg = {"architectures": ["SiglipVisionModel"], "model_type": "siglip_vision_model",
           "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
           "num_attention_heads": 16, "image_size": 384, "patch_size": 14, "num_channels": 3,
           "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh", "torch_dtype": "bfloat16"}
    if tiny:
        cfg.update(hidden_size=64, intermediate_size=112, num_hidden_layers=3,
                   num_attention_heads=4, image_size=56)
    return cfg


def siglip_shapes(cfg):
    """name -> shape of SiglipVisionModel's parameters (vision_model.*, the pooling head too)."""
    d, ff, p = cfg["hidden_size"], cfg["intermediate_size"], cfg["patch_size"]
    n = (cfg["image_size"] // p) ** 2
    s = {"vision_model.embeddings.patch_embedding.weight": (d, cfg["num_channels"], p, p),
         "vision_model.embeddings.patch_embedding.bias": (d,),
         "vision_model.embeddings.position_embedding.weight": (n, d)}
    for i in range(cfg["num_hidden_layers"]):
        b = f"vision_model.encoder.layers.{i}."
        for m in ("k_proj", "v_proj", "q_proj", "out_proj"):
            s[b + "self_attn." + m + ".weight"] = (d, d)
            s[b + "self_attn." + m + ".bias"] = (d,)
        for ln in ("layer_norm1", "layer_norm2"):
            s[b + ln + ".weight"] = (d,)
            s[b + ln + ".bias"] = (d,)
        s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"] = (ff, d), (ff,)
        s[b + "mlp.fc2.weight"], s[b + "mlp.fc2.bias"] = (d, ff), (d,)
    s["vision_model.post_layernorm.weight"] = (d,)
    s["vision_model.post_layernorm.bias"] = (d,)
    s["vision_model.head.probe"] = (1, 1, d)
    s["vision_model.head.attention.in_proj_weight"] = (3 * d, d)
    s["vision_model.head.attention.in_proj_bias"] = (3 * d,)
    s["vision_model.head.attention.out_proj.weight"] = (d, d)
    s["vision_model.head.attention.out_proj.bias"] = (d,)
    s["vision_model.head.layernorm.weight"] = (d,)
    s["vision_model.head.layernorm.bias"] = (d,)
    s["vision_model.head.mlp.fc1.weight"], s["vision_model.head.mlp.fc1.bias"] = (ff, d), (ff,)
    s["vision_model.head.mlp.fc2.weight"], s["vision_model.head.mlp.fc2.bias"] = (d, ff), (d,)
    return s


def write_siglip(siglip, cfg, device=None, seed=0):
    """siglip/image_encoder/{config.json, model.safetensors} (bf16) and
    siglip/feature_extractor/preprocessor_config.json. Returns the weights' bytes."""
    import torch
    from safetensors.torch import save_file
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    folder = os.path.join(siglip, "image_encoder")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    t = {n: draw(n, s, gen, device, torch.bfloat16).cpu() for n, s in siglip_shapes(cfg).items()}
    save_file(t, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    fe = os.path.join(siglip, "feature_extractor")
    os.makedirs(fe, exist_ok=True)
    size = cfg["image_size"]
    with open(os.path.join(fe, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "SiglipImageProcessor", "do_resize": True,
                   "size": {"height": size, "width": size}, "resample": 3, "do_rescale": True,
                   "rescale_factor": 1 / 255, "do_normalize": True,
                   "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}, f, indent=2)
    return sum(v.numel() * v.element_size() for v in t.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    siglip = os.path.join(args.out, "vision_encoder", "siglip")
    write_siglip(siglip, siglip_config())
    write_png(os.path.join(args.out, "first.png"), 848, 480,
              lambda x, y: ((x * 3) % 256, (y * 5) % 256, (x + y) % 256))
    print(f"wrote {siglip} and {os.path.join(args.out, 'first.png')}")


if __name__ == "__main__":
    main()
