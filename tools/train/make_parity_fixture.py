#!/usr/bin/env python3
"""Parity fixture for the C++ engine from this directory's PyTorch DiT (wan_models.WanModel):
a small t2v model at the bundled model's head_dim (64) with seeded random weights rounded to
bf16 as the export stores them, one forward in float32 on the CPU, and every hook the engine
exposes. Same format as tests/data/wan (model.*, input.*, expected.*, metadata config), so
tests/models/wan_parity_test.cpp checks it like the official fixtures.

  python3 tools/train/make_parity_fixture.py tests/data/wan/dit_shapes_tiny.safetensors
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wan_models import WanModel  # noqa: E402


@torch.no_grad()
def main(path):
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
    tensors = {k: v.float().contiguous() for k, v in tensors.items()}
    cfg = {k: v for k, v in model.config.items() if k != "_class_name"}
    config = dict(fixture="dit_shapes_tiny", kind="wan_dit", constructor=cfg,
                  description="tools/train/wan_models.py WanModel (t2v) float32 CPU forward; "
                  "context zero-padded to text_len; hooks as the official fixtures")
    save_file(tensors, path, metadata={"config": json.dumps(config)})
    print(f"wrote {path} ({len(tensors)} tensors)")


if __name__ == "__main__":
    main(sys.argv[1])
