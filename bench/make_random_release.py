#!/usr/bin/env python3
"""Write a Wan 2.2 T2V-A14B (or I2V-A14B, TI2V-5B) release of random weights at the real shapes, in the file
layouts users download, so `fisdit generate` can be run end to end at full scale (loading, memory, time
per stage) on a machine that cannot download the released weights. The video is noise; every
file name, tensor name, shape and dtype is the released one.

  python3 bench/make_random_release.py OUT --layout official|comfyui [--task t2v|i2v|ti2v] [--lora]
      [--same-experts] [--tiny]

official: OUT/high_noise_model/ and low_noise_model/ (bf16 shards of ~5 GB,
  diffusion_pytorch_model.safetensors.index.json, config.json), models_t5_umt5-xxl-enc-bf16.pth
  (torch.save of the bf16 T5Encoder state dict), Wan2.1_VAE.pth (fp32), google/umt5-xxl/
  (spiece.model: the small test tokenizer of tests/data/tokenizer; its ids are valid umT5 ids).
comfyui: OUT/wan2.2_t2v_{high,low}_noise_14B_fp8_scaled.safetensors (model.diffusion_model.
  keys, 2-D block weights float8_e4m3fn with a per-tensor scale_weight, a scaled_fp8 marker),
  umt5_xxl_fp8_e4m3fn_scaled.safetensors (Hugging Face names, fp8 + scale_weight),
  wan_2.1_vae.safetensors (official names), tokenizer/spiece.model.
--lora: OUT/lora_{high,low}.safetensors, rank 64, diffusion_model.<module>.lora_down/lora_up/
  alpha for every linear layer of the blocks (the Lightning LoRA's key set).
--same-experts: the low-noise expert's files are symbolic links to the high-noise ones (halves
  the disk: a full official release is ~70 GB otherwise).
--task i2v: the I2V-A14B experts (36 input channels: noise, mask and the image latent; config
  model_type "i2v"; ComfyUI files named wan2.2_i2v_*) and OUT/first_frame.png (a 640x480
  gradient, for --image).
--task ti2v: TI2V-5B, official layout only: one DiT (dim 3072, 30 blocks, 48 latent channels)
  in shards in OUT itself, Wan2.2_VAE.pth (z 48, 160/256 wide) instead of Wan2.1_VAE.pth,
  OUT/first_frame.png (the image is optional for ti2v), --lora: OUT/lora.safetensors.
--tiny: small dims (for checking this script on a CPU).

Random values: matrices N(0, 1/fan_in), biases N(0, 0.1^2), norm gains N(1, 0.1^2), modulation
N(0, 0.2^2), LoRA up N(0, 1e-4); drawn on the GPU when there is one. Needs torch, safetensors.
"""
import argparse
import json
import os
import shutil
import struct
import sys
import time
import zlib

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools", "train"))
import wan_models  # noqa: E402  (our PyTorch modules with the official parameter names)

SHARD_BYTES = 5 * 1024**3


def dims(tiny, task):
    if tiny:
        return dict(dit=dict(dim=128, ffn_dim=256, num_heads=2, num_layers=2, text_dim=64),
                    t5=dict(vocab=256384, dim=64, dim_attn=64, dim_ffn=128, num_heads=2,
                            num_layers=2, num_buckets=32),
                    vae=dict(dim=8, num_res_blocks=2))
    # Wan2.2-T2V/I2V-A14B (each expert) or TI2V-5B, umt5-xxl, Wan2.1_VAE (Wan2.2_VAE: defaults of
    # wan22_vae_shapes).
    dit = (dict(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, text_dim=4096)
           if task == "ti2v" else
           dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, text_dim=4096))
    return dict(dit=dit,
                t5=dict(vocab=256384, dim=4096, dim_attn=4096, dim_ffn=10240, num_heads=64,
                        num_layers=24, num_buckets=32),
                vae=dict(dim=96, num_res_blocks=2))


