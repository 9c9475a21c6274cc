// The Wan VAE's modules and its streaming encode / decode (vae.h says what they keep from
// vae2_1.py / vae2_2.py): causal convs with their frame caches, res / attention / resample blocks,
// the Wan 2.2 stage shortcuts, and the chunk loops. Checkpoints are found and named elsewhere:
// vae_loader.cpp (open_vae, load_vae) and vae_names.cpp (diffusers' names and config).
#include "models/wan/vae.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <variant>

#include "backend/backend.h"
#include "core/layout.h"
#include "fisdit/error.h"

namespace fisdit::wan {

namespace {

// Copies the host chunk part [t, H, W, C] (any float dtype) into frames [t0, t0 + t) of the host
// F32 video out [C, T, H, W].
void put_frames(const Tensor& part, Tensor& out, int64_t t0) {
  const int64_t c = out.dim(0), total = out.dim(1);
  if (part.ndim() != 4 || part.dim(3) != c || t0 + part.dim(0) > total ||
      part.dim(1) != out.dim(2) || part.dim(2) != out.dim(3))
    throw Error("vae: internal error: chunk " + shape_str(part.shape()) + " does not fit " +
                shape_str(out.shape()) + " at frame " + std::to_string(t0));
  const Tensor cf = channels_from_last(part, 0);  // [C, t, H, W]
  const int64_t frame = out.dim(2) * out.dim(3), n = part.dim(0) * frame;
#pragma omp parallel for schedule(static) if (c * n > (int64_t{1} << 22))
  for (int64_t ch = 0; ch < c; ++ch)
    std::memcpy(out.f32() + (ch * total + t0) * frame, cf.f32() + ch * n,
                static_cast<size_t>(n) * sizeof(float));
}

// Joins host chunks [Ti, ...] along time (dim 0), as F32.
Tensor join_frames(const std::vector<Tensor>& parts) {
  if (parts.empty()) throw Error("vae: nothing to join");
  Shape s = parts[0].shape();
  s[0] = 0;
  for (const Tensor& p : parts) s[0] += p.dim(0);
  Tensor out = Tensor::zeros(s);
  size_t at = 0;
  for (const Tensor& p : parts) {
    const Tensor f = p.to_f32();
    std::memcpy(out.f32() + at, f.f32(), f.nbytes());
    at += static_cast<size_t>(f.numel());
  }
  return out;
}

// Every module runs its ops on one backend, on channels-last video tensors [T, H, W, C] of the
// backend's video dtype that live there.
Tensor make(Backend& be, const Shape& s) { return be.empty(s, be.video_dtype()); }

Tensor conv(Backend& be, const Tensor& x, const Tensor& w, const Tensor& b, const Conv3dParams& p) {
  Tensor out = make(be, conv3d_output_shape(x.shape(), w.shape(), p));
  be.conv3d(x, w, &b, p, out);
  return out;
}

Tensor norm(Backend& be, const Tensor& x, const Tensor& gamma, bool silu) {
  Tensor out = make(be, x.shape());
  be.channel_rms_norm(x, gamma, silu, out);
  return out;
}

void add_inplace(Backend& be, Tensor& x, const Tensor& y) { be.add_scaled(x, y, 1.0f); }

Tensor concat_frames(Backend& be, const Tensor& a, const Tensor& b) {
  Shape s = a.shape();
  s[0] = a.dim(0) + b.dim(0);
  Tensor out = make(be, s);
  be.copy_frames(a, 0, 0, out, 0, 0, a.dim(3), a.dim(0));
  be.copy_frames(b, 0, 0, out, 0, a.dim(0), b.dim(3), b.dim(0));
  return out;
}

Tensor slice_frames(Backend& be, const Tensor& x, int64_t begin, int64_t end) {
  Shape s = x.shape();
  s[0] = end - begin;
  Tensor out = make(be, s);
  be.copy_frames(x, 0, begin, out, 0, 0, x.dim(3), end - begin);
  return out;
}

// Loads weights by official key, checks shapes and puts them on the backend: conv weights
// channels-last ([Cout, kt, kh, kw, Cin]; a Conv2d's as [Cout, 1, kh, kw, Cin]) in the backend's
// video dtype, biases and norm gammas as F32 vectors.
class Loader {
 public:
  Loader(const VaeWeightFn& fn, Backend& be) : fn_(fn), be_(be) {}
  Backend& backend() const { return be_; }
  Tensor host(const std::string& key, const Shape& shape) const {
    Tensor t = fn_(key, shape);
    if (t.shape() != shape)
      throw Error("vae weight '" + key + "' has shape " + shape_str(t.shape()) + ", expected " +
                  shape_str(shape));
    return t;
  }
  Tensor host_f32(const std::string& key, const Shape& shape) const {
    const Tensor t = host(key, shape);
    return (t.device() == Device::CPU ? t : be_.download(t)).to_f32();
  }
  // A bias or gamma: its values as an F32 vector.
  Tensor get(const std::string& key, const Shape& shape) const {
    const Tensor t = host(key, shape);
    return be_.upload(t.reshape({t.numel()}), DType::F32);
  }
  // A Conv3d weight [Cout, Cin, kt, kh, kw], channels-last on the backend.
  Tensor conv(const std::string& key, const Shape& shape) const {
    return put_conv(host(key, shape));
  }
  Tensor conv2d(const std::string& key, int64_t out, int64_t in, int64_t k) const {
    return put_conv(host(key, {out, in, k, k}).reshape({out, in, 1, k, k}));
  }
  Tensor put_conv(const Tensor& w) const { return conv_weight_channels_last(be_, w); }

