#!/usr/bin/env python3
"""Procedural captioned videos for training the bundled fisdit-shapes model.

A clip is one coloured shape (square, circle, triangle, diamond) that moves, rotates, bounces,
grows or shrinks over a plain, gradient or striped background; its caption comes from a small
grammar ("a red square moves left on a blue background"). Everything is deterministic by seed:
the clip parameters are drawn with a CPU torch.Generator, rendering is plain tensor arithmetic
(any device). Pixel values are in [-1, 1], layout [B, 3, F, H, W] as the Wan VAE expects.

A fixed set of (shape, colour, motion) triples is held out of training (HELD_OUT_PROMPTS);
`sample_batch` never draws them.

  python3 tools/train/data.py spm OUT_DIR       # train spiece.model on the caption grammar
  python3 tools/train/data.py preview OUT.png   # a grid of frames, for a look
"""
import argparse
import itertools
import math
import os

import torch

SHAPES = ["square", "circle", "triangle", "diamond"]
COLOURS = {
    "red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.9, 0.1), "white": (0.97, 0.97, 0.97), "black": (0.05, 0.05, 0.05),
    "orange": (1.0, 0.55, 0.05), "purple": (0.6, 0.15, 0.8), "cyan": (0.1, 0.85, 0.9),
    "pink": (1.0, 0.5, 0.75),
}
MOTIONS = ["moves left", "moves right", "moves up", "moves down", "rotates", "bounces",
           "grows", "shrinks", "stays still"]
BG_COLOURS = ["red", "green", "blue", "yellow", "white", "black", "purple", "gray"]
BG_KINDS = ["", "gradient ", "striped "]
BG_RGB = dict(COLOURS, gray=(0.5, 0.5, 0.5))

# Held out of training: the quality report's prompts use these triples.
HELD_OUT = [("circle", "orange", "moves right"), ("triangle", "cyan", "bounces"),
            ("square", "pink", "rotates"), ("diamond", "yellow", "moves down"),
            ("circle", "white", "grows"), ("square", "green", "moves up"),
            ("triangle", "red", "shrinks"), ("diamond", "blue", "moves left")]
HELD_OUT_BG = ["black", "white", "gray", "green", "blue", "yellow", "purple", "red"]


def caption(shape, colour, motion, bg_kind, bg_colour):
    return f"{'an' if colour == 'orange' else 'a'} {colour} {shape} {motion} on a {bg_kind}{bg_colour} background"


HELD_OUT_PROMPTS = [caption(s, c, m, "gradient " if i % 3 == 1 else "", HELD_OUT_BG[i])
                    for i, (s, c, m) in enumerate(HELD_OUT)]


def all_captions():
    """Every caption the grammar can produce (training vocabulary for the tokenizer)."""
    for s, c, m, k, b in itertools.product(SHAPES, COLOURS, MOTIONS, BG_KINDS, BG_COLOURS):
        yield caption(s, c, m, k, b)


def draw_params(gen):
    """One clip's parameters (python scalars), never a held-out triple."""

    def pick(seq):
        return seq[int(torch.randint(len(seq), (1,), generator=gen))]

    def unif(a, b):
        return a + (b - a) * float(torch.rand((), generator=gen))

    held = set(HELD_OUT)
    while True:
        shape, colour, motion = pick(SHAPES), pick(list(COLOURS)), pick(MOTIONS)
        if (shape, colour, motion) not in held:
            break
    while True:
        bg_colour = pick(BG_COLOURS)
        if bg_colour != colour:
            break
    return dict(shape=shape, colour=colour, motion=motion, bg_kind=pick(BG_KINDS),
                bg_colour=bg_colour, x=unif(-0.3, 0.3), y=unif(-0.3, 0.3), size=unif(0.18, 0.28),
                angle=unif(0, math.pi / 2), bg_angle=unif(0, 2 * math.pi),
                stripes=unif(3, 7), speed=unif(0.8, 1.2))


def trajectory(p, frames):
    """Per-frame centre x, y, size, angle as [F] tensors (t in [0, 1])."""
    t = torch.linspace(0, 1, frames, dtype=torch.float64)
    x = torch.full_like(t, p["x"])
    y = torch.full_like(t, p["y"])
    size = torch.full_like(t, p["size"])
    angle = torch.zeros_like(t)  # upright unless it rotates
    d = 0.9 * p["speed"]
    m = p["motion"]
    if m in ("moves left", "moves right"):
        x = (0.45 if m == "moves left" else -0.45) * torch.ones_like(t) + \
            (-d if m == "moves left" else d) * t
        y = torch.full_like(t, p["y"])
    elif m in ("moves up", "moves down"):
        y = (0.45 if m == "moves up" else -0.45) * torch.ones_like(t) + \
            (-d if m == "moves up" else d) * t
    elif m == "rotates":
        angle = p["angle"] + 2.0 * p["speed"] * t
    elif m == "bounces":
        y = 0.4 - 0.8 * (2 * (t * 1.5 * p["speed"] % 1.0) - 1).abs()
    elif m == "grows":
        size = 0.1 + 0.25 * t
    elif m == "shrinks":
        size = 0.35 - 0.25 * t
    return x, y, size, angle