def wan22_vae_shapes(dim=160, dec_dim=256, z_dim=48, dim_mult=(1, 2, 4, 4), num_res_blocks=2,
                     temperal_downsample=(False, True, True)):
    """name -> shape of the Wan 2.2 VAE's state dict (wan/modules/vae2_2.py, WanVAE_; the defaults
    are Wan2.2_VAE.pth's). Names and shapes only: the parameters are what fisdit reads."""
    out = {}

    def conv(name, cout, cin, k):
        out[name + ".weight"] = (cout, cin) + k
        out[name + ".bias"] = (cout,)

    def res(name, cin, cout):
        out[name + ".residual.0.gamma"] = (cin, 1, 1, 1)
        conv(name + ".residual.2", cout, cin, (3, 3, 3))
        out[name + ".residual.3.gamma"] = (cout, 1, 1, 1)
        conv(name + ".residual.6", cout, cout, (3, 3, 3))
        if cin != cout:
            conv(name + ".shortcut", cout, cin, (1, 1, 1))

    def middle(name, d):
        res(name + ".0", d, d)
        out[name + ".1.norm.gamma"] = (d, 1, 1)
        conv(name + ".1.to_qkv", 3 * d, d, (1, 1))
        conv(name + ".1.proj", d, d, (1, 1))
        res(name + ".2", d, d)

    levels = len(dim_mult)
    enc = [dim * m for m in (1,) + tuple(dim_mult)]
    conv("encoder.conv1", enc[0], 12, (3, 3, 3))  # 3 colours x 2x2 patch
    for i in range(levels):
        base = f"encoder.downsamples.{i}.downsamples"
        for j in range(num_res_blocks):
            res(f"{base}.{j}", enc[i] if j == 0 else enc[i + 1], enc[i + 1])
        if i != levels - 1:
            conv(f"{base}.{num_res_blocks}.resample.1", enc[i + 1], enc[i + 1], (3, 3))
            if temperal_downsample[i]:
                conv(f"{base}.{num_res_blocks}.time_conv", enc[i + 1], enc[i + 1], (3, 1, 1))
    middle("encoder.middle", enc[-1])
    out["encoder.head.0.gamma"] = (enc[-1], 1, 1, 1)
    conv("encoder.head.2", 2 * z_dim, enc[-1], (3, 3, 3))
    conv("conv1", 2 * z_dim, 2 * z_dim, (1, 1, 1))
    conv("conv2", z_dim, z_dim, (1, 1, 1))
    dec = [dec_dim * m for m in (dim_mult[-1],) + tuple(dim_mult[::-1])]
    conv("decoder.conv1", dec[0], z_dim, (3, 3, 3))
    middle("decoder.middle", dec[0])
    temperal_upsample = tuple(temperal_downsample[::-1])
    for i in range(levels):
        base = f"decoder.upsamples.{i}.upsamples"
        for j in range(num_res_blocks + 1):
            res(f"{base}.{j}", dec[i] if j == 0 else dec[i + 1], dec[i + 1])
        if i != levels - 1:
            conv(f"{base}.{num_res_blocks + 1}.resample.1", dec[i + 1], dec[i + 1], (3, 3))
            if temperal_upsample[i]:
                conv(f"{base}.{num_res_blocks + 1}.time_conv", 2 * dec[i + 1], dec[i + 1],
                     (3, 1, 1))
    out["decoder.head.0.gamma"] = (dec[-1], 1, 1, 1)
    conv("decoder.head.2", 12, dec[-1], (3, 3, 3))
    return out


def shapes(module):
    """name -> shape of every parameter, built on the meta device (no memory)."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def draw(name, shape, gen, device, dtype):
    if "modulation" in name:
        return (torch.randn(shape, generator=gen, device=device) * 0.2).to(dtype)
    if len(shape) == 1 or name.endswith("gamma"):  # biases; norm gains (VAE: gamma [C, 1, 1])
        gain = "norm" in name or name.endswith("gamma")
        t = torch.randn(shape, generator=gen, device=device) * 0.1 + (1.0 if gain else 0.0)
    else:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        t = torch.randn(shape, generator=gen, device=device) / fan_in**0.5
    return t.to(dtype)


def fp8_scaled(t):
    """(float8_e4m3fn tensor, scale) with t ~= fp8 * scale, as ComfyUI's scaled fp8 files."""
    scale = t.float().abs().max().clamp(min=1e-12) / 448.0
    return (t.float() / scale).to(torch.float8_e4m3fn), scale.reshape(1).float()