 private:
  const VaeWeightFn& fn_;
  Backend& be_;
};

// CausalConv3d: time padded at the front only (2 * padding[0] frames), space symmetrically.
// `history` holds the last pad_t frames of the padded input of the previous call (zeros before
// the first), which is what the official feat_cache amounts to, so successive calls on chunks
// equal one causal conv over the concatenated sequence.
//
// The padded input is one buffer, the history in its first pad_t frames and the chunk after them
// (frames are the outermost dim, so the chunk's part is a view): an op that makes the chunk can
// write it there directly (norm_conv) instead of the chunk being copied behind the history.
struct CausalConv {
  Backend* be = nullptr;
  Tensor w, b;
  int pad_t = 0, pad_s = 0;
  Tensor history;

  CausalConv() = default;
  CausalConv(const Loader& ld, const std::string& key, int64_t in, int64_t out, int kt, int ks,
             int pad_time, int pad_space)
      : be(&ld.backend()), pad_t(2 * pad_time), pad_s(pad_space) {
    w = ld.conv(key + ".weight", {out, in, kt, ks, ks});
    b = ld.get(key + ".bias", {out});
  }
  void reset() { history = Tensor(); }
  // The padded input of a chunk of `shape` [t, h, w, c]: the history in front, the chunk's
  // frames (chunk_of) still to be written.
  Tensor input_buffer(const Shape& shape) const {
    Tensor buf = make(*be, {pad_t + shape[0], shape[1], shape[2], shape[3]});
    if (pad_t == 0) return buf;
    if (history.defined())
      be->copy_frames(history, 0, 0, buf, 0, 0, shape[3], pad_t);
    else
      be->fill_zero(buf);  // before the first chunk: zeros (the chunk is written over)
    return buf;
  }
  Tensor chunk_of(const Tensor& buf) const { return buf.slice_rows(pad_t, buf.dim(0)); }
  // The conv of a filled input_buffer; keeps its last pad_t frames as the next history.
  Tensor run(const Tensor& buf) {
    Conv3dParams p;
    p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = pad_s;
    if (pad_t > 0) history = slice_frames(*be, buf, buf.dim(0) - pad_t, buf.dim(0));
    return conv(*be, buf, w, b, p);
  }
  Tensor operator()(const Tensor& x) {
    if (pad_t == 0) return run(x);
    Tensor buf = input_buffer(x.shape());
    be->copy_frames(x, 0, 0, buf, 0, pad_t, x.dim(3), x.dim(0));
    return run(buf);
  }
};

// conv(norm(x)) with the norm (+ SiLU) written straight into the conv's padded input.
Tensor norm_conv(Backend& be, const Tensor& x, const Tensor& gamma, CausalConv& c) {
  Tensor buf = c.input_buffer(x.shape());
  Tensor chunk = c.chunk_of(buf);
  be.channel_rms_norm(x, gamma, true, chunk);
  return c.run(buf);
}

struct ResidualBlock {
  Backend* be;
  Tensor gamma1, gamma2;
  CausalConv conv1, conv2, shortcut;
  bool has_shortcut = false;

  ResidualBlock(const Loader& ld, const std::string& k, int64_t in, int64_t out)
      : be(&ld.backend()),
        gamma1(ld.get(k + ".residual.0.gamma", {in, 1, 1, 1})),
        gamma2(ld.get(k + ".residual.3.gamma", {out, 1, 1, 1})),
        conv1(ld, k + ".residual.2", in, out, 3, 3, 1, 1),
        conv2(ld, k + ".residual.6", out, out, 3, 3, 1, 1),
        has_shortcut(in != out) {
    if (has_shortcut) shortcut = CausalConv(ld, k + ".shortcut", in, out, 1, 1, 0, 0);
  }
  void reset() {
    conv1.reset();
    conv2.reset();
  }
  Tensor operator()(const Tensor& x) {
    Tensor y = norm_conv(*be, norm_conv(*be, x, gamma1, conv1), gamma2, conv2);
    add_inplace(*be, y, has_shortcut ? shortcut(x) : x);
    return y;
  }
};

struct AttentionBlock {
  Backend* be;
  Tensor gamma, proj_w, proj_b;
  Tensor qkv_w[3], qkv_b[3];  // to_qkv's rows for q, k and v: channels-last, one conv each

