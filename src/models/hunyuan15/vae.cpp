#include "models/hunyuan15/vae.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "backend/backend.h"
#include "core/layout.h"
#include "fisdit/error.h"
#include "io/checkpoint.h"
#include "models/hunyuan15/config.h"

namespace fisdit::hunyuan15 {

namespace {
int log2_exact(int v) {
  int l = 0;
  while ((1 << l) < v) ++l;
  return l;
}
// Encoder level i: spatial downsample while i < log2(spatial); temporal from
// log2(spatial / temporal) on (Encoder.__init__). Decoder level i: spatial while
// i < log2(spatial), temporal while i < log2(temporal) (Decoder.__init__).
bool enc_spatial(const VaeConfig& c, int i) { return i < log2_exact(c.ffactor_spatial); }
bool enc_temporal(const VaeConfig& c, int i) {
  return enc_spatial(c, i) && i >= log2_exact(c.ffactor_spatial / c.ffactor_temporal);
}
bool dec_spatial(const VaeConfig& c, int i) { return i < log2_exact(c.ffactor_spatial); }
bool dec_temporal(const VaeConfig& c, int i) { return i < log2_exact(c.ffactor_temporal); }
}  // namespace

void VaeConfig::validate(const std::string& source) const {
  auto fail = [&](const std::string& what) { throw Error(source + ": " + what); };
  const auto& b = block_out_channels;
  if (b.empty() || layers_per_block < 1 || latent_channels < 1 || in_channels < 1 ||
      out_channels < 1)
    fail("VAE sizes must be positive");
  if (ffactor_spatial < 1 || (ffactor_spatial & (ffactor_spatial - 1)) || ffactor_temporal < 1 ||
      (ffactor_temporal & (ffactor_temporal - 1)) || ffactor_temporal > ffactor_spatial)
    fail("ffactor_spatial and ffactor_temporal must be powers of 2, temporal <= spatial");
  const int levels = static_cast<int>(b.size());
  if (log2_exact(ffactor_spatial) >= levels)
    fail("block_out_channels needs more levels than log2(ffactor_spatial)");
  if (b.back() % (2 * latent_channels) || b.back() % latent_channels)
    fail("the last block's channels must be a multiple of 2 * latent_channels");
  for (int i = 0; i < levels; ++i) {
    if (!enc_spatial(*this, i)) continue;
    const int factor = enc_temporal(*this, i) ? 8 : 4;
    if (b[static_cast<size_t>(i) + 1] % factor ||
        (factor * b[static_cast<size_t>(i)]) % b[static_cast<size_t>(i) + 1])
      fail("block_out_channels do not fit the encoder's space-to-channel downsampling");
  }
}

VaeConfig vae_config_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": VAE config is not a JSON object");
  VaeConfig c;
  auto integer = [&](const char* key, int& out) { read_field(j, key, out, source); };
  integer("in_channels", c.in_channels);
  integer("out_channels", c.out_channels);
  integer("latent_channels", c.latent_channels);
  integer("layers_per_block", c.layers_per_block);
  integer("ffactor_spatial", c.ffactor_spatial);
  integer("ffactor_temporal", c.ffactor_temporal);
  if (j.contains("block_out_channels")) {
    const auto& a = j["block_out_channels"];
    if (!a.is_array()) throw Error(source + ": block_out_channels must be an array");
    c.block_out_channels.clear();
    for (const auto& v : a) {
      if (!v.is_number_integer()) throw Error(source + ": block_out_channels must hold integers");
      c.block_out_channels.push_back(v.get<int>());
    }
  }
  if (j.contains("scaling_factor") && j["scaling_factor"].is_number())
    c.scaling_factor = j["scaling_factor"].get<double>();
  c.validate(source);
  return c;
}

