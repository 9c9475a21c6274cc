#!/usr/bin/env python3
"""Times the official HunyuanVideo 1.5 DiT forward on the GPU, for the README's comparison
with `fisdit bench` (same shapes, same GPU, same lease).

The official module (github.com/Tencent-Hunyuan/HunyuanVideo-1.5, imported from --repo, nothing
copied) is built with the released architecture (54 double-stream blocks, hidden 2048, 16 heads,
MeanFlow for the step-distilled model) in bf16 with random weights, and run under bf16 autocast
as the pipeline runs it. Its joint attention is given PyTorch SDPA (cuDNN, else flash) in place
of flash_attn / flex_attention, which this machine lacks: every token is valid here (1000 prompt
tokens, 729 vision tokens, no glyph tokens), so the masks the official code would pass are all
true and SDPA without a mask computes the same thing. Stubs stand in for packages the forward
never calls (diffusers' mixins, loguru), as in tools/fixtures/gen_hunyuan15_fixtures.py.

  python3 bench/hunyuan15_official_forward.py --repo DIR --size 848x480 --frames 121
"""
import argparse
import os
import statistics
import sys
import time
import types


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", required=True, help="checkout holding hyvideo/")
    ap.add_argument("--size", default="848x480")
    ap.add_argument("--frames", type=int, default=121)
    ap.add_argument("--text-tokens", type=int, default=1000)
    ap.add_argument("--vision-tokens", type=int, default=729)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    sys.path.insert(0, args.repo)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "tools", "fixtures"))
    from gen_hunyuan15_fixtures import install_stubs
    install_stubs()
    import hyvideo.commons.parallel_states as ps
    ps.__dict__["__parallel_dims"] = types.SimpleNamespace(
        sp_enabled=False, sp=1, sp_rank=0, sp_group=None)
    import hyvideo.models.transformers.modules.attention as attention

    def sdpa_attention(q, k, v, score_mod=None, **_):
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v)

    attention.flex_attention = sdpa_attention
    import hyvideo.models.transformers.hunyuanvideo_1_5_transformer as T

    torch.backends.cuda.matmul.allow_tf32 = True
    dev = torch.device("cuda")
    with dev:
        model = T.HunyuanVideo_1_5_DiffusionTransformer(
            patch_size=[1, 1, 1], in_channels=32, concat_condition=True, out_channels=32,
            hidden_size=2048, heads_num=16, mlp_width_ratio=4.0, mlp_act_type="gelu_tanh",
            mm_double_blocks_depth=54, mm_single_blocks_depth=0, rope_dim_list=[16, 56, 56],
            qkv_bias=True, qk_norm=True, qk_norm_type="rms", guidance_embed=False,
            use_meanflow=True, text_projection="single_refiner", use_attention_mask=True,
            text_states_dim=3584, text_pool_type=None, rope_theta=256, attn_mode="torch",
            glyph_byT5_v2=True, vision_projection="linear", vision_states_dim=1152,
            use_cond_type_embedding=True)
    model = model.to(torch.bfloat16).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5)
            else:
                p.normal_(0.0, 0.1)
    w, h = (int(v) for v in args.size.split("x"))
    tf, th, tw = (args.frames - 1) // 4 + 1, h // 16, w // 16
    x = torch.randn(1, 65, tf, th, tw, device=dev, dtype=torch.bfloat16)
    text = torch.randn(1, args.text_tokens, 3584, device=dev, dtype=torch.bfloat16)
    mask = torch.ones(1, args.text_tokens, dtype=torch.int64, device=dev)
    vision = torch.randn(1, args.vision_tokens, 1152, device=dev, dtype=torch.bfloat16)
    extra = {"byt5_text_states": torch.zeros(1, 0, 1472, device=dev, dtype=torch.bfloat16),
             "byt5_text_mask": torch.zeros(1, 0, dtype=torch.int64, device=dev)}
    t = torch.tensor([954.5454], device=dev)
    r = torch.tensor([921.0526], device=dev)

    def forward():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return model(x, t, text, None, mask, timestep_r=r, vision_states=vision,
                         mask_type="i2v", extra_kwargs=extra)[0]

    forward()
    torch.cuda.synchronize()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        forward()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    tokens = tf * th * tw
    print(f"official HunyuanVideo 1.5 DiT forward, {args.size}, {args.frames} frames "
          f"({tokens} video + {args.text_tokens + args.vision_tokens} text-side tokens), bf16 "
          f"autocast, SDPA: median {statistics.median(times):.1f} ms of {args.repeats} "
          f"({', '.join(f'{v:.1f}' for v in times)}); peak "
          f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