  AttentionBlock(const Loader& ld, const std::string& k, int64_t c)
      : be(&ld.backend()),
        gamma(ld.get(k + ".norm.gamma", {c, 1, 1})),
        proj_w(ld.conv2d(k + ".proj.weight", c, c, 1)),
        proj_b(ld.get(k + ".proj.bias", {c})) {
    const Tensor w = ld.host_f32(k + ".to_qkv.weight", {3 * c, c, 1, 1});
    const Tensor b = ld.host_f32(k + ".to_qkv.bias", {3 * c});
    for (int64_t i = 0; i < 3; ++i) {
      qkv_w[i] = ld.put_conv(w.slice_rows(i * c, (i + 1) * c).reshape({c, c, 1, 1, 1}));
      qkv_b[i] = be->upload(b.slice_rows(i * c, (i + 1) * c), DType::F32);
    }
  }
  void reset() {}
  Tensor operator()(const Tensor& x) {
    const Tensor h = norm(*be, x, gamma, false);
    const Tensor q = conv(*be, h, qkv_w[0], qkv_b[0], {});
    const Tensor k = conv(*be, h, qkv_w[1], qkv_b[1], {});
    const Tensor v = conv(*be, h, qkv_w[2], qkv_b[2], {});
    Tensor o = make(*be, x.shape());
    be->frame_attention(q, k, v, o);
    Tensor y = conv(*be, o, proj_w, proj_b, {});
    add_inplace(*be, y, x);
    return y;
  }
};

enum class ResampleMode { Upsample2d, Upsample3d, Downsample2d, Downsample3d };

struct Resample {
  Backend* be;
  ResampleMode mode;
  Tensor w, b;           // the spatial Conv2d as [Cout, C, 1, 3, 3]
  CausalConv time_conv;  // upsample3d: causal, C -> 2C; downsample3d: stride 2, no padding
  bool seen_first = false;
  Tensor last_frame;  // downsample3d: last frame of the previous chunk

  // Wan 2.1 upsampling convs halve the width (dim -> dim / 2); Wan 2.2 keeps it.
  Resample(const Loader& ld, const std::string& k, int64_t c, ResampleMode m, bool halve_up)
      : be(&ld.backend()), mode(m) {
    const bool up = m == ResampleMode::Upsample2d || m == ResampleMode::Upsample3d;
    const int64_t out = up && halve_up ? c / 2 : c;
    w = ld.conv2d(k + ".resample.1.weight", out, c, 3);
    b = ld.get(k + ".resample.1.bias", {out});
    if (m == ResampleMode::Upsample3d)
      time_conv = CausalConv(ld, k + ".time_conv", c, 2 * c, 3, 1, 1, 0);
    if (m == ResampleMode::Downsample3d)
      time_conv = CausalConv(ld, k + ".time_conv", c, c, 3, 1, 0, 0);
  }
  void reset() {
    time_conv.reset();
    seen_first = false;
    last_frame = Tensor();
  }
  Tensor operator()(const Tensor& in) {
    Tensor x = in;
    if (mode == ResampleMode::Upsample3d) {
      if (!seen_first) {
        seen_first = true;  // latent frame 0: no time conv, not doubled
      } else {
        const Tensor y = time_conv(x);  // [t, h, w, 2C]; halves interleaved in time
        const int64_t c = x.dim(3), t = x.dim(0);
        x = make(*be, {2 * t, x.dim(1), x.dim(2), c});
        for (int64_t half = 0; half < 2; ++half)
          for (int64_t f = 0; f < t; ++f) be->copy_frames(y, half * c, f, x, 0, 2 * f + half, c, 1);
      }
    }
    Conv3dParams p;
    if (mode == ResampleMode::Upsample2d || mode == ResampleMode::Upsample3d) {
      Tensor up = make(*be, {x.dim(0), 2 * x.dim(1), 2 * x.dim(2), x.dim(3)});
      be->upsample_nearest2x(x, up);
      p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = 1;
      return conv(*be, up, w, b, p);
    }
    // nn.ZeroPad2d((0, 1, 0, 1)) then a stride-2 3x3 conv.
    p.pad_bottom = p.pad_right = 1;
    p.stride_h = p.stride_w = 2;
    x = conv(*be, x, w, b, p);
    if (mode == ResampleMode::Downsample3d) {
      const Tensor last = slice_frames(*be, x, x.dim(0) - 1, x.dim(0));
      if (last_frame.defined()) {
        Conv3dParams pt;
        pt.stride_t = 2;
        x = conv(*be, concat_frames(*be, last_frame, x), time_conv.w, time_conv.b, pt);
      }
      last_frame = last;
    }
    return x;
  }
};

// Wan 2.2 AvgDown3D of a chunk (Backend::avg_down3d).
Tensor avg_down(Backend& be, const Tensor& x, int64_t out_c, int ft, int fs) {
  const int64_t t = x.dim(0), pad = (ft - t % ft) % ft;
  if (x.dim(1) % fs || x.dim(2) % fs || x.dim(3) * ft * fs * fs % out_c)
    throw Error("vae AvgDown3D: cannot reduce " + shape_str(x.shape()) + " to " +
                std::to_string(out_c) + " channels");
  Tensor out = make(be, {(t + pad) / ft, x.dim(1) / fs, x.dim(2) / fs, out_c});
  be.avg_down3d(x, ft, fs, out);
  return out;
}

// Wan 2.2 DupUp3D (Backend::dup_up3d); the first chunk drops its first factor_t - 1 frames (as
// upsample3d does not double latent frame 0).
Tensor dup_up(Backend& be, const Tensor& x, int64_t out_c, int ft, int fs, bool first_chunk) {
  if (out_c * ft * fs * fs % x.dim(3)) throw Error("vae DupUp3D: bad channel counts");
  const int skip = first_chunk ? ft - 1 : 0;
  Tensor out = make(be, {x.dim(0) * ft - skip, x.dim(1) * fs, x.dim(2) * fs, out_c});
  be.dup_up3d(x, ft, fs, skip, out);
  return out;
}

// Wan 2.2 Down_ResidualBlock: res blocks (+ resample), plus AvgDown3D of the block input.
struct DownBlock {
  Backend* be;
  std::vector<ResidualBlock> blocks;
  std::vector<Resample> resample;  // zero or one
  int64_t out_c;
  int ft, fs;