def render(p, frames, height, width, device="cpu"):
    """One clip [3, F, H, W] in [-1, 1]."""
    ys = torch.linspace(-1, 1, height, device=device).view(1, height, 1)
    xs = torch.linspace(-1, 1, width, device=device).view(1, 1, width) * (width / height)
    # background
    base = torch.tensor(BG_RGB[p["bg_colour"]], device=device).view(3, 1, 1)
    ca, sa = math.cos(p["bg_angle"]), math.sin(p["bg_angle"])
    u = (xs * ca + ys * sa)  # [1, H, W]
    if p["bg_kind"] == "gradient ":
        bg = base * (0.55 + 0.45 * u) + 0.1 * (1 - base) * (u < 0)
    elif p["bg_kind"] == "striped ":
        s = (torch.sin(u * p["stripes"] * math.pi) > 0).float()
        bg = base * (0.6 + 0.4 * s)
    else:
        bg = base.expand(3, height, width)
    bg = bg.clamp(0, 1).expand(3, height, width)
    cx, cy, size, angle = (v.float().to(device).view(frames, 1, 1) for v in trajectory(p, frames))
    dx, dy = xs - cx, ys - cy
    c, s = torch.cos(angle), torch.sin(angle)
    rx, ry = dx * c + dy * s, -dx * s + dy * c
    sh = p["shape"]
    if sh == "square":
        dist = torch.maximum(rx.abs(), ry.abs()) - size
    elif sh == "circle":
        dist = (rx * rx + ry * ry).sqrt() - size
    elif sh == "diamond":
        dist = (rx.abs() + ry.abs()) / math.sqrt(2) - size * 0.85
    else:  # triangle: intersection of three half-planes
        ds = []
        for k in range(3):
            a = angle.view(frames, 1, 1) * 0 + (k * 2 * math.pi / 3 - math.pi / 2)
            ds.append(rx * torch.cos(a) + ry * torch.sin(a))
        dist = torch.maximum(torch.maximum(ds[0], ds[1]), ds[2]) - size * 0.6
    alpha = torch.sigmoid(-dist * height * 0.6).unsqueeze(0)  # [1, F, H, W], soft edge
    fg = torch.tensor(COLOURS[p["colour"]], device=device).view(3, 1, 1, 1)
    video = alpha * fg + (1 - alpha) * bg.unsqueeze(1)
    return video * 2 - 1


def sample_batch(batch, seed, frames=17, height=128, width=128, device="cpu"):
    """(videos [B, 3, F, H, W], captions) for one seed."""
    gen = torch.Generator().manual_seed(seed)
    params = [draw_params(gen) for _ in range(batch)]
    videos = torch.stack([render(p, frames, height, width, device) for p in params])
    caps = [caption(p["shape"], p["colour"], p["motion"], p["bg_kind"], p["bg_colour"])
            for p in params]
    return videos, caps


def train_spm(out_dir, vocab_size=64):
    """spiece.model for the umT5 tokenizer path: <pad>=0, </s>=1, <unk>=2, no <s>."""
    import sentencepiece as spm
    os.makedirs(out_dir, exist_ok=True)
    text = os.path.join(out_dir, "captions.txt")
    with open(text, "w") as f:
        for c in all_captions():
            f.write(c + "\n")
        for c in HELD_OUT_PROMPTS:  # words only; the held-out triples are not in the grammar's
            f.write(c + "\n")       # training draws, but every word is
    spm.SentencePieceTrainer.train(
        input=text, model_prefix=os.path.join(out_dir, "spiece"), vocab_size=vocab_size,
        model_type="word", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>",
        eos_piece="</s>", unk_piece="<unk>", character_coverage=1.0, hard_vocab_limit=False,
        input_sentence_size=1000000, shuffle_input_sentence=False, num_threads=1,
        minloglevel=2)
    os.remove(text)
    return os.path.join(out_dir, "spiece.model")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("spm")
    a.add_argument("out")
    b = sub.add_parser("preview")
    b.add_argument("out")
    b.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.cmd == "spm":
        print(train_spm(args.out))
    else:
        import numpy as np
        from PIL import Image
        v, caps = sample_batch(4, args.seed)
        grid = ((v[:, :, ::4] + 1) * 127.5).clamp(0, 255).byte()  # [B, 3, 5, H, W]
        rows = [torch.cat(list(grid[i].permute(1, 2, 3, 0)), dim=1) for i in range(4)]
        Image.fromarray(np.asarray(torch.cat(rows, dim=0))).save(args.out)
        print("\n".join(caps))


if __name__ == "__main__":
    main()
