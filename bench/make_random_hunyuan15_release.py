#!/usr/bin/env python3
"""Write a HunyuanVideo 1.5 release of random weights at the real shapes, in the layout of the
official download (tencent/HunyuanVideo-1.5, checkpoints-download.md), so `fisdit generate
--model OUT` can be run end to end at full scale (loading, memory, time per stage) on a machine
that cannot download the released weights. The video is noise; every file name, tensor name and
shape is the released one.

  python3 bench/make_random_hunyuan15_release.py OUT [--versions 480p_i2v_step_distilled,...]
      [--vae-dtype fp32|bf16] [--tiny] [--estimate]

OUT/transformer/<version>/: config.json (the HunyuanVideo_1_5_DiffusionTransformer constructor:
  hidden 2048, 16 heads, 54 double-stream blocks, in_channels 32, Qwen 3584 / byT5 1472 / SigLIP
  1152 inputs; use_meanflow for *_step_distilled, ideal_task and ideal_resolution from the name)
  and bf16 shards of ~5 GB (diffusion_pytorch_model-0000i-of-0000n.safetensors with
  diffusion_pytorch_model.safetensors.index.json), official tensor names (dit.cpp
  dit_parameter_shapes). --versions (comma list, default 480p_i2v_step_distilled) writes several;
  a version whose tensors are those of one already written (same use_meanflow, i.e. the same
  time_r_in) gets symbolic links to that one's shards and index, and its own config.json.
OUT/vae/: config.json (AutoencoderKLConv3D: latent 32, widths 128..1024, 16x spatial, 4x
  temporal, scaling_factor 1.03682) and diffusion_pytorch_model.safetensors (official names:
  vae.cpp vae_parameter_shapes; 1.26 G parameters, fp32 unless --vae-dtype bf16: fisdit widens
  either to fp32).
OUT/text_encoder/llm/: Qwen2.5-VL-7B-Instruct's language model (make_random_qwen_text.py: bf16
  shards of ~4 GB, index, config.json) and tokenizer.json: the small test tokenizer of
  tests/data/hunyuan15/text_tokenizer.json (a 700-token byte-level BPE with the ChatML tokens; its
  ids are valid Qwen ids, not the ids Qwen's own tokenizer would give).
OUT/text_encoder/byt5-small/: byT5-small's config.json (d_model 1472, 12 encoder layers, 6 heads
  of 64, d_ff 3584, gated-gelu, 32 buckets, distance 128) and tokenizer files (those of
  tests/data/hunyuan15/glyph_tiny/byt5-small: ByT5Tokenizer's, independent of the sizes).
OUT/text_encoder/Glyph-SDXL-v2/: assets/color_idx.json (24 colors) and
  assets/multilingual_10-lang_idx.json (30 fonts over 10 languages; the released files list many
  more, same structure), checkpoints/byt5_model.pt: torch.save of {"state_dict": ...} with the
  byT5 encoder under "module.text_tower.encoder." for the vocabulary with those 54 tokens added
  (438 rows), fp32.
OUT/vision_encoder/siglip/: image_encoder/ (SigLIP so400m-patch14-384, bf16) and
  feature_extractor/ (make_random_siglip.py).
OUT/first_frame.png: an 848x480 gradient, for --image.
--tiny: small dims for every part, consistent with each other (DiT hidden 128, 2 blocks, text
  dim = Qwen hidden 64, byt5_dims [32, 64, 64] with byT5 d_model 32, vision dim = SigLIP hidden
  64, in_channels = VAE latent 4; the DiT config carries the fixtures' "byt5_dims" key): a few MB,
  for checking this script on a CPU.
--estimate: print the full-size bytes and the expected time, write nothing.

Random values: matrices N(0, 1/fan_in), biases N(0, 0.1^2), norm gains N(1, 0.1^2) (the VAE's
RMS-norm gammas too), the DiT's condition-type table N(0, 0.5^2) (as `fisdit`'s random DiT);
drawn on the GPU when there is one. Needs torch, safetensors.
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_random_qwen_text import (  # noqa: E402
    draw, qwen_config, qwen_shapes, write_qwen_text, write_shards)
from make_random_siglip import siglip_config, siglip_shapes, write_png, write_siglip  # noqa: E402

DATA = os.path.join(HERE, "..", "tests", "data", "hunyuan15")
DIT_SHARD_BYTES = 5 * 1024**3
FREQ_DIM = 256          # TimestepEmbedder's frequency_embedding_size
REFINER_MLP_RATIO = 4   # SingleTokenRefiner's mlp_width_ratio
GB_PER_S = 0.7          # make_random_release.py on an H200: 28.6 GB of shards in ~40 s
CPU_S_PER_G = 8         # torch.randn + bf16 cast of 1e9 values on 2 CPU cores: ~8 s

# transformer/<version> of the release that fisdit reads (super-resolution and sparse ones are
# other models): (ideal_resolution, ideal_task, use_meanflow).
VERSIONS = {
    "480p_t2v": ("480p", "t2v", False),
    "480p_i2v": ("480p", "i2v", False),
    "480p_t2v_distilled": ("480p", "t2v", False),
    "480p_i2v_distilled": ("480p", "i2v", False),
    "480p_i2v_step_distilled": ("480p", "i2v", True),
    "720p_t2v": ("720p", "t2v", False),
    "720p_i2v": ("720p", "i2v", False),
    "720p_i2v_distilled": ("720p", "i2v", False),
}

COLORS = ["white", "black", "red", "green", "blue", "yellow", "orange", "purple", "pink", "brown",
          "gray", "cyan", "magenta", "navy", "olive", "teal", "maroon", "silver", "gold", "beige",
          "ivory", "coral", "violet", "turquoise"]
FONT_LANGS = ["en", "zh", "ja", "ko", "fr", "de", "es", "it", "pt", "ru"]


def dims(tiny):
    if tiny:
        return dict(dit=dict(in_channels=4, hidden_size=128, heads_num=4, mlp_width_ratio=4.0,
                             mm_double_blocks_depth=2, rope_dim_list=[8, 12, 12],
                             text_states_dim=64, vision_states_dim=64, byt5_dims=[32, 64, 64]),
                    qwen=qwen_config(layers=4, tiny=True),
                    byt5=dict(d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
                              num_decoder_layers=2),
                    siglip=siglip_config(tiny=True),
                    vae=dict(latent_channels=4, block_out_channels=[8, 8, 16, 16, 16]))
    return dict(dit=dict(in_channels=32, hidden_size=2048, heads_num=16, mlp_width_ratio=4.0,
                         mm_double_blocks_depth=54, rope_dim_list=[16, 56, 56],
                         text_states_dim=3584, vision_states_dim=1152),
                qwen=qwen_config(layers=28),
                byt5=dict(d_model=1472, d_kv=64, num_heads=6, d_ff=3584, num_layers=12,
                          num_decoder_layers=4),
                siglip=siglip_config(),
                vae=dict(latent_channels=32, block_out_channels=[128, 256, 512, 1024, 1024]))


def dit_config(d, version):
    """transformer/<version>/config.json: the official constructor's keys."""
    resolution, task, meanflow = VERSIONS[version]
    c = {"_class_name": "HunyuanVideo_1_5_DiffusionTransformer",
         "patch_size": [1, 1, 1], "in_channels": d["in_channels"], "concat_condition": True,
         "out_channels": d["in_channels"], "hidden_size": d["hidden_size"],
         "heads_num": d["heads_num"], "mlp_width_ratio": d["mlp_width_ratio"],
         "mlp_act_type": "gelu_tanh", "mm_double_blocks_depth": d["mm_double_blocks_depth"],
         "mm_single_blocks_depth": 0, "rope_dim_list": d["rope_dim_list"], "rope_theta": 256,
         "qkv_bias": True, "qk_norm": True, "qk_norm_type": "rms", "guidance_embed": False,
         "use_meanflow": meanflow, "text_projection": "single_refiner",
         "use_attention_mask": True, "text_states_dim": d["text_states_dim"],
         "text_pool_type": None, "glyph_byT5_v2": True, "vision_projection": "linear",
         "vision_states_dim": d["vision_states_dim"], "use_cond_type_embedding": True,
         "ideal_resolution": resolution, "ideal_task": task}
    if "byt5_dims" in d:
        c["byt5_dims"] = d["byt5_dims"]  # fisdit's fixture key for a shrunk byT5 mapper
    return c