namespace {
// Names and shapes of one module tree, in the official order.
struct Names {
  std::vector<std::pair<std::string, Shape>> all;
  void conv(const std::string& n, int64_t out, int64_t in, int64_t k) {
    all.push_back({n + ".weight", {out, in, k, k, k}});
    all.push_back({n + ".bias", {out}});
  }
  void gamma(const std::string& n, int64_t c) { all.push_back({n + ".gamma", {c, 1, 1, 1}}); }
  void res(const std::string& n, int64_t in, int64_t out) {
    gamma(n + ".norm1", in);
    conv(n + ".conv1.conv", out, in, 3);
    gamma(n + ".norm2", out);
    conv(n + ".conv2.conv", out, out, 3);
    if (in != out) conv(n + ".nin_shortcut", out, in, 1);
  }
  void attn(const std::string& n, int64_t c) {
    gamma(n + ".norm", c);
    for (const char* p : {".q", ".k", ".v", ".proj_out"}) conv(n + p, c, c, 1);
  }
};
}  // namespace

std::vector<std::pair<std::string, Shape>> vae_parameter_shapes(const VaeConfig& c) {
  Names n;
  const auto& b = c.block_out_channels;
  const int levels = static_cast<int>(b.size());
  n.conv("encoder.conv_in.conv", b[0], c.in_channels, 3);
  int64_t in = b[0];
  for (int i = 0; i < levels; ++i) {
    const std::string p = "encoder.down." + std::to_string(i);
    for (int j = 0; j < c.layers_per_block; ++j) {
      n.res(p + ".block." + std::to_string(j), in, b[static_cast<size_t>(i)]);
      in = b[static_cast<size_t>(i)];
    }
    if (enc_spatial(c, i)) {
      const int64_t out = b[static_cast<size_t>(i) + 1];
      n.conv(p + ".downsample.conv.conv", out / (enc_temporal(c, i) ? 8 : 4), in, 3);
      in = out;
    }
  }
  n.res("encoder.mid.block_1", in, in);
  n.attn("encoder.mid.attn_1", in);
  n.res("encoder.mid.block_2", in, in);
  n.gamma("encoder.norm_out", in);
  n.conv("encoder.conv_out.conv", 2 * c.latent_channels, in, 3);

  const std::vector<int> r(b.rbegin(), b.rend());
  in = r[0];
  n.conv("decoder.conv_in.conv", in, c.latent_channels, 3);
  n.res("decoder.mid.block_1", in, in);
  n.attn("decoder.mid.attn_1", in);
  n.res("decoder.mid.block_2", in, in);
  for (int i = 0; i < levels; ++i) {
    const std::string p = "decoder.up." + std::to_string(i);
    for (int j = 0; j <= c.layers_per_block; ++j) {
      n.res(p + ".block." + std::to_string(j), in, r[static_cast<size_t>(i)]);
      in = r[static_cast<size_t>(i)];
    }
    if (dec_spatial(c, i) || dec_temporal(c, i)) {
      const int64_t out = r[static_cast<size_t>(i) + 1];
      n.conv(p + ".upsample.conv.conv", out * (dec_temporal(c, i) ? 8 : 4), in, 3);
      in = out;
    }
  }
  n.gamma("decoder.norm_out", in);
  n.conv("decoder.conv_out.conv", c.out_channels, in, 3);
  return n.all;
}

struct HunyuanVae::Impl {
  struct Conv {
    Tensor w, b;
  };
  struct Res {
    Tensor norm1, norm2;
    Conv conv1, conv2, nin;  // nin: when the channels change
  };
  struct Attn {
    Tensor norm;
    Conv q, k, v, proj;
  };
  struct Level {
    std::vector<Res> blocks;
    std::optional<Conv> resample;
    bool temporal = false;
  };

  Backend& be;
  Conv enc_in, enc_out, dec_in, dec_out;
  std::vector<Level> enc, dec;
  Res enc_mid1, enc_mid2, dec_mid1, dec_mid2;
  Attn enc_attn, dec_attn;
  Tensor enc_norm, dec_norm;

  explicit Impl(Backend& backend) : be(backend) {}

  // Activations are channels-last video tensors [T, H, W, C] in the backend's video dtype.
  Tensor empty(const Shape& s) { return be.empty(s, be.video_dtype()); }
  void add(Tensor& x, const Tensor& y) { be.add_scaled(x, y, 1.0f); }

