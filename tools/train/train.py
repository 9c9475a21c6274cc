#!/usr/bin/env python3
"""Train the bundled fisdit-shapes model (VAE, then DiT + umT5 jointly) and export it in the
official Wan release layout. Wall-clock budgeted: each phase stops at its share of --budget
seconds; a checkpoint (OUT/ckpt.pt) is written at the end of every phase and every --ckpt-every
seconds, and --resume continues from one (phase, step, optimiser state).

  python3 tools/train/train.py --out OUT --budget 500 [--resume OUT/ckpt.pt]
  python3 tools/train/train.py --out /tmp/smoke --budget 30 --tiny --device cpu   # smoke test

Export (OUT/release/): config.json + diffusion_pytorch_model.safetensors (DiT, bf16),
Wan2.1_VAE.safetensors (fp16), models_t5_umt5-xxl-enc-bf16.safetensors (fp32),
google/umt5-xxl/spiece.model (the VAE's metadata holds its latent mean/std), fisdit.json (the
generation defaults fisdit uses for this model, the held-out prompts, training facts).
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
    frames=33, frames_vae=33, vae_crop=64, size=128, batch_vae=8, batch_dit=64, pool=4096,
    pool_refresh=4, lr_vae=5e-4, lr_dit=4e-4,
    vae=dict(dim=24, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=1),
    dit=dict(dim=256, ffn_dim=768, num_heads=4, num_layers=8, text_len=32, text_dim=128),
    t5=dict(dim=128, dim_attn=128, dim_ffn=256, num_heads=2, num_layers=2, num_buckets=32),
    shift=5.0, steps=4)
TINY = dict(
    frames=9, frames_vae=9, vae_crop=16, size=32, batch_vae=2, batch_dit=2, pool=16,
    pool_refresh=2, lr_vae=3e-4, lr_dit=3e-4,
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


def save_st(path, sd, dtype, config, extra=None):
    from safetensors.torch import save_file
    sd = {k: v.detach().to("cpu", dtype).contiguous() for k, v in sd.items()}
    save_file(sd, path, metadata={"config": json.dumps(dict({"constructor": config}, **(extra or {})))})


def export(out_dir, vae, dit, t5, stats, spm_path):
    import shutil
    os.makedirs(os.path.join(out_dir, "google", "umt5-xxl"), exist_ok=True)
    save_st(os.path.join(out_dir, "diffusion_pytorch_model.safetensors"), dit.state_dict(),
            torch.bfloat16, dit.config)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(dit.config, f, indent=1)
    # the latent statistics travel in the VAE's metadata, where fisdit reads them
    save_st(os.path.join(out_dir, "Wan2.1_VAE.safetensors"), vae.state_dict(), torch.float16,
            vae.config, dict(real_model=dict(latents_mean=stats["mean"], latents_std=stats["std"])))
    save_st(os.path.join(out_dir, "models_t5_umt5-xxl-enc-bf16.safetensors"), t5.state_dict(),
            torch.float32, dict(t5.config, shared_pos=False))
    # what `fisdit generate` uses when the user gives no --size/--frames/... for this model
    with open(os.path.join(out_dir, "fisdit.json"), "w") as f:
        json.dump(dict(name="fisdit-shapes", size=f"{stats['size']}x{stats['size']}",
                       frames=stats["frames"], steps=stats["steps"], shift=stats["shift"],
                       guidance=1.0, solver="euler", held_out_prompts=data.HELD_OUT_PROMPTS,
                       training={k: v for k, v in stats.items() if k not in ("mean", "std")}), f, indent=1)
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


def write_preview(path, video, prompts):
    """A PNG grid: one row per prompt, every 4th frame; the prompts on stdout."""
    try:
        import numpy as np
        from PIL import Image
    except ImportError:
        print("preview skipped (no pillow/numpy)")
        return
    v = ((video[:, :, ::4].float().cpu() + 1) * 127.5).clamp(0, 255).byte()  # [B, 3, F', H, W]
    rows = [torch.cat(list(v[i].permute(1, 2, 3, 0)), dim=1) for i in range(v.size(0))]
    Image.fromarray(np.asarray(torch.cat(rows, dim=0))).save(path)
    for i, p in enumerate(prompts):
        print(f"preview row {i}: {p}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=500, help="seconds for all phases")
    ap.add_argument("--vae-share", type=float, default=0.3)
    ap.add_argument("--resume", help="a checkpoint (OUT/ckpt.pt) to continue from")
    ap.add_argument("--init-from", help="an exported release to continue the DiT phase from")
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
    opt_vae = torch.optim.AdamW(vae.parameters(), lr=cfg["lr_vae"], weight_decay=0.0)
    opt_dit = torch.optim.AdamW(list(dit.parameters()) + list(t5.parameters()), lr=cfg["lr_dit"],
                                weight_decay=0.01)
    state = dict(phase="vae", step_vae=0, step_dit=0, stats=None, spent=0.0)
    ckpt = os.path.join(a.out, "ckpt.pt")
    if a.init_from:
        # continue from an exported release (weights only, fresh optimiser): the VAE is kept as
        # it is and all of --budget goes to the DiT + umT5 phase
        from safetensors import safe_open
        from safetensors.torch import load_file
        r = a.init_from
        for m, f in ((dit, "diffusion_pytorch_model.safetensors"), (vae, "Wan2.1_VAE.safetensors"),
                     (t5, "models_t5_umt5-xxl-enc-bf16.safetensors")):
            sd = load_file(os.path.join(r, f))
            m.load_state_dict({k: v.float() for k, v in sd.items()})
        with safe_open(os.path.join(r, "Wan2.1_VAE.safetensors"), "pt") as f:
            real = json.loads(f.metadata()["config"])["real_model"]
        with open(os.path.join(r, "fisdit.json")) as f:
            prev = json.load(f)["training"]
        state = dict(phase="dit", step_vae=prev["vae_steps"], step_dit=prev["dit_steps"],
                     stats=dict(mean=real["latents_mean"], std=real["latents_std"],
                                vae_l1_on_held_batch=prev.get("vae_l1_on_held_batch")),
                     spent=0.0)
        a.vae_share = 0.0
        print(f"initialised from {r}: dit step {state['step_dit']} (fresh optimiser)", flush=True)
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

    def decay(opt, lr, end, length):
        """Learning rate `lr`, decayed linearly to lr/10 over the last 30 % of a phase (by the
        clock, as the phases are)."""
        left = max(0.0, end - spent()) / max(1e-6, 0.3 * length)
        for g in opt.param_groups:
            g["lr"] = lr * max(0.1, min(1.0, left))

    F_, FV, S = cfg["frames"], cfg["frames_vae"], cfg["size"]
    seed_base = 1_000_003 * (a.seed + 1)
    # ---- phase 1: VAE (L1 + MSE reconstruction, small KL) ----
    # Whole clips of the generation length (a causal VAE trained on shorter clips drifts past
    # them), random vae_crop x vae_crop windows (the VAE is convolutional; 4x cheaper), and the
    # first frame, which the causal VAE codes alone, weighted up.
    C = cfg["vae_crop"]
    while state["phase"] == "vae" and spent() < vae_end:
        step_seed = seed_base + state["step_vae"]
        x, _ = data.sample_batch(cfg["batch_vae"], step_seed, FV, S, S, dev)
        g = torch.Generator().manual_seed(step_seed)
        oy, ox = (int(v) for v in torch.randint(0, S - C + 1, (2,), generator=g))
        x = x[..., oy:oy + C, ox:ox + C]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            mu, logvar = vae.encode(x)
            z = mu + torch.randn_like(mu) * (0.5 * logvar.clamp(-30, 20)).exp()
            rec = vae.decode(z).float()
        kl = 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).mean()
        err0 = rec[:, :, :1] - x[:, :, :1]
        loss = (rec - x).abs().mean() + F.mse_loss(rec, x) + 1e-4 * kl + \
            0.5 * (err0.abs().mean() + err0.pow(2).mean())
        decay(opt_vae, cfg["lr_vae"], vae_end, vae_end)
        opt_vae.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt_vae.step()
        state["step_vae"] += 1
        if state["step_vae"] % 100 == 1:
            print(f"[{spent():6.1f}s] vae {state['step_vae']} loss {loss.item():.4f} "
                  f"kl {kl.item():.3f}", flush=True)
        save()
    if state["phase"] == "vae":
        # latent statistics over a few batches
        vae.eval()
        mus = []
        with torch.no_grad():
            for i in range(8):
                x, _ = data.sample_batch(cfg["batch_vae"], 7_777_777 + i, FV, S, S, dev)
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
    # Latents come from a pool of encoded clips (encoding dominates the cost of a step), of
    # which `pool_refresh` are replaced by fresh clips every step.
    def encode_clips(n, seed):
        x, caps = data.sample_batch(n, seed, F_, S, S, dev)
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                             enabled=dev.type == "cuda"):
            z = (vae.encode(x)[0].float() - mean) / std
        ids, mask = tok(caps)
        return z, ids.to(dev), mask.to(dev)

    fresh = [seed_base + 20_000_000 + 1000 * state["step_dit"]]  # next clip seed

    def next_clips(n):
        fresh[0] += 1
        return encode_clips(n, fresh[0])

    pz, pids, pmask = [], [], []
    while sum(len(z) for z in pz) < cfg["pool"] and state["phase"] == "dit":
        z, ids, mask = next_clips(64 if dev.type == "cuda" else 2)
        pz.append(z), pids.append(ids), pmask.append(mask)
    if state["phase"] == "dit":
        pz, pids, pmask = (torch.cat(t)[: cfg["pool"]] for t in (pz, pids, pmask))
        print(f"[{spent():6.1f}s] latent pool: {len(pz)} clips", flush=True)
    gen_pool = torch.Generator().manual_seed(seed_base + state["step_dit"])
    while state["phase"] == "dit" and spent() < total:
        z, ids, mask = next_clips(cfg["pool_refresh"])
        slot = torch.randint(len(pz), (len(z),), generator=gen_pool).to(dev)
        pz[slot], pids[slot], pmask[slot] = z, ids, mask
        pick_i = torch.randint(len(pz), (cfg["batch_dit"],), generator=gen_pool).to(dev)
        z, ids, mask = pz[pick_i], pids[pick_i], pmask[pick_i]
        b = z.size(0)
        u = torch.rand(b)
        shifted = cfg["shift"] * u / (1 + (cfg["shift"] - 1) * u)
        pick = sig4[torch.randint(len(sig4), (b,))]
        sigma = torch.where(torch.rand(b) < 0.5, pick, shifted).to(dev)
        noise = torch.randn_like(z)
        s5 = sigma.view(b, 1, 1, 1, 1)
        xt = (1 - s5) * z + s5 * noise
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            ctx = encode_text(t5, ids, mask)
            v = dit(xt, sigma * 1000, ctx).float()
        loss = F.mse_loss(v, noise - z)
        decay(opt_dit, cfg["lr_dit"], total, total - vae_end)
        opt_dit.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(dit.parameters()) + list(t5.parameters()), 1.0)
        opt_dit.step()
        state["step_dit"] += 1
        if state["step_dit"] % 100 == 1:
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
        zs = sample(dit, t5, tok, data.HELD_OUT_PROMPTS, lat, cfg["steps"], cfg["shift"], dev)
        vid = vae.decode(zs * std + mean).clamp(-1, 1)
        # and two clips through the VAE alone (rows 8-9 the clips, 10-11 their reconstruction)
        x, caps = data.sample_batch(2, 424242, F_, S, S, dev)
        rec = vae.decode(vae.encode(x)[0]).clamp(-1, 1)
        print(f"VAE L1 on two {F_}-frame clips: {(rec - x).abs().mean().item():.4f}")
    write_preview(os.path.join(a.out, "preview.png"), torch.cat([vid, x, rec]),
                  data.HELD_OUT_PROMPTS + caps + [f"(VAE) {c}" for c in caps])
    print(f"[{spent():6.1f}s] exported {a.out}/release (vae {state['step_vae']} steps, "
          f"dit {state['step_dit']} steps)", flush=True)


if __name__ == "__main__":
    main()
