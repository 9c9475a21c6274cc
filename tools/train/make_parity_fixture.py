#!/usr/bin/env python3
"""Parity fixtures for the C++ engine from this directory's PyTorch models, in the format of
tests/data/wan (model.*, input.*, expected.*, metadata config), so the engine's parity tests
check them like the official fixtures:
  dit_shapes_tiny: WanModel (t2v) at the bundled model's head_dim (64), seeded random weights
    rounded to bf16 as the export stores them, one float32 CPU forward with every hook
    (tests/models/wan_parity_test.cpp);
  vae21_shapes_tiny: WanVAE (Wan 2.1) dim 8, weights rounded to fp16 as exported; encode of a
    9-frame 32x32 clip, decode of its latent (tests/models/vae_parity_test.cpp);
  t5_shapes_tiny: T5Encoder (umT5) at the bundled model's size and vocabulary, 20 ids of which
    13 are real, output and trimmed context (tests/models/t5_parity_test.cpp).

  python3 tools/train/make_parity_fixture.py tests/data/wan
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wan_models import T5Encoder, WanModel, WanVAE  # noqa: E402


@torch.no_grad()
def make_dit(path):
    torch.manual_seed(11)
    model = WanModel(dim=128, ffn_dim=256, num_heads=2, num_layers=4, text_len=32, text_dim=32)
    for p in model.parameters():  # bf16 weights (as exported), nothing left at zero
        p.copy_((p + 0.05 * torch.randn_like(p)).bfloat16().float())
    g = torch.Generator().manual_seed(12)
    inputs = dict(x=torch.randn(16, 5, 8, 8, generator=g), t=torch.tensor([812.5]),
                  context=torch.randn(11, 32, generator=g))
    ctx = torch.cat([inputs["context"], torch.zeros(32 - 11, 32)])[None]
    got = {}
    out = model(inputs["x"][None], inputs["t"], ctx,
                hook=lambda n, v: got.__setitem__(n, v[0].clone()))
    got["out"] = out[0]
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"input.{k}": v for k, v in inputs.items()})
    tensors.update({f"expected.{k}": v for k, v in got.items()})
    tensors = {k: v.float().clone().contiguous() for k, v in tensors.items()}
    cfg = {k: v for k, v in model.config.items() if k != "_class_name"}
    config = dict(fixture="dit_shapes_tiny", kind="wan_dit", constructor=cfg,
                  description="tools/train/wan_models.py WanModel (t2v) float32 CPU forward; "
                  "context zero-padded to text_len; hooks as the official fixtures")
    save_file(tensors, path, metadata={"config": json.dumps(config)})
    print(f"wrote {path} ({len(tensors)} tensors)")


@torch.no_grad()
def make_vae(path):
    torch.manual_seed(21)
    model = WanVAE(dim=8, z_dim=16)
    for name, p in model.named_parameters():  # fp16 weights (as exported), gammas near 1
        p.copy_((p + 0.05 * torch.randn_like(p)).half().float())
    g = torch.Generator().manual_seed(22)
    mean, std = torch.randn(16, generator=g) * 0.3, torch.rand(16, generator=g) + 0.5
    m5, s5 = mean.view(1, -1, 1, 1, 1), std.view(1, -1, 1, 1, 1)
    video = torch.rand(1, 3, 9, 32, 32, generator=g) * 2 - 1
    image = video[:, :, :1].clone()
    enc_raw = model.encoder(video)
    mu = (model.conv1(enc_raw).chunk(2, dim=1)[0] - m5) / s5
    z_raw = mu * s5 + m5
    decoded = model.decode(z_raw)
    inputs = dict(video=video, image=image, scale_mean=mean, scale_std=std, z=mu)
    expected = dict(enc_raw=enc_raw, mu=mu, dec_conv2=model.conv2(z_raw), decoded=decoded,
                    decoded_clamped=decoded.clamp(-1, 1),
                    mu_image=(model.encode(image)[0] - m5) / s5)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"input.{k}": v for k, v in inputs.items()})
    tensors.update({f"expected.{k}": v for k, v in expected.items()})
    tensors = {k: v.float().clone().contiguous() for k, v in tensors.items()}
    config = dict(fixture="vae21_shapes_tiny", kind="wan_vae", module="vae2_1",
                  constructor=model.config,
                  description="tools/train/wan_models.py WanVAE float32 CPU; mu normalised "
                  "with input.scale_mean/std; input.z = expected.mu; decoded not clamped")
    save_file(tensors, path, metadata={"config": json.dumps(config)})
    print(f"wrote {path} ({len(tensors)} tensors)")


@torch.no_grad()
def make_t5(path):
    torch.manual_seed(31)
    model = T5Encoder(vocab=34, dim=128, dim_attn=128, dim_ffn=256, num_heads=2, num_layers=2)
    for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(32)
    ids = torch.randint(3, 34, (1, 20), generator=g)
    ids[0, 12], ids[0, 13:] = 1, 0  # 12 pieces, </s>, padding
    mask = (torch.arange(20) < 13).long()[None]
    out = model(ids, mask)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({"input.ids": ids, "input.mask": mask, "expected.out": out,
                    "expected.context": out[:, :13]})
    tensors = {k: v.clone().contiguous() for k, v in tensors.items()}
    config = dict(fixture="t5_shapes_tiny", kind="wan_t5",
                  constructor=dict(model.config, shared_pos=False),
                  description="tools/train/wan_models.py T5Encoder float32 CPU on the padded "
                  "ids with the mask; context = out trimmed to sum(mask) rows")
    save_file(tensors, path, metadata={"config": json.dumps(config)})
    print(f"wrote {path} ({len(tensors)} tensors)")


if __name__ == "__main__":
    make_t5(os.path.join(sys.argv[1], "t5_shapes_tiny.safetensors"))
    make_dit(os.path.join(sys.argv[1], "dit_shapes_tiny.safetensors"))
    make_vae(os.path.join(sys.argv[1], "vae21_shapes_tiny.safetensors"))