  // A frame range [f0, f0 + count) of x as a tensor of its own.
  Tensor frames(const Tensor& x, int64_t f0, int64_t count) {
    Tensor out = empty({count, x.dim(1), x.dim(2), x.dim(3)});
    be.copy_frames(x, 0, f0, out, 0, 0, x.dim(3), count);
    return out;
  }

  // CausalConv3d: replicate padding (2 frames before, 1 pixel around), then the 3x3x3 conv.
  Tensor causal_conv(const Tensor& x, const Conv& c) {
    Tensor padded = empty({x.dim(0) + 2, x.dim(1) + 2, x.dim(2) + 2, x.dim(3)});
    be.pad_replicate(x, 2, 1, padded);
    Tensor out = empty({x.dim(0), x.dim(1), x.dim(2), c.w.dim(0)});
    be.conv3d(padded, c.w, &c.b, {}, out);
    return out;
  }
  Tensor conv1x1(const Tensor& x, const Conv& c) {
    Tensor out = empty({x.dim(0), x.dim(1), x.dim(2), c.w.dim(0)});
    be.conv3d(x, c.w, &c.b, {}, out);
    return out;
  }
  Tensor norm(const Tensor& x, const Tensor& gamma, bool silu) {
    Tensor out = empty(x.shape());
    be.channel_rms_norm(x, gamma, silu, out);
    return out;
  }

  // ResnetBlock: norm1, SiLU, conv1, norm2, SiLU, conv2, plus the (1x1x1-projected) input.
  Tensor res(const Tensor& x, const Res& r) {
    Tensor h = causal_conv(norm(x, r.norm1, true), r.conv1);
    h = causal_conv(norm(h, r.norm2, true), r.conv2);
    add(h, r.nin.w.defined() ? conv1x1(x, r.nin) : x);
    return h;
  }

  // AttnBlock: x + proj_out(attention(q, k, v of norm(x))), each frame seeing frames <= itself.
  Tensor attn(const Tensor& x, const Attn& a) {
    const Tensor h = norm(x, a.norm, false);
    const Tensor q = conv1x1(h, a.q), k = conv1x1(h, a.k), v = conv1x1(h, a.v);
    Tensor o = empty(x.shape());
    be.causal_video_attention(q, k, v, o);
    Tensor out = conv1x1(o, a.proj);
    add(out, x);
    return out;
  }

  Tensor s2c(const Tensor& x, int rt) {
    Tensor out = empty({x.dim(0) / rt, x.dim(1) / 2, x.dim(2) / 2, 4 * rt * x.dim(3)});
    be.space_to_channels(x, rt, out, false);
    return out;
  }
  Tensor c2s(const Tensor& x, int rt) {
    Tensor out = empty({x.dim(0) * rt, x.dim(1) * 2, x.dim(2) * 2, x.dim(3) / (4 * rt)});
    be.space_to_channels(x, rt, out, true);
    return out;
  }
  Tensor group_mean(const Tensor& x, int64_t channels) {
    Tensor out = empty({x.dim(0), x.dim(1), x.dim(2), channels});
    be.channel_group_mean(x, static_cast<int>(x.dim(3) / channels), out);
    return out;
  }
  Tensor repeat(const Tensor& x, int64_t channels) {
    Tensor out = empty({x.dim(0), x.dim(1), x.dim(2), channels});
    be.channel_repeat(x, static_cast<int>(channels / x.dim(3)), out);
    return out;
  }