def tensors(shape_map, seed, device, dtype):
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    for name, shape in shape_map.items():
        yield name, draw(name, shape, gen, device, dtype)


def write_sharded(out_dir, shape_map, seed, device, config):
    """diffusion_pytorch_model-0000i-of-0000n.safetensors + index.json + config.json."""
    os.makedirs(out_dir, exist_ok=True)
    shards, cur, cur_bytes = [], {}, 0
    for name, t in tensors(shape_map, seed, device, torch.bfloat16):
        cur[name] = t.cpu()
        cur_bytes += t.numel() * t.element_size()
        if cur_bytes >= SHARD_BYTES:
            shards.append(cur)
            cur, cur_bytes = {}, 0
    if cur:
        shards.append(cur)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fname = f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(out_dir, fname), metadata={"format": "pt"})
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
    with open(os.path.join(out_dir, "diffusion_pytorch_model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return total


def write_comfy_dit(path, shape_map, seed, device):
    out = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    for name, t in tensors(shape_map, seed, device, torch.bfloat16):
        key = "model.diffusion_model." + name
        if name.startswith("blocks.") and t.dim() == 2:
            q, s = fp8_scaled(t)
            out[key] = q.cpu()
            out[key[: -len(".weight")] + ".scale_weight"] = s.cpu()
        else:
            out[key] = t.cpu()
    save_file(out, path)


T5_HF = {
    "norm1.weight": "0.layer_norm.weight",
    "attn.q.weight": "0.SelfAttention.q.weight",
    "attn.k.weight": "0.SelfAttention.k.weight",
    "attn.v.weight": "0.SelfAttention.v.weight",
    "attn.o.weight": "0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "1.layer_norm.weight",
    "ffn.gate.0.weight": "1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "1.DenseReluDense.wo.weight",
}


def t5_hf_name(name):
    if name == "token_embedding.weight":
        return "shared.weight"
    if name == "norm.weight":
        return "encoder.final_layer_norm.weight"
    _, n, rest = name.split(".", 2)
    return f"encoder.block.{n}.layer.{T5_HF[rest]}"


def write_lora(path, dit_shapes, seed, device, rank=64):
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    out = {}
    for name, shape in dit_shapes.items():
        if not (name.startswith("blocks.") and name.endswith(".weight") and len(shape) == 2):
            continue
        module = "diffusion_model." + name[: -len(".weight")]
        out_f, in_f = shape
        out[module + ".lora_down.weight"] = (
            torch.randn((rank, in_f), generator=gen, device=device) / in_f**0.5).bfloat16().cpu()
        out[module + ".lora_up.weight"] = (
            torch.randn((out_f, rank), generator=gen, device=device) * 1e-4).bfloat16().cpu()
        out[module + ".alpha"] = torch.tensor(float(rank))
    save_file(out, path)


def write_png(path, width, height):
    """An RGB gradient as an 8-bit PNG (standard library only)."""
    raw = b"".join(b"\x00" + bytes(v for x in range(width)
                                   for v in (x * 255 // width, y * 255 // height, 128))
                   for y in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--layout", choices=["official", "comfyui"], default="official")
    ap.add_argument("--task", choices=["t2v", "i2v", "ti2v"], default="t2v")
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--same-experts", action="store_true")
    ap.add_argument("--tiny", action="store_true")
    a = ap.parse_args()
    ti2v = a.task == "ti2v"
    if ti2v and a.layout != "official":
        ap.error("--task ti2v writes the official layout only")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    d = dims(a.tiny, a.task)
    t0 = time.time()
    with torch.device("meta"):
        dit = wan_models.WanModel(freq_dim=256, in_dim={"i2v": 36, "ti2v": 48}.get(a.task, 16),
                                  out_dim=48 if ti2v else 16, text_len=512, **d["dit"])
        t5 = wan_models.T5Encoder(**d["t5"])
        vae = None if ti2v else wan_models.WanVAE(z_dim=16, **d["vae"])
    dit_shapes, t5_shapes = shapes(dit), shapes(t5)
    if ti2v:
        vae_shapes = (wan22_vae_shapes(dim=8, dec_dim=8) if a.tiny else wan22_vae_shapes())
    else:
        vae_shapes = shapes(vae)
    config = dict(dit.config)
    config["_class_name"] = "WanModel"
    config["model_type"] = a.task
    os.makedirs(a.out, exist_ok=True)
    tok = os.path.join(HERE, "..", "tests", "data", "tokenizer", "spiece.model")

    def say(what):
        print(f"[{time.time() - t0:6.1f} s] {what}", flush=True)

    experts = [("high", 1), ("low", 2)]
    if ti2v:  # one DiT, its shards in the root
        n = write_sharded(a.out, dit_shapes, 1, device, config)
        say(f"DiT shards: {n / 1e9:.1f} GB bf16")
        experts = []
    if a.layout == "official":
        for which, seed in experts:
            sub = os.path.join(a.out, f"{which}_noise_model")
            if which == "low" and a.same_experts:
                os.makedirs(sub, exist_ok=True)
                high = os.path.join(a.out, "high_noise_model")
                for f in os.listdir(high):
                    os.symlink(os.path.join("..", "high_noise_model", f), os.path.join(sub, f))
                say("low_noise_model/: links to high_noise_model/")
                continue
            n = write_sharded(sub, dit_shapes, seed, device, config)
            say(f"{which}_noise_model/: {n / 1e9:.1f} GB bf16")
        t5_sd = {k: v.cpu() for k, v in tensors(t5_shapes, 3, device, torch.bfloat16)}
        t5_sd["token_embedding.weight"] = t5_sd["token_embedding.weight"] * 8  # N(0,1)-like rows
        torch.save(t5_sd, os.path.join(a.out, "models_t5_umt5-xxl-enc-bf16.pth"))
        say("models_t5_umt5-xxl-enc-bf16.pth")
        del t5_sd
        vae_sd = {k: v.cpu() for k, v in tensors(vae_shapes, 4, device, torch.float32)}
        vae_file = "Wan2.2_VAE.pth" if ti2v else "Wan2.1_VAE.pth"
        torch.save(vae_sd, os.path.join(a.out, vae_file))
        say(vae_file)
        os.makedirs(os.path.join(a.out, "google", "umt5-xxl"), exist_ok=True)
        shutil.copy(tok, os.path.join(a.out, "google", "umt5-xxl", "spiece.model"))
    else:
        for which, seed in experts:
            path = os.path.join(a.out, f"wan2.2_{a.task}_{which}_noise_14B_fp8_scaled.safetensors")
            if which == "low" and a.same_experts:
                os.symlink(os.path.basename(path).replace("low", "high"), path)
                continue
            write_comfy_dit(path, dit_shapes, seed, device)
            say(os.path.basename(path))
        out = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
        for name, t in tensors(t5_shapes, 3, device, torch.bfloat16):
            key = t5_hf_name(name)
            if name == "token_embedding.weight":
                out[key] = (t * 8).cpu()
            elif t.dim() == 2 and "pos_embedding" not in name:
                q, s = fp8_scaled(t)
                out[key] = q.cpu()
                out[key[: -len(".weight")] + ".scale_weight"] = s.cpu()
            else:
                out[key] = t.cpu()
        save_file(out, os.path.join(a.out, "umt5_xxl_fp8_e4m3fn_scaled.safetensors"))
        say("umt5_xxl_fp8_e4m3fn_scaled.safetensors")
        vae_sd = {k: v.cpu() for k, v in tensors(vae_shapes, 4, device, torch.float32)}
        save_file(vae_sd, os.path.join(a.out, "wan_2.1_vae.safetensors"))
        os.makedirs(os.path.join(a.out, "tokenizer"), exist_ok=True)
        shutil.copy(tok, os.path.join(a.out, "tokenizer", "spiece.model"))
        say("wan_2.1_vae.safetensors, tokenizer/")
    if a.task in ("i2v", "ti2v"):
        write_png(os.path.join(a.out, "first_frame.png"), 640, 480)
        say("first_frame.png")
    if a.lora and ti2v:
        write_lora(os.path.join(a.out, "lora.safetensors"), dit_shapes, 11, device)
        say("lora.safetensors (rank 64)")
    elif a.lora:
        for which, seed in experts:
            write_lora(os.path.join(a.out, f"lora_{which}.safetensors"), dit_shapes, 10 + seed,
                       device)
        say("lora_high.safetensors, lora_low.safetensors (rank 64)")


if __name__ == "__main__":
    main()