def dit_shapes(c):
    """name -> shape of the DiT's parameters (dit.cpp dit_parameter_shapes)."""
    d, td, vd = c["hidden_size"], c["text_states_dim"], c["vision_states_dim"]
    m, hd = int(d * c["mlp_width_ratio"]), d // c["heads_num"]
    b0, b1, b2 = c.get("byt5_dims", [1472, 2048, 2048])
    in_dim = 2 * c["in_channels"] + 1  # latent, condition latent, mask
    s = {}

    def lin(name, out, inp):
        s[name + ".weight"] = (out, inp)
        s[name + ".bias"] = (out,)

    def norm(name, n):
        s[name + ".weight"] = (n,)
        s[name + ".bias"] = (n,)

    norm("byt5_in.layernorm", b0)
    lin("byt5_in.fc1", b1, b0)
    lin("byt5_in.fc2", b2, b1)
    lin("byt5_in.fc3", d, b2)
    s["img_in.proj.weight"] = (d, in_dim, 1, 1, 1)
    s["img_in.proj.bias"] = (d,)
    norm("vision_in.proj.0", vd)
    lin("vision_in.proj.1", vd, vd)
    lin("vision_in.proj.3", d, vd)
    norm("vision_in.proj.4", d)
    lin("txt_in.input_embedder", d, td)
    lin("txt_in.t_embedder.mlp.0", d, FREQ_DIM)
    lin("txt_in.t_embedder.mlp.2", d, d)
    lin("txt_in.c_embedder.linear_1", d, td)
    lin("txt_in.c_embedder.linear_2", d, d)
    for i in range(2):
        b = f"txt_in.individual_token_refiner.blocks.{i}."
        norm(b + "norm1", d)
        lin(b + "self_attn_qkv", 3 * d, d)
        lin(b + "self_attn_proj", d, d)
        norm(b + "norm2", d)
        lin(b + "mlp.fc1", REFINER_MLP_RATIO * d, d)
        lin(b + "mlp.fc2", d, REFINER_MLP_RATIO * d)
        lin(b + "adaLN_modulation.1", 2 * d, d)
    lin("time_in.mlp.0", d, FREQ_DIM)
    lin("time_in.mlp.2", d, d)
    if c["use_meanflow"]:
        lin("time_r_in.mlp.0", d, FREQ_DIM)
        lin("time_r_in.mlp.2", d, d)
    for i in range(c["mm_double_blocks_depth"]):
        for st in ("img", "txt"):
            x = f"double_blocks.{i}.{st}"
            lin(x + "_mod.linear", 6 * d, d)
            for qkv in ("_attn_q", "_attn_k", "_attn_v"):
                lin(x + qkv, d, d)
            s[x + "_attn_q_norm.weight"] = (hd,)
            s[x + "_attn_k_norm.weight"] = (hd,)
            lin(x + "_attn_proj", d, d)
            lin(x + "_mlp.fc1", m, d)
            lin(x + "_mlp.fc2", d, m)
    lin("final_layer.linear", c["out_channels"], d)
    lin("final_layer.adaLN_modulation.1", 2 * d, d)
    s["cond_type_embedding.weight"] = (3, d)
    return s