  // Downsample to `cout` channels: conv to cout / factor channels, space to channels; shortcut:
  // the input's space-to-channel rearrange averaged in channel groups. With time: frame 0 alone
  // (2x2 only, its channels doubled), the later frames in pairs (2x2x2).
  Tensor downsample(const Tensor& x, const Level& l, int64_t cout) {
    const Tensor h = causal_conv(x, *l.resample);
    if (!l.temporal) {
      Tensor out = s2c(h, 1);
      add(out, group_mean(s2c(x, 1), cout));
      return out;
    }
    const int64_t t = x.dim(0), rest = t - 1, half = cout / 2;
    Tensor out = empty({1 + rest / 2, x.dim(1) / 2, x.dim(2) / 2, cout});
    Tensor shortcut = empty(out.shape());
    const Tensor h0 = s2c(frames(h, 0, 1), 1);
    be.copy_frames(h0, 0, 0, out, 0, 0, half, 1);
    be.copy_frames(h0, 0, 0, out, half, 0, half, 1);
    const Tensor x0 = group_mean(s2c(frames(x, 0, 1), 1), cout);
    be.copy_frames(x0, 0, 0, shortcut, 0, 0, cout, 1);
    if (rest > 0) {
      const Tensor hn = s2c(frames(h, 1, rest), 2);
      be.copy_frames(hn, 0, 0, out, 0, 1, cout, rest / 2);
      const Tensor xn = group_mean(s2c(frames(x, 1, rest), 2), cout);
      be.copy_frames(xn, 0, 0, shortcut, 0, 1, cout, rest / 2);
    }
    add(out, shortcut);
    return out;
  }

  // Upsample to `cout` channels: conv to cout * factor channels, channels to space; shortcut:
  // the input's channels repeated, then the same rearrange. With time: frame 0 alone (2x2, the
  // first half of its channels), the later frames doubled (2x2x2).
  Tensor upsample(const Tensor& x, const Level& l, int64_t cout) {
    const Tensor h = causal_conv(x, *l.resample);
    if (!l.temporal) {
      Tensor out = c2s(h, 1);
      add(out, c2s(repeat(x, 4 * cout), 1));
      return out;
    }
    const int64_t t = x.dim(0), rest = t - 1;
    Tensor out = empty({1 + 2 * rest, x.dim(1) * 2, x.dim(2) * 2, cout});
    Tensor shortcut = empty(out.shape());
    const Tensor h0 = c2s(frames(h, 0, 1), 1);  // [1, ..., 2 cout]: keep the first cout
    be.copy_frames(h0, 0, 0, out, 0, 0, cout, 1);
    const Tensor x0 = c2s(frames(x, 0, 1), 1);
    const Tensor x0r = repeat(x0, cout);
    be.copy_frames(x0r, 0, 0, shortcut, 0, 0, cout, 1);
    if (rest > 0) {
      const Tensor hn = c2s(frames(h, 1, rest), 2);
      be.copy_frames(hn, 0, 0, out, 0, 1, cout, 2 * rest);
      const Tensor xn = repeat(c2s(frames(x, 1, rest), 2), cout);
      be.copy_frames(xn, 0, 0, shortcut, 0, 1, cout, 2 * rest);
    }
    add(out, shortcut);
    return out;
  }
};

