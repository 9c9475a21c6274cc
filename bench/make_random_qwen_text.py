#!/ usr / bin / env python3
"""Writes a HunyuanVideo 1.5 text encoder folder of random weights (the language model of
Qwen2.5-VL-7B-Instruct: its config.json keys and the released tensor names, bf16, sharded with an
index), and token-id inputs of several lengths, for timing `fisdit text-encode` at the real size.

  python3 bench/make_random_qwen_text.py --out DIR [--layers 28] [--lengths 128,1100]

DIR/text_encoder/llm gets the checkpoint, DIR/ids_<n>.safetensors the inputs ('ids', 'mask').
Only the language model is written (no vision tower, no lm_head): fisdit reads nothing else.
"""
import argparse
import json
import os


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--lengths", default="128,1100")
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file

    cfg = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
           "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
           "num_hidden_layers": args.layers, "num_attention_heads": 28,
           "num_key_value_heads": 4, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
           "torch_dtype": "bfloat16"}
    d, ff, kv = cfg["hidden_size"], cfg["intermediate_size"], 4 * 128
    llm = os.path.join(args.out, "text_encoder", "llm")
    os.makedirs(llm, exist_ok=True)
    with open(os.path.join(llm, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=dev).manual_seed(0)

    def rand(*shape, std=0.02):
        return (torch.randn(*shape, generator=gen, device=dev) * std).to(torch.bfloat16).cpu()

    index, shard, shards = {}, {}, []

    def flush():
        if not shard:
            return
        name = f"model-{len(shards) + 1:05d}.safetensors"
        save_file(dict(shard), os.path.join(llm, name), metadata={"format": "pt"})
        for k in shard:
            index[k] = name
        shards.append(name)
        shard.clear()

    shard["model.embed_tokens.weight"] = rand(cfg["vocab_size"], d)
    flush()
    for i in range(args.layers):
        b = f"model.layers.{i}."
        shard[b + "input_layernorm.weight"] = (1 + rand(d, std=0.1).float()).to(torch.bfloat16)
        shard[b + "post_attention_layernorm.weight"] = (1 + rand(d, std=0.1).float()).to(
            torch.bfloat16)
        shard[b + "self_attn.q_proj.weight"] = rand(d, d)
        shard[b + "self_attn.q_proj.bias"] = rand(d)
        shard[b + "self_attn.k_proj.weight"] = rand(kv, d)
        shard[b + "self_attn.k_proj.bias"] = rand(kv)
        shard[b + "self_attn.v_proj.weight"] = rand(kv, d)
        shard[b + "self_attn.v_proj.bias"] = rand(kv)
        shard[b + "self_attn.o_proj.weight"] = rand(d, d)
        shard[b + "mlp.gate_proj.weight"] = rand(ff, d)
        shard[b + "mlp.up_proj.weight"] = rand(ff, d)
        shard[b + "mlp.down_proj.weight"] = rand(d, ff)
        if i % 4 == 3:
            flush()
    shard["model.norm.weight"] = torch.ones(d, dtype=torch.bfloat16)
    flush()
    with open(os.path.join(llm, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": index}, f)
    for n in (int(x) for x in args.lengths.split(",")):
        ids = torch.randint(0, cfg["vocab_size"], (1, n), generator=torch.Generator().manual_seed(n))
        save_file({"ids": ids, "mask": torch.ones(1, n, dtype=torch.int64)},
                  os.path.join(args.out, f"ids_{n}.safetensors"))
    print(f"wrote {llm}: {args.layers} layers in {len(shards)} shards")


if __name__ == "__main__":
    main()