def vae_config(d):
    return {"_class_name": "AutoencoderKLConv3D", "in_channels": 3, "out_channels": 3,
            "latent_channels": d["latent_channels"],
            "block_out_channels": d["block_out_channels"], "layers_per_block": 2,
            "ffactor_spatial": 16, "ffactor_temporal": 4, "scaling_factor": 1.03682}


def vae_shapes(c):
    """name -> shape of the VAE's parameters (vae.cpp vae_parameter_shapes)."""
    s = {}
    b, layers = c["block_out_channels"], c["layers_per_block"]
    log_s, log_t = int(math.log2(c["ffactor_spatial"])), int(math.log2(c["ffactor_temporal"]))

    def conv(n, out, inp, k):
        s[n + ".weight"] = (out, inp, k, k, k)
        s[n + ".bias"] = (out,)

    def gamma(n, ch):
        s[n + ".gamma"] = (ch, 1, 1, 1)

    def res(n, inp, out):
        gamma(n + ".norm1", inp)
        conv(n + ".conv1.conv", out, inp, 3)
        gamma(n + ".norm2", out)
        conv(n + ".conv2.conv", out, out, 3)
        if inp != out:
            conv(n + ".nin_shortcut", out, inp, 1)

    def attn(n, ch):
        gamma(n + ".norm", ch)
        for p in (".q", ".k", ".v", ".proj_out"):
            conv(n + p, ch, ch, 1)

    conv("encoder.conv_in.conv", b[0], c["in_channels"], 3)
    inp = b[0]
    for i in range(len(b)):
        for j in range(layers):
            res(f"encoder.down.{i}.block.{j}", inp, b[i])
            inp = b[i]
        if i < log_s:  # spatial downsample; temporal too from log2(spatial / temporal) on
            factor = 8 if i >= log_s - log_t else 4
            conv(f"encoder.down.{i}.downsample.conv.conv", b[i + 1] // factor, inp, 3)
            inp = b[i + 1]
    res("encoder.mid.block_1", inp, inp)
    attn("encoder.mid.attn_1", inp)
    res("encoder.mid.block_2", inp, inp)
    gamma("encoder.norm_out", inp)
    conv("encoder.conv_out.conv", 2 * c["latent_channels"], inp, 3)
    r = b[::-1]
    inp = r[0]
    conv("decoder.conv_in.conv", inp, c["latent_channels"], 3)
    res("decoder.mid.block_1", inp, inp)
    attn("decoder.mid.attn_1", inp)
    res("decoder.mid.block_2", inp, inp)
    for i in range(len(r)):
        for j in range(layers + 1):
            res(f"decoder.up.{i}.block.{j}", inp, r[i])
            inp = r[i]
        if i < log_s or i < log_t:
            factor = 8 if i < log_t else 4
            conv(f"decoder.up.{i}.upsample.conv.conv", r[i + 1] * factor, inp, 3)
            inp = r[i + 1]
    gamma("decoder.norm_out", inp)
    conv("decoder.conv_out.conv", c["out_channels"], inp, 3)
    return s


def byt5_config(d):
    """byt5-small/config.json (google/byt5-small's keys) at the given sizes."""
    return {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
            "d_model": d["d_model"], "d_kv": d["d_kv"], "d_ff": d["d_ff"],
            "num_layers": d["num_layers"], "num_decoder_layers": d["num_decoder_layers"],
            "num_heads": d["num_heads"], "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128, "dropout_rate": 0.1,
            "layer_norm_epsilon": 1e-6, "initializer_factor": 1.0,
            "feed_forward_proj": "gated-gelu", "is_encoder_decoder": True,
            "tie_word_embeddings": False, "tokenizer_class": "ByT5Tokenizer",
            "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1,
            "vocab_size": 384}


def glyph_assets():
    colors = {name: i for i, name in enumerate(COLORS)}
    fonts = {}
    for lang in FONT_LANGS:
        for k in range(3):
            fonts[f"{lang}-RandomFont{k}-Regular"] = len(fonts)
    return colors, fonts


def byt5_shapes(d, vocab):
    """name -> shape of the Glyph-SDXL-v2 byT5 encoder as byt5_model.pt stores it."""
    p, dm, ff = "module.text_tower.encoder.", d["d_model"], d["d_ff"]
    inner = d["num_heads"] * d["d_kv"]
    s = {p + "embed_tokens.weight": (vocab, dm)}
    for i in range(d["num_layers"]):
        b = f"{p}block.{i}.layer."
        for x in "qkv":
            s[f"{b}0.SelfAttention.{x}.weight"] = (inner, dm)
        s[f"{b}0.SelfAttention.o.weight"] = (dm, inner)
        if i == 0:
            s[f"{b}0.SelfAttention.relative_attention_bias.weight"] = (32, d["num_heads"])
        s[f"{b}0.layer_norm.weight"] = (dm,)
        s[f"{b}1.DenseReluDense.wi_0.weight"] = (ff, dm)
        s[f"{b}1.DenseReluDense.wi_1.weight"] = (ff, dm)
        s[f"{b}1.DenseReluDense.wo.weight"] = (dm, ff)
        s[f"{b}1.layer_norm.weight"] = (dm,)
    s[p + "final_layer_norm.weight"] = (dm,)
    return s


def param(name, shape, gen, device, dtype):
    if name == "cond_type_embedding.weight":
        return (torch.randn(shape, generator=gen, device=device) * 0.5).to(dtype)
    if name.endswith(".gamma"):  # the VAE's RMS-norm gains [C, 1, 1, 1]
        return (torch.randn(shape, generator=gen, device=device) * 0.1 + 1.0).to(dtype)
    return draw(name, shape, gen, device, dtype)


def tensors(shape_map, seed, device, dtype):
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    for name, shape in shape_map.items():
        yield name, param(name, shape, gen, device, dtype)


def plan(d, versions, vae_bytes):
    """(part, bytes written, parameters drawn) at these dims; linked versions cost nothing."""
    colors, fonts = glyph_assets()
    parts, kinds = [], set()

    def add(part, shape_map, bytes_per):
        n = sum(math.prod(s) for s in shape_map.values())
        parts.append((part, n * bytes_per, n))

    for v in versions:
        meanflow = VERSIONS[v][2]
        if meanflow in kinds:
            parts.append((f"transformer/{v} (links)", 0, 0))
        else:
            add(f"transformer/{v}", dit_shapes(dit_config(d["dit"], v)), 2)
        kinds.add(meanflow)
    add("vae", vae_shapes(vae_config(d["vae"])), vae_bytes)
    add("text_encoder/llm", qwen_shapes(d["qwen"]), 2)
    add("text_encoder/Glyph-SDXL-v2", byt5_shapes(d["byt5"], 384 + len(colors) + len(fonts)), 4)
    add("vision_encoder/siglip", siglip_shapes(d["siglip"]), 2)
    return parts


def size(n):
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--versions", default="480p_i2v_step_distilled",
                    help="comma list of transformer/<version> folders: " + ", ".join(VERSIONS))
    ap.add_argument("--vae-dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--estimate", action="store_true",
                    help="print the full-size bytes and time, write nothing")
    a = ap.parse_args()
    versions = [v.strip() for v in a.versions.split(",") if v.strip()]
    for v in versions:
        if v not in VERSIONS:
            ap.error(f"unknown version '{v}' (known: {', '.join(VERSIONS)})")
    if len(set(versions)) != len(versions):
        ap.error("a version is listed twice")
    device = "cuda" if torch.cuda.is_available() else "cpu"

    vae_bytes = 4 if a.vae_dtype == "fp32" else 2
    full = plan(dims(False), versions, vae_bytes)
    total, params = sum(p[1] for p in full), sum(p[2] for p in full)
    print("full size: " + ", ".join(f"{p} {n / 1e9:.2f} GB" for p, n, _ in full)
          + f"; total {total / 1e9:.1f} GB, {params / 1e9:.1f} G parameters. Time: about "
          f"{total / 1e9 / GB_PER_S / 60:.1f} min with a GPU (~{GB_PER_S} GB/s, what "
          f"make_random_release.py reached on an H200); on a CPU add ~{CPU_S_PER_G} s per G "
          f"parameters drawn on 2 cores (~{params / 1e9 * CPU_S_PER_G / 60:.0f} min)", flush=True)
    if a.estimate:
        return
    d = dims(a.tiny)
    t0 = time.time()

    def say(what):
        print(f"[{time.time() - t0:6.1f} s] {what}", flush=True)

    os.makedirs(a.out, exist_ok=True)
    # The DiT versions; those with the tensors of one written before link to its files.
    written = {}  # use_meanflow -> the version folder holding those tensors
    for k, v in enumerate(versions):
        cfg = dit_config(d["dit"], v)
        sub = os.path.join(a.out, "transformer", v)
        os.makedirs(sub, exist_ok=True)
        first = written.get(cfg["use_meanflow"])
        if first is None:
            n, shards = write_shards(sub, "diffusion_pytorch_model",
                                     tensors(dit_shapes(cfg), 1 + k, device, torch.bfloat16),
                                     DIT_SHARD_BYTES)
            written[cfg["use_meanflow"]] = v
            what = f"{size(n)} bf16 in {shards} shards"
        else:
            src = os.path.join(a.out, "transformer", first)
            for f in sorted(os.listdir(src)):
                if f.startswith("diffusion_pytorch_model"):
                    dst = os.path.join(sub, f)
                    if os.path.lexists(dst):
                        os.remove(dst)
                    os.symlink(os.path.join("..", first, f), dst)
            what = f"links to {first}'s shards"
        with open(os.path.join(sub, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        say(f"transformer/{v}/: {what}")

    vae_dir = os.path.join(a.out, "vae")
    os.makedirs(vae_dir, exist_ok=True)
    vcfg = vae_config(d["vae"])
    vae_dtype = torch.float32 if a.vae_dtype == "fp32" else torch.bfloat16
    vae_sd = {k: t.cpu() for k, t in tensors(vae_shapes(vcfg), 3, device, vae_dtype)}
    save_file(vae_sd, os.path.join(vae_dir, "diffusion_pytorch_model.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(vae_dir, "config.json"), "w") as f:
        json.dump(vcfg, f, indent=2)
    say(f"vae/: {size(sum(t.numel() for t in vae_sd.values()) * vae_bytes)} {a.vae_dtype}")
    del vae_sd

    llm = os.path.join(a.out, "text_encoder", "llm")
    n, shards = write_qwen_text(llm, d["qwen"], device, seed=2)
    shutil.copy(os.path.join(DATA, "text_tokenizer.json"), os.path.join(llm, "tokenizer.json"))
    say(f"text_encoder/llm/: {size(n)} bf16 in {shards} shards, tokenizer.json")

    byt5 = os.path.join(a.out, "text_encoder", "byt5-small")
    os.makedirs(byt5, exist_ok=True)
    with open(os.path.join(byt5, "config.json"), "w") as f:
        json.dump(byt5_config(d["byt5"]), f, indent=2)
    for f in ("added_tokens.json", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(DATA, "glyph_tiny", "byt5-small", f), os.path.join(byt5, f))
    glyph = os.path.join(a.out, "text_encoder", "Glyph-SDXL-v2")
    os.makedirs(os.path.join(glyph, "assets"), exist_ok=True)
    os.makedirs(os.path.join(glyph, "checkpoints"), exist_ok=True)
    colors, fonts = glyph_assets()
    with open(os.path.join(glyph, "assets", "color_idx.json"), "w") as f:
        json.dump(colors, f)
    with open(os.path.join(glyph, "assets", "multilingual_10-lang_idx.json"), "w") as f:
        json.dump(fonts, f)
    vocab = 384 + len(colors) + len(fonts)
    sd = {k: t.cpu() for k, t in tensors(byt5_shapes(d["byt5"], vocab), 4, device, torch.float32)}
    torch.save({"state_dict": sd}, os.path.join(glyph, "checkpoints", "byt5_model.pt"))
    say(f"text_encoder/byt5-small/, Glyph-SDXL-v2/: {len(colors)} colors, {len(fonts)} fonts, "
        f"{vocab} byT5 rows, {size(sum(t.numel() for t in sd.values()) * 4)} fp32")
    del sd

    n = write_siglip(os.path.join(a.out, "vision_encoder", "siglip"), d["siglip"], device, seed=5)
    say(f"vision_encoder/siglip/: {size(n)} bf16")
    write_png(os.path.join(a.out, "first_frame.png"), 848, 480,
              lambda x, y: (x * 255 // 848, y * 255 // 480, 128))
    say("first_frame.png")


if __name__ == "__main__":
    main()