HunyuanVae::HunyuanVae(VaeConfig cfg, const VaeWeightFn& weights, Backend& backend)
    : cfg_(std::move(cfg)), impl_(std::make_unique<Impl>(backend)) {
  cfg_.validate("VAE config");
  const auto shapes = vae_parameter_shapes(cfg_);
  const std::map<std::string, Shape> shape_of(shapes.begin(), shapes.end());
  auto load = [&](const std::string& name) {
    return backend.upload(weights(name, shape_of.at(name)), DType::F32);
  };
  // Conv weights channels-last ([Cout, kt, kh, kw, Cin]) in the video dtype.
  auto conv = [&](const std::string& n) {
    const std::string w = n + ".weight";
    return Impl::Conv{conv_weight_channels_last(backend, weights(w, shape_of.at(w))),
                      load(n + ".bias")};
  };
  auto gamma = [&](const std::string& n) {
    return load(n + ".gamma").reshape({shape_of.at(n + ".gamma")[0]});
  };
  auto res = [&](const std::string& n) {
    Impl::Res r{gamma(n + ".norm1"),
                gamma(n + ".norm2"),
                conv(n + ".conv1.conv"),
                conv(n + ".conv2.conv"),
                {}};
    if (shape_of.count(n + ".nin_shortcut.weight")) r.nin = conv(n + ".nin_shortcut");
    return r;
  };
  auto attn = [&](const std::string& n) {
    return Impl::Attn{gamma(n + ".norm"), conv(n + ".q"), conv(n + ".k"), conv(n + ".v"),
                      conv(n + ".proj_out")};
  };
  Impl& m = *impl_;
  const int levels = static_cast<int>(cfg_.block_out_channels.size());
  m.enc_in = conv("encoder.conv_in.conv");
  for (int i = 0; i < levels; ++i) {
    const std::string p = "encoder.down." + std::to_string(i);
    Impl::Level l;
    for (int j = 0; j < cfg_.layers_per_block; ++j)
      l.blocks.push_back(res(p + ".block." + std::to_string(j)));
    if (enc_spatial(cfg_, i)) l.resample = conv(p + ".downsample.conv.conv");
    l.temporal = enc_temporal(cfg_, i);
    m.enc.push_back(std::move(l));
  }
  m.enc_mid1 = res("encoder.mid.block_1");
  m.enc_attn = attn("encoder.mid.attn_1");
  m.enc_mid2 = res("encoder.mid.block_2");
  m.enc_norm = gamma("encoder.norm_out");
  m.enc_out = conv("encoder.conv_out.conv");
  m.dec_in = conv("decoder.conv_in.conv");
  m.dec_mid1 = res("decoder.mid.block_1");
  m.dec_attn = attn("decoder.mid.attn_1");
  m.dec_mid2 = res("decoder.mid.block_2");
  for (int i = 0; i < levels; ++i) {
    const std::string p = "decoder.up." + std::to_string(i);
    Impl::Level l;
    for (int j = 0; j <= cfg_.layers_per_block; ++j)
      l.blocks.push_back(res(p + ".block." + std::to_string(j)));
    if (dec_spatial(cfg_, i) || dec_temporal(cfg_, i)) l.resample = conv(p + ".upsample.conv.conv");
    l.temporal = dec_temporal(cfg_, i);
    m.dec.push_back(std::move(l));
  }
  m.dec_norm = gamma("decoder.norm_out");
  m.dec_out = conv("decoder.conv_out.conv");
}

HunyuanVae::~HunyuanVae() = default;

Tensor HunyuanVae::encode(const Tensor& video, Tensor* moments) {
  const int64_t s = cfg_.ffactor_spatial, st = cfg_.ffactor_temporal;
  if (video.ndim() != 4 || video.dim(0) != cfg_.in_channels)
    throw Error("HunyuanVideo 1.5 VAE encode: the video must be [" +
                std::to_string(cfg_.in_channels) + ", F, H, W], got " + shape_str(video.shape()));
  if ((video.dim(1) - 1) % st || video.dim(2) % s || video.dim(3) % s)
    throw Error("HunyuanVideo 1.5 VAE encode: " + shape_str(video.shape()) + " needs " +
                std::to_string(st) + "k+1 frames and sizes that are multiples of " +
                std::to_string(s));
  Impl& m = *impl_;
  Backend& be = m.be;
  Tensor h = m.causal_conv(be.upload(channels_to_last(video, 0), be.video_dtype()), m.enc_in);
  const auto& b = cfg_.block_out_channels;
  for (size_t i = 0; i < m.enc.size(); ++i) {
    for (const Impl::Res& r : m.enc[i].blocks) h = m.res(h, r);
    if (m.enc[i].resample) h = m.downsample(h, m.enc[i], b[i + 1]);
  }
  h = m.res(h, m.enc_mid1);
  h = m.attn(h, m.enc_attn);
  h = m.res(h, m.enc_mid2);
  // The output conv plus the mean of each group of channels (Encoder.forward).
  Tensor out = m.causal_conv(m.norm(h, m.enc_norm, true), m.enc_out);
  m.add(out, m.group_mean(h, 2 * cfg_.latent_channels));
  const Tensor host = channels_from_last(be.download(out), 0);  // [2 latent, T, h, w]
  if (moments) *moments = host;
  return host.slice_rows(0, cfg_.latent_channels).clone();  // DiagonalGaussianDistribution.mode()
}