  DownBlock(const Loader& ld, const std::string& k, int64_t in, int64_t out, int mult,
            bool temporal, bool down)
      : be(&ld.backend()), out_c(out), ft(temporal ? 2 : 1), fs(down ? 2 : 1) {
    for (int j = 0; j < mult; ++j)
      blocks.emplace_back(ld, k + ".downsamples." + std::to_string(j), j == 0 ? in : out, out);
    if (down)
      resample.emplace_back(ld, k + ".downsamples." + std::to_string(mult), out,
                            temporal ? ResampleMode::Downsample3d : ResampleMode::Downsample2d,
                            false);
  }
  void reset() {
    for (auto& b : blocks) b.reset();
    for (auto& r : resample) r.reset();
  }
  Tensor operator()(const Tensor& x) {
    Tensor y = x;
    for (auto& b : blocks) y = b(y);
    for (auto& r : resample) y = r(y);
    add_inplace(*be, y, avg_down(*be, x, out_c, ft, fs));
    return y;
  }
};

// Wan 2.2 Up_ResidualBlock: res blocks (+ resample), plus DupUp3D of the block input when it
// upsamples (the last stage has no shortcut at all).
struct UpBlock {
  Backend* be;
  std::vector<ResidualBlock> blocks;
  std::vector<Resample> resample;  // zero or one
  int64_t out_c;
  int ft, fs;
  bool first_chunk = true;

  UpBlock(const Loader& ld, const std::string& k, int64_t in, int64_t out, int mult, bool temporal,
          bool up)
      : be(&ld.backend()), out_c(out), ft(temporal ? 2 : 1), fs(up ? 2 : 1) {
    for (int j = 0; j < mult; ++j)
      blocks.emplace_back(ld, k + ".upsamples." + std::to_string(j), j == 0 ? in : out, out);
    if (up)
      resample.emplace_back(ld, k + ".upsamples." + std::to_string(mult), out,
                            temporal ? ResampleMode::Upsample3d : ResampleMode::Upsample2d, false);
  }
  void reset() {
    for (auto& b : blocks) b.reset();
    for (auto& r : resample) r.reset();
    first_chunk = true;
  }
  Tensor operator()(const Tensor& x) {
    Tensor y = x;
    for (auto& b : blocks) y = b(y);
    for (auto& r : resample) y = r(y);
    if (!resample.empty()) add_inplace(*be, y, dup_up(*be, x, out_c, ft, fs, first_chunk));
    first_chunk = false;
    return y;
  }
};

using Layer = std::variant<ResidualBlock, AttentionBlock, Resample, DownBlock, UpBlock>;

Tensor run_layers(std::vector<Layer>& layers, Tensor x) {
  for (Layer& l : layers) x = std::visit([&](auto& m) { return m(x); }, l);
  return x;
}
void reset_layers(std::vector<Layer>& layers) {
  for (Layer& l : layers) std::visit([](auto& m) { m.reset(); }, l);
}

// Encoder3d / Decoder3d: conv1, [downsamples], middle, head (RMS_norm, SiLU, CausalConv3d).
struct Coder {
  Backend* be = nullptr;
  CausalConv conv_in;
  std::vector<Layer> stages, middle;
  Tensor head_gamma;
  CausalConv conv_out;

