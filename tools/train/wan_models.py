"""Small PyTorch models in the Wan 2.2 architecture, with the official parameter names, so their
state dicts load in fisdit as official checkpoints: the t2v DiT (WanModel), the Wan 2.1 VAE
(WanVAE_, causal 3D convs, 4x temporal / 8x spatial) and the umT5 encoder (T5Encoder).

Written for fisdit from the architecture's description (wan/modules/model.py, vae2_1.py, t5.py of
Wan-Video/Wan2.2 read for facts). Differences that do not change the function: the VAE runs a
whole clip at once instead of the official frame-chunked loop with feature caches (the causal
convolutions make the two the same), and attention is torch's scaled_dot_product_attention.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# DiT
# ---------------------------------------------------------------------------------------------


def sinusoid(dim, pos):
    """[N] positions -> [N, dim]: cat(cos, sin) of pos * 10000^(-i/half), in float64."""
    half = dim // 2
    pos = pos.double()
    freq = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=pos.device) / half)
    ang = pos[:, None] * freq[None]
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=1)


def rope_table(n, dim, theta=10000.0):
    """[n, dim/2] complex128 rotations."""
    inv = 1.0 / torch.pow(theta, torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim)
    ang = torch.outer(torch.arange(n, dtype=torch.float64), inv)
    return torch.polar(torch.ones_like(ang), ang)


def apply_rope(x, grid, freqs):
    """x [B, L, N, D] (L = f*h*w tokens) rotated by 3D RoPE; D/2 pairs split as
    (D/2 - 2*(D/2//3), D/2//3, D/2//3) over frame, height, width."""
    b, length, n, d = x.shape
    c = d // 2
    f, h, w = grid
    ff, fh, fw = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    rot = torch.cat([ff[:f].view(f, 1, 1, -1).expand(f, h, w, -1),
                     fh[:h].view(1, h, 1, -1).expand(f, h, w, -1),
                     fw[:w].view(1, 1, w, -1).expand(f, h, w, -1)], dim=-1).reshape(length, 1, c)
    xc = torch.view_as_complex(x.double().reshape(b, length, n, c, 2))
    return torch.view_as_real(xc * rot.to(x.device)).flatten(3).type_as(x)


class WanRMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        y = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


class WanLayerNorm(nn.LayerNorm):
    def __init__(self, dim, eps=1e-6, elementwise_affine=False):
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x):
        return super().forward(x.float()).type_as(x)


class SelfAttention(nn.Module):
    def __init__(self, dim, num_heads, eps):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = WanRMSNorm(dim, eps), WanRMSNorm(dim, eps)

    def forward(self, x, grid, freqs):
        b, s, _ = x.shape
        n, d = self.num_heads, self.head_dim
        q = apply_rope(self.norm_q(self.q(x)).view(b, s, n, d), grid, freqs)
        k = apply_rope(self.norm_k(self.k(x)).view(b, s, n, d), grid, freqs)
        v = self.v(x).view(b, s, n, d)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.o(y.transpose(1, 2).flatten(2))


class CrossAttention(SelfAttention):
    def forward(self, x, context):
        b, n, d = x.size(0), self.num_heads, self.head_dim
        q = self.norm_q(self.q(x)).view(b, -1, n, d)
        k = self.norm_k(self.k(context)).view(b, -1, n, d)
        v = self.v(context).view(b, -1, n, d)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.o(y.transpose(1, 2).flatten(2))


class AttentionBlock(nn.Module):
    def __init__(self, dim, ffn_dim, num_heads, eps):
        super().__init__()
        self.norm1 = WanLayerNorm(dim, eps)
        self.self_attn = SelfAttention(dim, num_heads, eps)
        self.norm3 = WanLayerNorm(dim, eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(dim, num_heads, eps)
        self.norm2 = WanLayerNorm(dim, eps)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x, e, grid, freqs, context):
        # e: [B, L, 6, dim] per-token time projection
        m = (self.modulation.unsqueeze(0) + e).chunk(6, dim=2)
        m = [t.squeeze(2) for t in m]
        y = self.self_attn(self.norm1(x).float() * (1 + m[1]) + m[0], grid, freqs)
        x = x + y * m[2]
        x = x + self.cross_attn(self.norm3(x), context)
        y = self.ffn(self.norm2(x).float() * (1 + m[4]) + m[3])
        return x + y * m[5]


class Head(nn.Module):
    def __init__(self, dim, out_dim, patch, eps):
        super().__init__()
        self.norm = WanLayerNorm(dim, eps)
        self.head = nn.Linear(dim, math.prod(patch) * out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x, e):
        m = (self.modulation.unsqueeze(0) + e.unsqueeze(2)).chunk(2, dim=2)
        return self.head(self.norm(x) * (1 + m[1].squeeze(2)) + m[0].squeeze(2))


class WanModel(nn.Module):
    """t2v DiT. forward(x [B, C, F, H, W], t [B] in [0, 1000], context [B, text_len, text_dim]
    already zero-padded) -> [B, out_dim, F, H, W]. hook(name, tensor) sees the fixture hooks."""

    def __init__(self, dim=256, ffn_dim=1024, freq_dim=256, in_dim=16, out_dim=16, num_heads=4,
                 num_layers=8, text_len=32, text_dim=128, eps=1e-6, patch_size=(1, 2, 2)):
        super().__init__()
        self.config = dict(_class_name="WanModel", model_type="t2v", dim=dim, ffn_dim=ffn_dim,
                           freq_dim=freq_dim, in_dim=in_dim, out_dim=out_dim,
                           num_heads=num_heads, num_layers=num_layers, eps=eps,
                           text_len=text_len, text_dim=text_dim, patch_size=list(patch_size),
                           window_size=[-1, -1], qk_norm=True, cross_attn_norm=True)
        self.dim, self.freq_dim, self.out_dim = dim, freq_dim, out_dim
        self.patch = tuple(patch_size)
        self.text_len = text_len
        self.patch_embedding = nn.Conv3d(in_dim, dim, self.patch, stride=self.patch)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(),
                                            nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(AttentionBlock(dim, ffn_dim, num_heads, eps)
                                    for _ in range(num_layers))
        self.head = Head(dim, out_dim, self.patch, eps)
        d = dim // num_heads
        self.register_buffer("freqs", torch.cat([rope_table(1024, d - 4 * (d // 6)),
                                                 rope_table(1024, 2 * (d // 6)),
                                                 rope_table(1024, 2 * (d // 6))], dim=1),
                             persistent=False)

    def forward(self, x, t, context, hook=None):
        hook = hook or (lambda name, v: None)
        x = self.patch_embedding(x)
        b = x.size(0)
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)
        length = x.size(1)
        hook("x_embed", x)
        tt = t.view(b, 1).expand(b, length).flatten()
        e = self.time_embedding(sinusoid(self.freq_dim, tt).unflatten(0, (b, length)).float())
        hook("e", e)
        e0 = self.time_projection(e).unflatten(2, (6, self.dim))
        hook("e0", e0)
        ctx = self.text_embedding(context)
        hook("context", ctx)
        for i, blk in enumerate(self.blocks):
            x = blk(x, e0, grid, self.freqs, ctx)
            hook(f"block_{i}", x)
        x = self.head(x, e)
        hook("head_out", x)
        f, h, w = grid
        p, q, r = self.patch
        x = x.view(b, f, h, w, p, q, r, self.out_dim)
        return torch.einsum("bfhwpqrc->bcfphqwr", x).reshape(b, self.out_dim, f * p, h * q, w * r)


# ---------------------------------------------------------------------------------------------
# umT5 encoder
# ---------------------------------------------------------------------------------------------


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class GELU(nn.Module):
    def forward(self, x):
        return gelu_tanh(x)


class T5LayerNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.type_as(self.weight)


class T5Attention(nn.Module):
    def __init__(self, dim, dim_attn, num_heads):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim_attn // num_heads
        self.q = nn.Linear(dim, dim_attn, bias=False)
        self.k = nn.Linear(dim, dim_attn, bias=False)
        self.v = nn.Linear(dim, dim_attn, bias=False)
        self.o = nn.Linear(dim_attn, dim, bias=False)

    def forward(self, x, mask, pos_bias):
        b, n, c = x.size(0), self.num_heads, self.head_dim
        q, k, v = (f(x).view(b, -1, n, c) for f in (self.q, self.k, self.v))
        bias = pos_bias.expand(b, -1, -1, -1).clone()
        bias.masked_fill_(mask.view(b, 1, 1, -1) == 0, torch.finfo(x.dtype).min)
        attn = torch.einsum("binc,bjnc->bnij", q, k) + bias  # T5: no 1/sqrt(d) scaling
        attn = F.softmax(attn.float(), dim=-1).type_as(attn)
        return self.o(torch.einsum("bnij,bjnc->binc", attn, v).reshape(b, -1, n * c))


class T5FeedForward(nn.Module):
    def __init__(self, dim, dim_ffn):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, dim_ffn, bias=False), GELU())
        self.fc1 = nn.Linear(dim, dim_ffn, bias=False)
        self.fc2 = nn.Linear(dim_ffn, dim, bias=False)

    def forward(self, x):
        return self.fc2(self.fc1(x) * self.gate(x))


class T5RelativeEmbedding(nn.Module):
    def __init__(self, num_buckets, num_heads, max_dist=128):
        super().__init__()
        self.num_buckets, self.max_dist = num_buckets, max_dist
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, lq, lk):
        dev = self.embedding.weight.device
        rel = torch.arange(lk, device=dev).unsqueeze(0) - torch.arange(lq, device=dev).unsqueeze(1)
        nb = self.num_buckets // 2  # bidirectional
        buckets = (rel > 0).long() * nb
        rel = rel.abs()
        exact = nb // 2
        large = exact + (torch.log(rel.float() / exact) / math.log(self.max_dist / exact) *
                         (nb - exact)).long()
        large = torch.minimum(large, torch.full_like(large, nb - 1))
        buckets = buckets + torch.where(rel < exact, rel, large)
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)  # [1, N, lq, lk]


class T5Block(nn.Module):
    def __init__(self, dim, dim_attn, dim_ffn, num_heads, num_buckets):
        super().__init__()
        self.norm1 = T5LayerNorm(dim)
        self.attn = T5Attention(dim, dim_attn, num_heads)
        self.norm2 = T5LayerNorm(dim)
        self.ffn = T5FeedForward(dim, dim_ffn)
        self.pos_embedding = T5RelativeEmbedding(num_buckets, num_heads)

    def forward(self, x, mask):
        e = self.pos_embedding(x.size(1), x.size(1))
        x = x + self.attn(self.norm1(x), mask, e)
        return x + self.ffn(self.norm2(x))


class T5Encoder(nn.Module):
    """umT5 encoder (per-layer relative position embedding). forward(ids [B, L], mask [B, L])."""

    def __init__(self, vocab=64, dim=128, dim_attn=128, dim_ffn=256, num_heads=2, num_layers=2,
                 num_buckets=32):
        super().__init__()
        self.config = dict(vocab=vocab, dim=dim, dim_attn=dim_attn, dim_ffn=dim_ffn,
                           num_heads=num_heads, num_layers=num_layers, num_buckets=num_buckets)
        self.token_embedding = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(T5Block(dim, dim_attn, dim_ffn, num_heads, num_buckets)
                                    for _ in range(num_layers))
        self.norm = T5LayerNorm(dim)

    def forward(self, ids, mask):
        x = self.token_embedding(ids)
        for blk in self.blocks:
            x = blk(x, mask)
        return self.norm(x)


# ---------------------------------------------------------------------------------------------
# Wan 2.1 VAE
# ---------------------------------------------------------------------------------------------


class CausalConv3d(nn.Conv3d):
    """Zero padding only before the first frame (2*p_t frames), symmetric in space."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0):
        super().__init__(cin, cout, kernel, stride=stride, padding=0)
        p = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        self._pad = (p[2], p[2], p[1], p[1], 2 * p[0], 0)

    def forward(self, x):
        return super().forward(F.pad(x, self._pad))


class RMS_norm(nn.Module):
    def __init__(self, dim, images=True):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x):
        return F.normalize(x, dim=1) * self.scale * self.gamma


class Resample(nn.Module):
    def __init__(self, dim, mode):
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          nn.Conv2d(dim, dim // 2, 3, padding=1))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)),
                                          nn.Conv2d(dim, dim, 3, stride=(2, 2)))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def _spatial(self, x):
        b, c, t = x.shape[:3]
        y = self.resample(x.transpose(1, 2).flatten(0, 1))
        return y.unflatten(0, (b, t)).transpose(1, 2)

    def forward(self, x):
        if self.mode == "upsample3d" and x.size(2) > 1:
            # frame 0 is not doubled; the rest go through the causal time conv -> 2 frames each
            rest = self.time_conv(x[:, :, 1:])
            b, c2, t, h, w = rest.shape
            rest = rest.view(b, 2, c2 // 2, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(
                b, c2 // 2, 2 * t, h, w)
            x = torch.cat([x[:, :, :1], rest], dim=2)
        x = self._spatial(x)
        if self.mode == "downsample3d" and x.size(2) > 1:
            # frame 0 alone, then stride-2 windows [0,1,2], [2,3,4], ... (no padding)
            x = torch.cat([x[:, :, :1], self.time_conv(x)], dim=2)
        return x


class ResidualBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.residual = nn.Sequential(RMS_norm(cin, images=False), nn.SiLU(),
                                      CausalConv3d(cin, cout, 3, padding=1),
                                      RMS_norm(cout, images=False), nn.SiLU(), nn.Dropout(0.0),
                                      CausalConv3d(cout, cout, 3, padding=1))
        self.shortcut = CausalConv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        return self.shortcut(x) + self.residual(x)


class VaeAttentionBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = RMS_norm(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        b, c, t, h, w = x.shape
        y = x.transpose(1, 2).flatten(0, 1)
        q, k, v = self.to_qkv(self.norm(y)).flatten(2).transpose(1, 2).chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)
        y = self.proj(y.transpose(1, 2).reshape(b * t, c, h, w))
        return x + y.unflatten(0, (b, t)).transpose(1, 2)


class Encoder3d(nn.Module):
    def __init__(self, dim, z_dim, dim_mult, num_res_blocks, temperal_downsample):
        super().__init__()
        dims = [dim * u for u in [1] + dim_mult]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        layers = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(num_res_blocks):
                layers.append(ResidualBlock(cin, cout))
                cin = cout
            if i != len(dim_mult) - 1:
                layers.append(Resample(cout, "downsample3d" if temperal_downsample[i]
                                       else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)
        self.middle = nn.Sequential(ResidualBlock(cout, cout), VaeAttentionBlock(cout),
                                    ResidualBlock(cout, cout))
        self.head = nn.Sequential(RMS_norm(cout, images=False), nn.SiLU(),
                                  CausalConv3d(cout, z_dim, 3, padding=1))

    def forward(self, x):
        return self.head(self.middle(self.downsamples(self.conv1(x))))


class Decoder3d(nn.Module):
    def __init__(self, dim, z_dim, dim_mult, num_res_blocks, temperal_upsample):
        super().__init__()
        dims = [dim * u for u in [dim_mult[-1]] + dim_mult[::-1]]
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0]), VaeAttentionBlock(dims[0]),
                                    ResidualBlock(dims[0], dims[0]))
        layers = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            if i in (1, 2, 3):
                cin = cin // 2
            for _ in range(num_res_blocks + 1):
                layers.append(ResidualBlock(cin, cout))
                cin = cout
            if i != len(dim_mult) - 1:
                layers.append(Resample(cout, "upsample3d" if temperal_upsample[i]
                                       else "upsample2d"))
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(RMS_norm(cout, images=False), nn.SiLU(),
                                  CausalConv3d(cout, 3, 3, padding=1))

    def forward(self, z):
        return self.head(self.upsamples(self.middle(self.conv1(z))))


class WanVAE(nn.Module):
    """WanVAE_ (Wan 2.1): encode -> (mu, log_var) raw (un-normalised) latents; decode(raw z)."""

    def __init__(self, dim=32, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=1,
                 temperal_downsample=(False, True, True)):
        super().__init__()
        dim_mult, td = list(dim_mult), list(temperal_downsample)
        self.config = dict(dim=dim, z_dim=z_dim, dim_mult=dim_mult, num_res_blocks=num_res_blocks,
                           attn_scales=[], temperal_downsample=td, dropout=0.0)
        self.z_dim = z_dim
        self.encoder = Encoder3d(dim, z_dim * 2, dim_mult, num_res_blocks, td)
        self.conv1 = CausalConv3d(z_dim * 2, z_dim * 2, 1)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)
        self.decoder = Decoder3d(dim, z_dim, dim_mult, num_res_blocks, td[::-1])

    def encode(self, x):
        mu, log_var = self.conv1(self.encoder(x)).chunk(2, dim=1)
        return mu, log_var

    def decode(self, z):
        return self.decoder(self.conv2(z))