namespace {
// Rows [r0, r0 + rows) and columns [c0, c0 + cols) of every (channel, frame) plane of a host
// [C, T, H, W] tensor.
Tensor crop(const Tensor& x, int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  Tensor out = Tensor::zeros({x.dim(0), x.dim(1), rows, cols});
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t i = 0; i < rows; ++i)
      std::copy(x.f32() + (p * h + r0 + i) * w + c0, x.f32() + (p * h + r0 + i) * w + c0 + cols,
                out.f32() + (p * rows + i) * cols);
  return out;
}

// AutoencoderKLConv3D.blend_v in place: b's first `extent` rows become a linear blend of a's last
// rows into b's (a and b [C, T, H, W] host tensors of one width).
void blend_v(const Tensor& a, Tensor& b, int64_t extent) {
  extent = std::min({a.dim(2), b.dim(2), extent});
  const int64_t planes = b.dim(0) * b.dim(1), wa = a.dim(3), ha = a.dim(2), hb = b.dim(2);
  float* pb = b.f32();
  const float* pa = a.f32();
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t y = 0; y < extent; ++y) {
      const float wb = static_cast<float>(static_cast<double>(y) / static_cast<double>(extent));
      const float wa_ = static_cast<float>(1.0 - static_cast<double>(y) / extent);
      for (int64_t x = 0; x < wa; ++x) {
        float& v = pb[(p * hb + y) * wa + x];
        v = pa[(p * ha + ha - extent + y) * wa + x] * wa_ + v * wb;
      }
    }
}

// AutoencoderKLConv3D.blend_h: the same over columns (a and b of one height).
void blend_h(const Tensor& a, Tensor& b, int64_t extent) {
  extent = std::min({a.dim(3), b.dim(3), extent});
  const int64_t planes = b.dim(0) * b.dim(1), rows = b.dim(2), wa = a.dim(3), wb_ = b.dim(3);
  float* pb = b.f32();
  const float* pa = a.f32();
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t y = 0; y < rows; ++y)
      for (int64_t x = 0; x < extent; ++x) {
        const float wb = static_cast<float>(static_cast<double>(x) / static_cast<double>(extent));
        const float wa_ = static_cast<float>(1.0 - static_cast<double>(x) / extent);
        float& v = pb[(p * rows + y) * wb_ + x];
        v = pa[(p * rows + y) * wa + wa - extent + x] * wa_ + v * wb;
      }
}

// The decoded tiles blended in place in the official order (a tile takes the already blended tile
// above and the already blended tile to its left, over `blend` rows / columns), each cropped to
// `limit` rows and columns, joined into one host [C, T, H, W].
Tensor stitch_tiles(std::vector<std::vector<Tensor>>& rows, int64_t blend, int64_t limit) {
  int64_t out_h = 0, out_w = 0;
  for (const Tensor& t : rows.front()) out_w += std::min(limit, t.dim(3));
  for (const auto& row : rows) out_h += std::min(limit, row.front().dim(2));
  const Tensor& first = rows.front().front();
  Tensor out = Tensor::zeros({first.dim(0), first.dim(1), out_h, out_w});
  const int64_t planes = first.dim(0) * first.dim(1);
  int64_t y0 = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    int64_t x0 = 0, rh = 0;
    for (size_t j = 0; j < rows[i].size(); ++j) {
      Tensor& t = rows[i][j];
      if (i > 0) blend_v(rows[i - 1][j], t, blend);
      if (j > 0) blend_h(rows[i][j - 1], t, blend);
      const int64_t th = std::min(limit, t.dim(2)), tw = std::min(limit, t.dim(3));
#pragma omp parallel for schedule(static)
      for (int64_t p = 0; p < planes; ++p)
        for (int64_t y = 0; y < th; ++y)
          std::copy(t.f32() + (p * t.dim(2) + y) * t.dim(3),
                    t.f32() + (p * t.dim(2) + y) * t.dim(3) + tw,
                    out.f32() + (p * out_h + y0 + y) * out_w + x0);
      x0 += tw;
      rh = th;
    }
    y0 += rh;
  }
  return out;
}

}  // namespace