  void reset() {
    conv_in.reset();
    reset_layers(stages);
    reset_layers(middle);
    conv_out.reset();
  }
  Tensor operator()(const Tensor& x, bool decoder) {
    Tensor h = conv_in(x);
    if (decoder) {
      h = run_layers(middle, h);
      h = run_layers(stages, h);
    } else {
      h = run_layers(stages, h);
      h = run_layers(middle, h);
    }
    return norm_conv(*be, h, head_gamma, conv_out);
  }
};

void build_middle(const Loader& ld, const std::string& k, int64_t c, std::vector<Layer>& out) {
  out.emplace_back(std::in_place_type<ResidualBlock>, ld, k + ".middle.0", c, c);
  out.emplace_back(std::in_place_type<AttentionBlock>, ld, k + ".middle.1", c);
  out.emplace_back(std::in_place_type<ResidualBlock>, ld, k + ".middle.2", c, c);
}

bool has_scale(const std::vector<double>& scales, double s) {
  return std::find(scales.begin(), scales.end(), s) != scales.end();
}
}  // namespace

struct WanVae::Impl {
  std::unique_ptr<Backend> owned;  // the CPU backend when none was given
  Backend* be = nullptr;
  Coder encoder, decoder;
  CausalConv conv1, conv2;  // 1x1x1: mu/log_var, and the latent before the decoder
};

void VaeConfig::validate(const std::string& where) const {
  auto fail = [&](const std::string& what) { throw Error(where + ": " + what); };
  if (version != 21 && version != 22) fail("version must be 21 or 22");
  if (dim <= 0 || z_dim <= 0 || dec_dim < 0) fail("dim, dec_dim and z_dim must be positive");
  if (dim_mult.size() < 2) fail("dim_mult needs at least 2 entries");
  for (int m : dim_mult)
    if (m <= 0) fail("dim_mult entries must be positive");
  if (num_res_blocks < 1) fail("num_res_blocks must be at least 1");
  if (temperal_downsample.size() != dim_mult.size() - 1)
    fail("temperal_downsample needs " + std::to_string(dim_mult.size() - 1) + " entries");
  // Decoder3d halves the input width of stages 1..3 after each upsample (hard-coded upstream).
  if (dim_mult.size() != 4) fail("only the 4-stage layout of the released VAEs is supported");
}

int64_t VaeConfig::temporal_stride() const {
  int64_t s = 1;
  for (bool t : temperal_downsample) s *= t ? 2 : 1;
  return s;
}

LatentStats wan21_latent_stats() {
  // wan/modules/vae2_1.py, Wan2_1_VAE.__init__
  return {{-0.7571f, -0.7089f, -0.9113f, 0.1075f, -0.1745f, 0.9653f, -0.1517f, 1.5508f, 0.4134f,
           -0.0715f, 0.5517f, -0.3632f, -0.1922f, -0.9497f, 0.2503f, -0.2921f},
          {2.8184f, 1.4541f, 2.3275f, 2.6558f, 1.2196f, 1.7708f, 2.6052f, 2.0743f, 3.2687f, 2.1526f,
           2.8652f, 1.5579f, 1.6382f, 1.1253f, 2.8251f, 1.9160f}};
}

LatentStats wan22_latent_stats() {
  // wan/modules/vae2_2.py, Wan2_2_VAE.__init__
  return {{-0.2289f, -0.0052f, -0.1323f, -0.2339f, -0.2799f, 0.0174f,  0.1838f,  0.1557f,
           -0.1382f, 0.0542f,  0.2813f,  0.0891f,  0.1570f,  -0.0098f, 0.0375f,  -0.1825f,
           -0.2246f, -0.1207f, -0.0698f, 0.5109f,  0.2665f,  -0.2108f, -0.2158f, 0.2502f,
           -0.2055f, -0.0322f, 0.1109f,  0.1567f,  -0.0729f, 0.0899f,  -0.2799f, -0.1230f,
           -0.0313f, -0.1649f, 0.0117f,  0.0723f,  -0.2839f, -0.2083f, -0.0520f, 0.3748f,
           0.0152f,  0.1957f,  0.1433f,  -0.2944f, 0.3573f,  -0.0548f, -0.1681f, -0.0667f},
          {0.4765f, 1.0364f, 0.4514f, 1.1677f, 0.5313f, 0.4990f, 0.4818f, 0.5013f, 0.8158f, 1.0344f,
           0.5894f, 1.0901f, 0.6885f, 0.6165f, 0.8454f, 0.4978f, 0.5759f, 0.3523f, 0.7135f, 0.6804f,
           0.5833f, 1.4146f, 0.8986f, 0.5659f, 0.7069f, 0.5338f, 0.4889f, 0.4917f, 0.4069f, 0.4999f,
           0.6866f, 0.4093f, 0.5709f, 0.6065f, 0.6415f, 0.4944f, 0.5726f, 1.2042f, 0.5458f, 1.6887f,
           0.3971f, 1.0600f, 0.3943f, 0.5537f, 0.5444f, 0.4089f, 0.7468f, 0.7744f}};
}

namespace {
void check_stats(const Tensor& x, const LatentStats& s, const char* op) {
  if (x.ndim() != 4 || s.mean.size() != static_cast<size_t>(x.dim(0)) ||
      s.std.size() != s.mean.size())
    throw Error(std::string(op) + ": latent " + shape_str(x.shape()) + " does not match " +
                std::to_string(s.mean.size()) + " mean / " + std::to_string(s.std.size()) +
                " std values");
}
}  // namespace

void normalize_latent(Tensor& mu, const LatentStats& s) {
  check_stats(mu, s, "normalize_latent");
  const int64_t n = mu.numel() / mu.dim(0);
  for (int64_t c = 0; c < mu.dim(0); ++c) {
    const float mean = s.mean[c], inv_std = 1.0f / s.std[c];  // scale[1] = 1/std in float32
    float* p = mu.f32() + c * n;
    for (int64_t i = 0; i < n; ++i) p[i] = (p[i] - mean) * inv_std;
  }
}

void denormalize_latent(Tensor& z, const LatentStats& s) {
  check_stats(z, s, "denormalize_latent");
  const int64_t n = z.numel() / z.dim(0);
  for (int64_t c = 0; c < z.dim(0); ++c) {
    const float mean = s.mean[c], inv_std = 1.0f / s.std[c];
    float* p = z.f32() + c * n;
    for (int64_t i = 0; i < n; ++i) p[i] = p[i] / inv_std + mean;
  }
}

namespace {
// Encoder3d / Decoder3d of vae2_1.py.
void build_wan21(const VaeConfig& cfg, const Loader& ld, WanVae::Impl& impl) {
  const int64_t dim = cfg.dim, z = cfg.z_dim;
  const size_t stages = cfg.dim_mult.size();

  // Encoder3d
  Coder& enc = impl.encoder;
  enc.be = impl.decoder.be = &ld.backend();
  std::vector<int64_t> dims = {dim};
  for (int m : cfg.dim_mult) dims.push_back(dim * m);
  enc.conv_in = CausalConv(ld, "encoder.conv1", 3, dims[0], 3, 3, 1, 1);
  double scale = 1.0;
  int idx = 0;
  int64_t out_dim = dims[0];
  for (size_t i = 0; i < stages; ++i) {
    int64_t in_dim = dims[i];
    out_dim = dims[i + 1];
    for (int r = 0; r < cfg.num_res_blocks; ++r) {
      enc.stages.emplace_back(std::in_place_type<ResidualBlock>, ld,
                              "encoder.downsamples." + std::to_string(idx++), in_dim, out_dim);
      if (has_scale(cfg.attn_scales, scale))
        enc.stages.emplace_back(std::in_place_type<AttentionBlock>, ld,
                                "encoder.downsamples." + std::to_string(idx++), out_dim);
      in_dim = out_dim;
    }
    if (i != stages - 1) {
      enc.stages.emplace_back(
          std::in_place_type<Resample>, ld, "encoder.downsamples." + std::to_string(idx++), out_dim,
          cfg.temperal_downsample[i] ? ResampleMode::Downsample3d : ResampleMode::Downsample2d,
          true);
      scale /= 2.0;
    }
  }
  build_middle(ld, "encoder", out_dim, enc.middle);
  enc.head_gamma = ld.get("encoder.head.0.gamma", {out_dim, 1, 1, 1});
  enc.conv_out = CausalConv(ld, "encoder.head.2", out_dim, 2 * z, 3, 3, 1, 1);

  impl.conv1 = CausalConv(ld, "conv1", 2 * z, 2 * z, 1, 1, 0, 0);
  impl.conv2 = CausalConv(ld, "conv2", z, z, 1, 1, 0, 0);

  // Decoder3d (temperal_upsample = temperal_downsample reversed)
  Coder& dec = impl.decoder;
  std::vector<int64_t> ddims = {dim * cfg.dim_mult.back()};
  for (size_t i = stages; i-- > 0;) ddims.push_back(dim * cfg.dim_mult[i]);
  dec.conv_in = CausalConv(ld, "decoder.conv1", z, ddims[0], 3, 3, 1, 1);
  build_middle(ld, "decoder", ddims[0], dec.middle);
  scale = 1.0 / static_cast<double>(1 << (stages - 2));
  idx = 0;
  for (size_t i = 0; i < stages; ++i) {
    int64_t in_dim = ddims[i];
    out_dim = ddims[i + 1];
    if (i == 1 || i == 2 || i == 3) in_dim /= 2;  // the previous upsample halved the width
    for (int r = 0; r < cfg.num_res_blocks + 1; ++r) {
      dec.stages.emplace_back(std::in_place_type<ResidualBlock>, ld,
                              "decoder.upsamples." + std::to_string(idx++), in_dim, out_dim);
      if (has_scale(cfg.attn_scales, scale))
        dec.stages.emplace_back(std::in_place_type<AttentionBlock>, ld,
                                "decoder.upsamples." + std::to_string(idx++), out_dim);
      in_dim = out_dim;
    }
    if (i != stages - 1) {
      const bool temporal = cfg.temperal_downsample[stages - 2 - i];
      dec.stages.emplace_back(std::in_place_type<Resample>, ld,
                              "decoder.upsamples." + std::to_string(idx++), out_dim,
                              temporal ? ResampleMode::Upsample3d : ResampleMode::Upsample2d, true);
      scale *= 2.0;
    }
  }
  dec.head_gamma = ld.get("decoder.head.0.gamma", {out_dim, 1, 1, 1});
  dec.conv_out = CausalConv(ld, "decoder.head.2", out_dim, 3, 3, 3, 1, 1);
}

// Encoder3d / Decoder3d of vae2_2.py: 12-channel (patchified) input and output, stages of
// Down_ResidualBlock / Up_ResidualBlock, no attention outside the middle.
void build_wan22(const VaeConfig& cfg, const Loader& ld, WanVae::Impl& impl) {
  const int64_t dim = cfg.dim, z = cfg.z_dim;
  const size_t stages = cfg.dim_mult.size();
  Coder& enc = impl.encoder;
  enc.be = impl.decoder.be = &ld.backend();
  std::vector<int64_t> dims = {dim};
  for (int m : cfg.dim_mult) dims.push_back(dim * m);
  enc.conv_in = CausalConv(ld, "encoder.conv1", 12, dims[0], 3, 3, 1, 1);
  for (size_t i = 0; i < stages; ++i) {
    const bool temporal = i < cfg.temperal_downsample.size() && cfg.temperal_downsample[i];
    enc.stages.emplace_back(std::in_place_type<DownBlock>, ld,
                            "encoder.downsamples." + std::to_string(i), dims[i], dims[i + 1],
                            cfg.num_res_blocks, temporal, i != stages - 1);
  }
  build_middle(ld, "encoder", dims.back(), enc.middle);
  enc.head_gamma = ld.get("encoder.head.0.gamma", {dims.back(), 1, 1, 1});
  enc.conv_out = CausalConv(ld, "encoder.head.2", dims.back(), 2 * z, 3, 3, 1, 1);

  impl.conv1 = CausalConv(ld, "conv1", 2 * z, 2 * z, 1, 1, 0, 0);
  impl.conv2 = CausalConv(ld, "conv2", z, z, 1, 1, 0, 0);

  Coder& dec = impl.decoder;
  const int64_t dd = cfg.decoder_dim();
  std::vector<int64_t> ddims = {dd * cfg.dim_mult.back()};
  for (size_t i = stages; i-- > 0;) ddims.push_back(dd * cfg.dim_mult[i]);
  dec.conv_in = CausalConv(ld, "decoder.conv1", z, ddims[0], 3, 3, 1, 1);
  build_middle(ld, "decoder", ddims[0], dec.middle);
  const size_t nt = cfg.temperal_downsample.size();
  for (size_t i = 0; i < stages; ++i) {
    const bool temporal = i < nt && cfg.temperal_downsample[nt - 1 - i];  // reversed
    dec.stages.emplace_back(std::in_place_type<UpBlock>, ld,
                            "decoder.upsamples." + std::to_string(i), ddims[i], ddims[i + 1],
                            cfg.num_res_blocks + 1, temporal, i != stages - 1);
  }
  dec.head_gamma = ld.get("decoder.head.0.gamma", {ddims.back(), 1, 1, 1});
  dec.conv_out = CausalConv(ld, "decoder.head.2", ddims.back(), 12, 3, 3, 1, 1);
}
}  // namespace

WanVae::WanVae(VaeConfig cfg, const VaeWeightFn& weights, Backend* backend)
    : cfg_(std::move(cfg)), impl_(std::make_unique<Impl>()) {
  cfg_.validate("vae config");
  if (!backend) {
    impl_->owned = make_cpu_backend();
    backend = impl_->owned.get();
  }
  impl_->be = backend;
  if (const char* env = std::getenv("FISDIT_VAE_DECODE_CHUNK"); env && *env) {
    char* end = nullptr;
    const long n = std::string(env) == "auto" ? 0 : std::strtol(env, &end, 10);
    if ((end && *end) || n < 0 || n > 1024)
      throw Error(std::string("FISDIT_VAE_DECODE_CHUNK: must be a count of latent frames 1-1024 "
                              "or auto (from the frame size), got '") +
                  env + "'");
    decode_chunk_ = n;
  }
  const Loader ld(weights, *backend);
  if (cfg_.version == 22)
    build_wan22(cfg_, ld, *impl_);
  else
    build_wan21(cfg_, ld, *impl_);
}

WanVae::~WanVae() = default;

Backend& WanVae::backend() const { return *impl_->be; }

// Inputs and outputs stay on the host ([C, T, H, W] F32); one chunk at a time goes to the backend
// (channels-last, in its video dtype) and its output comes back before the next, so device memory
// holds the weights, the caches and one chunk's activations.
Tensor WanVae::encode(const Tensor& video, Tensor* enc_raw, const VaeProgressFn& progress) {
  if (video.ndim() != 4 || video.dim(0) != 3 || video.dim(1) < 1)
    throw Error("vae encode: video must be [3, T, H, W] with T >= 1, got " +
                shape_str(video.shape()));
  if (cfg_.version == 22 && (video.dim(2) % 2 || video.dim(3) % 2))
    throw Error("vae encode: the Wan 2.2 VAE needs an even frame size, got " +
                shape_str(video.shape()));
  Backend& be = *impl_->be;
  const Tensor v = video.to_f32();
  const int64_t chunks = 1 + (v.dim(1) - 1) / 4;  // frames 1, 4, 4, ...; the rest is dropped
  const int64_t plane = v.dim(2) * v.dim(3);
  impl_->encoder.reset();
  std::vector<Tensor> outs;
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t b = i == 0 ? 0 : 1 + 4 * (i - 1), e = i == 0 ? 1 : 1 + 4 * i;
    Tensor host = Tensor::zeros({3, e - b, v.dim(2), v.dim(3)});
    for (int64_t c = 0; c < 3; ++c)
      std::memcpy(host.f32() + c * (e - b) * plane, v.f32() + (c * v.dim(1) + b) * plane,
                  static_cast<size_t>((e - b) * plane) * sizeof(float));
    Tensor x = be.upload(channels_to_last(host, 0), be.video_dtype());
    if (cfg_.version == 22) {  // 2x2 patchify: [t, H, W, 3] -> [t, H/2, W/2, 12]
      Tensor p = make(be, {e - b, v.dim(2) / 2, v.dim(3) / 2, 12});
      be.space_to_channels2(x, p, false);
      x = p;
    }
    outs.push_back(be.download(impl_->encoder(x, false)));
    if (progress)
      progress(static_cast<int>(i), static_cast<int>(chunks), e - b, outs.back().dim(0));
  }
  impl_->encoder.reset();
  const Tensor raw = join_frames(outs);  // [F, h, w, 2z]
  const Tensor mu_logvar =
      channels_from_last(be.download(impl_->conv1(be.upload(raw, be.video_dtype()))), 0);
  if (enc_raw) *enc_raw = channels_from_last(raw, 0);
  return mu_logvar.slice_rows(0, cfg_.z_dim).clone();
}

