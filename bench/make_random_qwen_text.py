#!/usr/bin/env python3
"""Writes a HunyuanVideo 1.5 text encoder folder of random weights (the language model of
Qwen2.5-VL-7B-Instruct: its config.json keys and the released tensor names, bf16, sharded with an
index), and token-id inputs of several lengths, for timing `fisdit text-encode` at the real size.

  python3 bench/make_random_qwen_text.py --out DIR [--layers 28] [--lengths 128,1100]

DIR/text_encoder/llm gets the checkpoint (model-0000i-of-0000n.safetensors of ~4 GB and
model.safetensors.index.json), DIR/ids_<n>.safetensors the inputs ('ids', 'mask'). Only the
language model is written (no vision tower, no lm_head): fisdit reads nothing else.

Random values: matrices N(0, 1/fan_in), biases N(0, 0.1^2), norm gains N(1, 0.1^2); drawn on the
GPU when there is one. bench/make_random_hunyuan15_release.py imports qwen_config, qwen_shapes,
write_qwen_text, draw and write_shards.
"""
import argparse
import json
import os

SHARD_BYTES = 4 * 1024**3  # the released Qwen2.5-VL-7B-Instruct's shards are ~4 GB


def qwen_config(layers=28, tiny=False):
    """config.json of Qwen2.5-VL-7B-Instruct as far as the language model goes (the released file
    keeps these keys at the top level); tiny: hidden 64, 4 heads of 16 (2 key/value heads),
    intermediate 112, vocabulary 1024 (enough for tests/data/hunyuan15/text_tokenizer.json)."""
    cfg = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
           "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
           "num_hidden_layers": layers, "num_attention_heads": 28,
           "num_key_value_heads": 4, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
           "max_position_embeddings": 128000, "hidden_act": "silu", "torch_dtype": "bfloat16"}
    if tiny:
        cfg.update(vocab_size=1024, hidden_size=64, intermediate_size=112,
                   num_attention_heads=4, num_key_value_heads=2)
    return cfg


def qwen_shapes(cfg):
    """name -> shape of the language model's parameters, in the released order."""
    d, ff = cfg["hidden_size"], cfg["intermediate_size"]
    kv = cfg["num_key_value_heads"] * (d // cfg["num_attention_heads"])
    s = {"model.embed_tokens.weight": (cfg["vocab_size"], d)}
    for i in range(cfg["num_hidden_layers"]):
        b = f"model.layers.{i}."
        s[b + "input_layernorm.weight"] = (d,)
        s[b + "post_attention_layernorm.weight"] = (d,)
        s[b + "self_attn.q_proj.weight"] = (d, d)
        s[b + "self_attn.q_proj.bias"] = (d,)
        s[b + "self_attn.k_proj.weight"] = (kv, d)
        s[b + "self_attn.k_proj.bias"] = (kv,)
        s[b + "self_attn.v_proj.weight"] = (kv, d)
        s[b + "self_attn.v_proj.bias"] = (kv,)
        s[b + "self_attn.o_proj.weight"] = (d, d)
        s[b + "mlp.gate_proj.weight"] = (ff, d)
        s[b + "mlp.up_proj.weight"] = (ff, d)
        s[b + "mlp.down_proj.weight"] = (d, ff)
    s["model.norm.weight"] = (d,)
    return s


def draw(name, shape, gen, device, dtype):
    """One parameter: 1-D biases N(0, 0.1^2), other 1-D tensors (norm gains) N(1, 0.1^2), the rest
    N(0, 1/fan_in) with fan_in the product of all but the first dim."""
    import torch
    t = torch.randn(shape, generator=gen, device=device)
    if len(shape) == 1:
        t = t * 0.1 + (0.0 if name.endswith("bias") else 1.0)
    else:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        t = t / fan_in**0.5
    return t.to(dtype)


def write_shards(folder, stem, named_tensors, shard_bytes=SHARD_BYTES, metadata=None):
    """Writes (name, tensor) pairs as folder/<stem>-0000i-of-0000n.safetensors of about
    shard_bytes each (each shard is written when full, then renamed once n is known) and
    <stem>.safetensors.index.json. Returns (bytes, shard count)."""
    from safetensors.torch import save_file
    os.makedirs(folder, exist_ok=True)
    parts, cur, cur_bytes, total = [], {}, 0, 0
    weight_map = {}

    def flush():
        nonlocal cur, cur_bytes
        if not cur:
            return
        tmp = os.path.join(folder, f".{stem}-part{len(parts):05d}.safetensors")
        save_file(cur, tmp, metadata={"format": "pt"})
        parts.append((tmp, list(cur)))
        cur, cur_bytes = {}, 0

    for name, t in named_tensors:
        cur[name] = t.cpu().contiguous()
        cur_bytes += t.numel() * t.element_size()
        total += t.numel() * t.element_size()
        if cur_bytes >= shard_bytes:
            flush()
    flush()
    for i, (tmp, names) in enumerate(parts):
        fname = f"{stem}-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        os.replace(tmp, os.path.join(folder, fname))
        for n in names:
            weight_map[n] = fname
    meta = dict(metadata or {})
    meta["total_size"] = total
    with open(os.path.join(folder, f"{stem}.safetensors.index.json"), "w") as f:
        json.dump({"metadata": meta, "weight_map": weight_map}, f, indent=2)
    return total, len(parts)


def write_qwen_text(llm, cfg, device=None, seed=0, shard_bytes=SHARD_BYTES):
    """llm/config.json and the language model's bf16 shards with their index. Returns
    (bytes, shard count)."""
    import torch
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    os.makedirs(llm, exist_ok=True)
    with open(os.path.join(llm, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    named = ((n, draw(n, s, gen, device, torch.bfloat16)) for n, s in qwen_shapes(cfg).items())
    return write_shards(llm, "model", named, shard_bytes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--lengths", default="128,1100")
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file

    cfg = qwen_config(args.layers)
    llm = os.path.join(args.out, "text_encoder", "llm")
    _, shards = write_qwen_text(llm, cfg)
    for n in (int(x) for x in args.lengths.split(",")):
        ids = torch.randint(0, cfg["vocab_size"], (1, n),
                            generator=torch.Generator().manual_seed(n))
        save_file({"ids": ids, "mask": torch.ones(1, n, dtype=torch.int64)},
                  os.path.join(args.out, f"ids_{n}.safetensors"))
    print(f"wrote {llm}: {args.layers} layers in {shards} shards")


if __name__ == "__main__":
    main()