Tensor HunyuanVae::decode(const Tensor& z, const VaeTiling& tiling,
                          const std::function<void(int done, int total)>& tile_done) {
  if (z.ndim() != 4 || z.dim(0) != cfg_.latent_channels)
    throw Error("HunyuanVideo 1.5 VAE decode: the latent must be [" +
                std::to_string(cfg_.latent_channels) + ", T, h, w], got " + shape_str(z.shape()));
  const int64_t s = cfg_.ffactor_spatial;
  const int64_t tile = tiling.sample_size / s;  // latent cells per tile
  const int64_t h = z.dim(2), w = z.dim(3);
  if (!tiling.enabled || (h <= tile && w <= tile)) {
    Tensor video = decode_whole(z);
    if (tile_done) tile_done(1, 1);
    return video;
  }
  if (tiling.sample_size % s || tile < 1 || !(tiling.overlap >= 0 && tiling.overlap < 1))
    throw Error("HunyuanVideo 1.5 VAE decode: bad tiling (sample size " +
                std::to_string(tiling.sample_size) + ", overlap " + std::to_string(tiling.overlap) +
                ")");
  const int64_t step = static_cast<int64_t>(static_cast<double>(tile) * (1 - tiling.overlap));
  const int64_t blend = static_cast<int64_t>(tiling.sample_size * tiling.overlap);
  const int64_t limit = tiling.sample_size - blend;
  if (step < 1) throw Error("HunyuanVideo 1.5 VAE decode: the tiles do not advance");
  const Tensor zh = z.to_f32();
  std::vector<std::vector<Tensor>> rows;
  const int total = static_cast<int>(((h + step - 1) / step) * ((w + step - 1) / step));
  int done = 0;
  for (int64_t i = 0; i < h; i += step) {
    std::vector<Tensor> row;
    for (int64_t j = 0; j < w; j += step) {
      row.push_back(decode_whole(crop(zh, i, std::min(tile, h - i), j, std::min(tile, w - j))));
      if (tile_done) tile_done(++done, total);
    }
    rows.push_back(std::move(row));
  }
  return stitch_tiles(rows, blend, limit);
}

Tensor HunyuanVae::decode_whole(const Tensor& z) {
  Impl& m = *impl_;
  Backend& be = m.be;
  const Tensor zd = be.upload(channels_to_last(z, 0), be.video_dtype());
  Tensor h = m.causal_conv(zd, m.dec_in);
  m.add(h, m.repeat(zd, h.dim(3)));
  h = m.res(h, m.dec_mid1);
  h = m.attn(h, m.dec_attn);
  h = m.res(h, m.dec_mid2);
  const std::vector<int> r(cfg_.block_out_channels.rbegin(), cfg_.block_out_channels.rend());
  for (size_t i = 0; i < m.dec.size(); ++i) {
    for (const Impl::Res& rb : m.dec[i].blocks) h = m.res(h, rb);
    if (m.dec[i].resample) h = m.upsample(h, m.dec[i], r[i + 1]);
  }
  return channels_from_last(be.download(m.causal_conv(m.norm(h, m.dec_norm, true), m.dec_out)), 0);
}

std::string vae_diffusers_name(const std::string& official) {
  // The conversion script's renames (convert_hunyuan_video_15_vae_checkpoint_to_diffusers).
  static const std::vector<std::pair<std::string, std::string>> parts = {
      {".mid.block_1.", ".mid_block.resnets.0."},
      {".mid.block_2.", ".mid_block.resnets.1."},
      {".mid.attn_1.q.", ".mid_block.attentions.0.to_q."},
      {".mid.attn_1.k.", ".mid_block.attentions.0.to_k."},
      {".mid.attn_1.v.", ".mid_block.attentions.0.to_v."},
      {".mid.attn_1.", ".mid_block.attentions.0."},
      {".downsample.", ".downsamplers.0."},
      {".upsample.", ".upsamplers.0."},
  };
  std::string n = official;
  for (const auto& [from, to] : parts)
    if (const size_t at = n.find(from); at != std::string::npos) n.replace(at, from.size(), to);
  // encoder.down.<i>.block.<j> / decoder.up.<i>.block.<j>
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"encoder.down.", "encoder.down_blocks."}, {"decoder.up.", "decoder.up_blocks."}})
    if (n.rfind(from, 0) == 0) {
      n = to + n.substr(from.size());
      if (const size_t at = n.find(".block."); at != std::string::npos)
        n.replace(at, 7, ".resnets.");
    }
  return n;
}

