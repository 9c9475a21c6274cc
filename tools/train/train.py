#!/usr/bin/env python3
"""Train the bundled fisdit-shapes model (VAE, then DiT + umT5 jointly) and export it in the
official Wan release layout. Wall-clock budgeted: each phase stops at its share of --budget
seconds; a checkpoint (OUT/ckpt.pt) is written at the end of every phase and every --ckpt-every
seconds, and --resume continues from one (phase, step, optimiser state).

  python3 tools/train/train.py --out OUT --budget 500 [--resume OUT/ckpt.pt]
  python3 tools/train/train.py --out /tmp/smoke --budget 30 --tiny --device cpu   # smoke test

Export (OUT/release/): config.json + diffusion_pytorch_model.safetensors (DiT, bf16),
Wan2.1_VAE.safetensors (fp16), models_t5_umt5-xxl-enc-bf16.safetensors (fp32),
google/umt5-xxl/spiece.model, vae_latent_stats.json (the latent mean/std of this VAE).
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
from wan_models import T5Encoder, WanModel, WanVAE  # noqa: E402

FULL = dict(
    frames=17, size=128, batch_vae=4, batch_dit=16,
    vae=dict(dim=24, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=1),
    dit=dict(dim=256, ffn_dim=768, num_heads=4, num_layers=8, text_len=32, text_dim=128),
    t5=dict(dim=128, dim_attn=128, dim_ffn=256, num_heads=2, num_layers=2, num_buckets=32),
    shift=5.0, steps=4)
TINY = dict(
    frames=9, size=32, batch_vae=2, batch_dit=2,
    vae=dict(dim=8, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=1),
    dit=dict(dim=64, ffn_dim=128, num_heads=1, num_layers=4, text_len=32, text_dim=32),
    t5=dict(dim=32, dim_attn=32, dim_ffn=64, num_heads=2, num_layers=2, num_buckets=32),
    shift=5.0, steps=4)


def sample_sigmas(steps, shift):
    u = torch.linspace(1000, 0, steps + 1, dtype=torch.float64) / 1000
    return shift * u / (1 + (shift - 1) * u)


class Tokenizer:
    """umT5 path: pieces, </s> (id 1), pad <pad> (id 0) to text_len."""

    def __init__(self, path, text_len):
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor(model_file=path)
        self.text_len = text_len

    def __call__(self, captions):
        ids = torch.zeros(len(captions), self.text_len, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, c in enumerate(captions):
            t = (self.sp.encode(" ".join(c.split())) + [1])[: self.text_len]
            t[-1] = 1
            ids[i, : len(t)] = torch.tensor(t)
            mask[i, : len(t)] = 1
        return ids, mask


def encode_text(t5, ids, mask):
    """As the pipeline: encoder on the padded ids, rows past the mask zeroed (= trimmed, then
    zero-padded to text_len by the DiT)."""
    return t5(ids, mask) * mask.unsqueeze(-1).to(torch.float32)


def save_st(path, sd, dtype, config):
    from safetensors.torch import save_file
    sd = {k: v.detach().to("cpu", dtype).contiguous() for k, v in sd.items()}
    save_file(sd, path, metadata={"config": json.dumps({"constructor": config})})


def export(out_dir, vae, dit, t5, stats, spm_path):
    import shutil
    os.makedirs(os.path.join(out_dir, "google", "umt5-xxl"), exist_ok=True)
    save_st(os.path.join(out_dir, "diffusion_pytorch_model.safetensors"), dit.state_dict(),
            torch.bfloat16, dit.config)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(dit.config, f, indent=1)
    save_st(os.path.join(out_dir, "Wan2.1_VAE.safetensors"), vae.state_dict(), torch.float16,
            vae.config)
    save_st(os.path.join(out_dir, "models_t5_umt5-xxl-enc-bf16.safetensors"), t5.state_dict(),
            torch.float32, dict(t5.config, shared_pos=False))
    with open(os.path.join(out_dir, "vae_latent_stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    shutil.copy(spm_path, os.path.join(out_dir, "google", "umt5-xxl", "spiece.model"))


@torch.no_grad()
def sample(dit, t5, tok, captions, latent_shape, steps, shift, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((len(captions),) + latent_shape, generator=g).to(device)
    ids, mask = tok(captions)
    ctx = encode_text(t5, ids.to(device), mask.to(device))
    sig = sample_sigmas(steps, shift)
    for k in range(steps):
        t = torch.full((x.size(0),), float(sig[k] * 1000), device=device)
        x = x + float(sig[k + 1] - sig[k]) * dit(x, t, ctx)
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=500, help="seconds for all phases")
    ap.add_argument("--vae-share", type=float, default=0.3)
    ap.add_argument("--resume")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ckpt-every", type=float, default=120)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    start = time.time()
    cfg = TINY if a.tiny else FULL
    dev = torch.device(a.device)
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(a.seed)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    spm_path = data.train_spm(os.path.join(a.out, "tokenizer"))
    import sentencepiece as spm
    vocab = spm.SentencePieceProcessor(model_file=spm_path).get_piece_size()
    vae = WanVAE(**cfg["vae"]).to(dev)
    t5 = T5Encoder(vocab=vocab, **cfg["t5"]).to(dev)
    dit = WanModel(**cfg["dit"]).to(dev)
    tok = Tokenizer(spm_path, cfg["dit"]["text_len"])
    opt_vae = torch.optim.AdamW(vae.parameters(), lr=3e-4, weight_decay=0.0)
    opt_dit = torch.optim.AdamW(list(dit.parameters()) + list(t5.parameters()), lr=3e-4,
                                weight_decay=0.01)
    state = dict(phase="vae", step_vae=0, step_dit=0, stats=None, spent=0.0)
    ckpt = os.path.join(a.out, "ckpt.pt")
    if a.resume:
        s = torch.load(a.resume, map_location=dev)
        for m, k in ((vae, "vae"), (t5, "t5"), (dit, "dit"), (opt_vae, "opt_vae"),
                     (opt_dit, "opt_dit")):
            m.load_state_dict(s[k])
        state = s["state"]
        print(f"resumed {a.resume}: {state['phase']} vae step {state['step_vae']}, "
              f"dit step {state['step_dit']}", flush=True)
    total = a.budget + state["spent"]
    vae_end = total * a.vae_share

    def spent():
        return state["spent"] + time.time() - start

    last_ckpt = [time.time()]

    def save(force=False):
        if not force and time.time() - last_ckpt[0] < a.ckpt_every:
            return
        state_now = dict(state, spent=spent())
        torch.save(dict(vae=vae.state_dict(), t5=t5.state_dict(), dit=dit.state_dict(),
                        opt_vae=opt_vae.state_dict(), opt_dit=opt_dit.state_dict(),
                        state=state_now, cfg=cfg), ckpt)
        last_ckpt[0] = time.time()

    F_, S = cfg["frames"], cfg["size"]
    seed_base = 1_000_003 * (a.seed + 1)
    # ---- phase 1: VAE (L1 + MSE reconstruction, small KL) ----
    while state["phase"] == "vae" and spent() < vae_end:
        x, _ = data.sample_batch(cfg["batch_vae"], seed_base + state["step_vae"], F_, S, S, dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            mu, logvar = vae.encode(x)
            z = mu + torch.randn_like(mu) * (0.5 * logvar.clamp(-30, 20)).exp()
            rec = vae.decode(z).float()
        kl = 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).mean()
        loss = (rec - x).abs().mean() + F.mse_loss(rec, x) + 1e-4 * kl
        opt_vae.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt_vae.step()
        state["step_vae"] += 1
        if state["step_vae"] % 50 == 1:
            print(f"[{spent():6.1f}s] vae {state['step_vae']} loss {loss.item():.4f} "
                  f"kl {kl.item():.3f}", flush=True)
        save()
    if state["phase"] == "vae":
        # latent statistics over a few batches
        vae.eval()
        mus = []
        with torch.no_grad():
            for i in range(8):
                x, _ = data.sample_batch(cfg["batch_vae"], 7_777_777 + i, F_, S, S, dev)
                mus.append(vae.encode(x)[0].float())
        mus = torch.cat(mus).transpose(0, 1).flatten(1)
        rec_err = (vae.decode(vae.encode(x)[0]).clamp(-1, 1) - x).abs().mean().item()
        state["stats"] = dict(mean=mus.mean(1).tolist(), std=mus.std(1).tolist(),
                              vae_l1_on_held_batch=rec_err)
        print(f"[{spent():6.1f}s] vae done: held batch L1 {rec_err:.4f}", flush=True)
        state["phase"] = "dit"
        save(force=True)
    vae.eval().requires_grad_(False)
    mean = torch.tensor(state["stats"]["mean"], device=dev).view(1, -1, 1, 1, 1)
    std = torch.tensor(state["stats"]["std"], device=dev).view(1, -1, 1, 1, 1)
    sig4 = sample_sigmas(cfg["steps"], cfg["shift"])[:-1].float()
    # ---- phase 2: DiT + umT5, flow matching, time sampling focused on the 4-step sigmas ----
    while state["phase"] == "dit" and spent() < total:
        x, caps = data.sample_batch(cfg["batch_dit"], seed_base + 10_000_000 + state["step_dit"],
                                    F_, S, S, dev)
        with torch.no_grad():
            z = (vae.encode(x)[0].float() - mean) / std
        b = z.size(0)
        u = torch.rand(b)
        shifted = cfg["shift"] * u / (1 + (cfg["shift"] - 1) * u)
        pick = sig4[torch.randint(len(sig4), (b,))]
        sigma = torch.where(torch.rand(b) < 0.5, pick, shifted).to(dev)
        noise = torch.randn_like(z)
        s5 = sigma.view(b, 1, 1, 1, 1)
        xt = (1 - s5) * z + s5 * noise
        ids, mask = tok(caps)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            ctx = encode_text(t5, ids.to(dev), mask.to(dev))
            v = dit(xt, sigma * 1000, ctx).float()
        loss = F.mse_loss(v, noise - z)
        opt_dit.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(dit.parameters()) + list(t5.parameters()), 1.0)
        opt_dit.step()
        state["step_dit"] += 1
        if state["step_dit"] % 50 == 1:
            print(f"[{spent():6.1f}s] dit {state['step_dit']} loss {loss.item():.4f}", flush=True)
        save()
    save(force=True)
    dit.eval()
    t5.eval()
    stats = dict(state["stats"], vae_steps=state["step_vae"], dit_steps=state["step_dit"],
                 frames=F_, size=S, shift=cfg["shift"], steps=cfg["steps"])
    export(os.path.join(a.out, "release"), vae, dit, t5, stats, spm_path)
    # a 4-step preview of the held-out prompts (decoded in PyTorch) for a first look
    lat = (vae.z_dim, (F_ - 1) // 4 + 1, S // 8, S // 8)
    with torch.no_grad():
        zs = sample(dit, t5, tok, data.HELD_OUT_PROMPTS[:4], lat, cfg["steps"], cfg["shift"], dev)
        vid = vae.decode(zs * std + mean).clamp(-1, 1)
    torch.save(dict(video=vid.cpu().half(), prompts=data.HELD_OUT_PROMPTS[:4]),
               os.path.join(a.out, "preview.pt"))
    print(f"[{spent():6.1f}s] exported {a.out}/release (vae {state['step_vae']} steps, "
          f"dit {state['step_dit']} steps)", flush=True)


if __name__ == "__main__":
    main()