Tensor WanVae::decode(const Tensor& z, Tensor* conv2_out, const VaeProgressFn& progress,
                      const VaePartFn& on_part) {
  if (z.ndim() != 4 || z.dim(0) != cfg_.z_dim || z.dim(1) < 1)
    throw Error("vae decode: latent must be [" + std::to_string(cfg_.z_dim) +
                ", F, h, w] with F >= 1, got " + shape_str(z.shape()));
  Backend& be = *impl_->be;
  const Tensor x = impl_->conv2(be.upload(channels_to_last(z, 0), be.video_dtype()));
  if (conv2_out) *conv2_out = channels_from_last(be.download(x), 0);
  impl_->decoder.reset();
  // Latent frame 0 decodes to one frame, each later one to temporal_stride() frames. Chunks:
  // frame 0 alone (the upsamplers treat it apart), then `per` latent frames at a time; each goes
  // into the video as it arrives (the host holds the video once, not chunks + video).
  const int64_t frames = x.dim(0), out_frames = 1 + cfg_.temporal_stride() * (frames - 1);
  const int64_t per = decode_chunk(x.dim(1), x.dim(2));
  const int chunks = static_cast<int>(1 + (frames - 1 + per - 1) / per);
  Tensor video;
  int64_t t0 = 0;
  for (int64_t i = 0, chunk = 0; i < frames; ++chunk) {
    const int64_t n = i == 0 ? 1 : std::min(per, frames - i);
    Tensor y = impl_->decoder(slice_frames(be, x, i, i + n), true);
    i += n;
    if (cfg_.version == 22) {  // unpatchify: [t, h, w, 12] -> [t, 2h, 2w, 3]
      Tensor u = make(be, {y.dim(0), 2 * y.dim(1), 2 * y.dim(2), y.dim(3) / 4});
      be.space_to_channels2(y, u, true);
      y = u;
    }
    const Tensor part = be.download(y);
    if (!video.defined())
      video = Tensor::zeros({part.dim(3), out_frames, part.dim(1), part.dim(2)});
    put_frames(part, video, t0);
    if (on_part) on_part(video, t0, part.dim(0));
    t0 += part.dim(0);
    if (progress) progress(static_cast<int>(chunk), chunks, n, part.dim(0));
  }
  impl_->decoder.reset();
  if (t0 != out_frames)
    throw Error("vae: internal error: decoded " + std::to_string(t0) + " frames, expected " +
                std::to_string(out_frames));
  return video;
}

int64_t decode_chunk_frames(int64_t width, int64_t height, int64_t stride) {
  constexpr int64_t kPixelFrames = 8'000'000;
  const int64_t per_latent = std::max<int64_t>(1, width * height * stride);
  return std::clamp<int64_t>(kPixelFrames / per_latent, 1, 4);
}

void WanVae::set_decode_chunk(int64_t latent_frames) {
  if (latent_frames < 0)
    throw Error("vae: latent frames per decode chunk must be >= 0 (0: from the frame size), got " +
                std::to_string(latent_frames));
  decode_chunk_ = latent_frames;
}

int64_t WanVae::decode_chunk(int64_t h, int64_t w) const {
  if (decode_chunk_ > 0) return decode_chunk_;
  const int64_t s = cfg_.spatial_stride();
  return decode_chunk_frames(w * s, h * s, cfg_.temporal_stride());
}

}  // namespace fisdit::wan