namespace {
constexpr const char* kVaeMarker = "encoder.conv_in.conv.weight";
struct VaeLayout {
  std::string prefix;
  bool diffusers = false;
};
std::optional<VaeLayout> find_vae_layout(const Checkpoint& ckpt) {
  const std::optional<std::string> p = shortest_prefix(ckpt.names(), kVaeMarker);
  if (!p) return std::nullopt;
  if (ckpt.contains(*p + "encoder.down.0.block.0.norm1.gamma")) return VaeLayout{*p, false};
  if (ckpt.contains(*p + "encoder.down_blocks.0.resnets.0.norm1.gamma")) return VaeLayout{*p, true};
  return std::nullopt;
}
}  // namespace

bool is_hunyuan_vae(const std::string& path) {
  try {
    return find_vae_layout(Checkpoint::open(path)).has_value();
  } catch (const Error&) {
    return false;
  }
}

VaeSource open_vae(const std::string& path) {
  auto ckpt = std::make_shared<Checkpoint>(Checkpoint::open(path));
  const std::optional<VaeLayout> layout = find_vae_layout(*ckpt);
  if (!layout)
    throw Error(path + ": not a HunyuanVideo 1.5 VAE (no '" + std::string(kVaeMarker) +
                "' with encoder.down.0.block.0.norm1.gamma or diffusers' down_blocks names)");
  VaeSource src;
  src.path = path;
  src.prefix = layout->prefix;
  src.diffusers = layout->diffusers;
  auto stored = [src](const std::string& official) {
    return src.prefix + (src.diffusers ? vae_diffusers_name(official) : official);
  };
  std::optional<nlohmann::json> j = ckpt->config_json();
  if (j) {
    src.config_origin = ckpt->config_path().value_or("config.json");
  } else if (const std::optional<nlohmann::json> meta = metadata_config(*ckpt)) {
    j = meta->at("constructor");
    src.config_origin = "file metadata";
  }
  if (j) {
    nlohmann::json c = *j;  // diffusers spells the factors as compression ratios
    if (c.contains("spatial_compression_ratio"))
      c["ffactor_spatial"] = c["spatial_compression_ratio"];
    if (c.contains("temporal_compression_ratio"))
      c["ffactor_temporal"] = c["temporal_compression_ratio"];
    src.config = vae_config_from_json(c, src.config_origin);
  } else {
    src.config_origin = "tensor shapes";
    VaeConfig c;
    // The widths: each encoder level's first res block conv, the latent from conv_out.
    c.block_out_channels.clear();
    for (int i = 0;; ++i) {
      const TensorInfo* t =
          ckpt->find(stored("encoder.down." + std::to_string(i) + ".block.0.conv1.conv.weight"));
      if (!t) break;
      c.block_out_channels.push_back(static_cast<int>(t->shape[0]));
    }
    if (const TensorInfo* t = ckpt->find(stored("encoder.conv_out.conv.weight")))
      c.latent_channels = static_cast<int>(t->shape[0] / 2);
    c.validate(path + " (" + src.config_origin + ")");
    src.config = c;
  }
  src.weights = [ckpt, stored, path](const std::string& name, const Shape& shape) -> Tensor {
    const std::string s = stored(name);
    const TensorInfo* info = ckpt->find(s);
    if (!info) throw Error(path + ": VAE tensor '" + s + "' is missing");
    if (info->shape != shape)
      throw Error(path + ": VAE tensor '" + s + "' has shape " + shape_str(info->shape) +
                  ", expected " + shape_str(shape));
    return ckpt->tensor_f32(s);
  };
  src.checkpoint = ckpt;
  return src;
}

}  // namespace fisdit::hunyuan15
