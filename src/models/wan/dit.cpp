#include "models/wan/dit.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <map>

#include "fisdit/error.h"
#include "models/wan/flops.h"

namespace fisdit::wan {

std::vector<std::pair<std::string, Shape>> dit_parameter_shapes(const WanConfig& c) {
  const int64_t d = c.dim, f = c.ffn_dim;
  const auto& p = c.patch_size;
  std::vector<std::pair<std::string, Shape>> s = {
      {"patch_embedding.weight", {d, c.in_dim, p[0], p[1], p[2]}},
      {"patch_embedding.bias", {d}},
      {"text_embedding.0.weight", {d, c.text_dim}},
      {"text_embedding.0.bias", {d}},
      {"text_embedding.2.weight", {d, d}},
      {"text_embedding.2.bias", {d}},
      {"time_embedding.0.weight", {d, c.freq_dim}},
      {"time_embedding.0.bias", {d}},
      {"time_embedding.2.weight", {d, d}},
      {"time_embedding.2.bias", {d}},
      {"time_projection.1.weight", {6 * d, d}},
      {"time_projection.1.bias", {6 * d}},
  };
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    s.push_back({b + "modulation", {1, 6, d}});
    for (const char* attn : {"self_attn.", "cross_attn."}) {
      for (const char* lin : {"q", "k", "v", "o"}) {
        s.push_back({b + attn + lin + ".weight", {d, d}});
        s.push_back({b + attn + lin + ".bias", {d}});
      }
      if (c.qk_norm) {
        s.push_back({b + attn + "norm_q.weight", {d}});
        s.push_back({b + attn + "norm_k.weight", {d}});
      }
    }
    if (c.cross_attn_norm) {
      s.push_back({b + "norm3.weight", {d}});
      s.push_back({b + "norm3.bias", {d}});
    }
    s.push_back({b + "ffn.0.weight", {f, d}});
    s.push_back({b + "ffn.0.bias", {f}});
    s.push_back({b + "ffn.2.weight", {d, f}});
    s.push_back({b + "ffn.2.bias", {d}});
  }
  s.push_back({"head.modulation", {1, 2, d}});
  s.push_back({"head.head.weight", {int64_t{p[0]} * p[1] * p[2] * c.out_dim, d}});
  s.push_back({"head.head.bias", {int64_t{p[0]} * p[1] * p[2] * c.out_dim}});
  return s;
}

namespace {
// One of a block's ten matrices (DitBlockWeights::Matrix), by its name in blocks.<i>.
bool is_block_matrix(const std::string& name) {
  for (const char* m :
       {".self_attn.q.weight", ".self_attn.k.weight", ".self_attn.v.weight", ".self_attn.o.weight",
        ".cross_attn.q.weight", ".cross_attn.k.weight", ".cross_attn.v.weight",
        ".cross_attn.o.weight", ".ffn.0.weight", ".ffn.2.weight"}) {
    const std::string suffix = m;
    if (name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return true;
  }
  return false;
}
}  // namespace

DitBytes dit_device_bytes(const WanConfig& cfg, DType weight_dtype, models::Precision precision) {
  DitBytes b;
  for (const auto& [name, shape] : dit_parameter_shapes(cfg)) {
    const bool block = name.rfind("blocks.", 0) == 0;
    if (block && name.rfind("blocks.0.", 0) != 0) continue;
    if (block && models::fp8_matrices(precision) && is_block_matrix(name)) {  // codes, scales
      b.block += models::device_bytes(shape_numel(shape)) + models::device_bytes(shape[0] * 4);
      continue;
    }
    const DType dt = name.find("modulation") != std::string::npos ? DType::F32 : weight_dtype;
    (block ? b.block : b.other) +=
        models::device_bytes(shape_numel(shape) * static_cast<int64_t>(dtype_size(dt)));
  }
  return b;
}

std::vector<Tensor*> DitBlockWeights::tensors() {
  std::vector<Tensor*> all = {
      &modulation, &sa_q_w,  &sa_q_b,    &sa_k_w,    &sa_k_b,    &sa_v_w,    &sa_v_b,
      &sa_o_w,     &sa_o_b,  &sa_norm_q, &sa_norm_k, &ca_q_w,    &ca_q_b,    &ca_k_w,
      &ca_k_b,     &ca_v_w,  &ca_v_b,    &ca_o_w,    &ca_o_b,    &ca_norm_q, &ca_norm_k,
      &norm3_w,    &norm3_b, &ffn_in_w,  &ffn_in_b,  &ffn_out_w, &ffn_out_b};
  for (Fp8Rows& q : fp8) {  // --precision fp8: the matrices as codes and scales
    all.push_back(&q.codes);
    all.push_back(&q.scales);
  }
  all.erase(std::remove_if(all.begin(), all.end(), [](const Tensor* t) { return !t->defined(); }),
            all.end());
  return all;
}

Tensor* DitBlockWeights::matrix(int m) {
  Tensor* all[kMatrices] = {&sa_q_w, &sa_k_w, &sa_v_w, &sa_o_w,   &ca_q_w,
                            &ca_k_w, &ca_v_w, &ca_o_w, &ffn_in_w, &ffn_out_w};
  return all[m];
}

models::ModelInfo model_info(const WanConfig& cfg) {
  models::ModelInfo info;
  info.family = "wan";
  info.task = cfg.task;
  info.num_blocks = cfg.num_layers;
  info.dim = cfg.dim;
  info.num_heads = cfg.num_heads;
  info.in_channels = cfg.in_dim;
  info.latent_channels = cfg.out_dim;
  info.text_tokens = cfg.text_len;
  info.text_dim = cfg.text_dim;
  info.patch = cfg.patch_size;
  info.vae_stride = vae_stride(cfg);
  info.expert_boundary = cfg.task == models::Task::I2V ? 0.9f : 0.875f;  // the A14B pipelines'
  info.activation_bytes = [cfg](const models::LatentGrid& g, int act, bool fis, bool cache) {
    // What lives at once in forward() (F32 unless said): the hidden state h and the patches; with
    // MagCache h_in and the kept residual, with FIS the anchors' rows xa; then the larger of a
    // block's self-attention (branch, xn, q, k, v, o in the activation dtype) and its FFN (branch,
    // xn, hidden), or the head's F32 norm output; the text side; library workspaces.
    const auto& p = cfg.patch_size;
    const int64_t tokens = g.frames / p[0] * (g.height / p[1]) * (g.width / p[2]);
    const int64_t ld = tokens * cfg.dim;
    int64_t bytes = 4 * ld + tokens * int64_t{cfg.in_dim} * p[0] * p[1] * p[2] * 4;
    if (cache) bytes += 8 * ld;
    if (fis) bytes += 4 * ld;
    const int64_t attention = 6 * act * ld;
    const int64_t ffn = 2 * act * ld + int64_t{act} * tokens * cfg.ffn_dim;
    const int64_t head = 4 * ld + tokens * int64_t{cfg.out_dim} * p[0] * p[1] * p[2] * 8;
    bytes += std::max({attention, ffn, head});
    bytes += 6 * int64_t{cfg.text_len} * cfg.dim * 4;  // text embedding, cross-attention k, v
    return bytes + (int64_t{512} << 20);
  };
  info.forward_flops = [cfg](const models::LatentGrid& g, const accel::FisPlan* plan,
                             bool step_open, int64_t timestep_rows) {
    const auto& p = cfg.patch_size;
    return forward_flops(cfg, g.frames / p[0], g.height / p[1], g.width / p[2], plan, step_open,
                         timestep_rows)
        .total();
  };
  return info;
}

namespace {
// A process-wide sequence, so that no two DiTs (or two weight states of one) share a revision.
int next_weights_revision() {
  static std::atomic<int> next{1};
  return next++;
}
}  // namespace

WanDiT::WanDiT(WanConfig cfg, Backend& backend, const WeightFn& weights,
               models::Precision precision, const StoredFp8Fn& stored_fp8)
    : cfg_(std::move(cfg)), backend_(backend), weights_revision_(next_weights_revision()) {
  cfg_.validate("model config");
  info_ = model_info(cfg_);
  const auto shapes = dit_parameter_shapes(cfg_);
  std::map<std::string, Shape> shape_of(shapes.begin(), shapes.end());
  // Where the weights go: every block on the device, or, under a memory budget, as many as fit
  // and the rest streamed (models/offload.h).
  const DitBytes bytes = dit_device_bytes(cfg_, backend_.weight_dtype(), precision);
  const int64_t block_bytes = bytes.block, other_bytes = bytes.other;
  plan_ = models::plan_for_budget(backend_, cfg_.num_layers, block_bytes, other_bytes,
                                  "this Wan DiT (" + std::to_string(cfg_.num_layers) +
                                      " blocks, dim " + std::to_string(cfg_.dim) + ")");
  if (plan_.active()) streamer_ = std::make_unique<models::BlockStreamer>(backend_, plan_);
  if (models::fp8_matrices(precision)) check_fp8(precision);
  auto load = [&](const std::string& name) {
    return backend_.upload(weights(name, shape_of.at(name)), backend_.weight_dtype());
  };
  const int64_t d = cfg_.dim;
  patch_w_ = load("patch_embedding.weight");
  patch_w_ = patch_w_.reshape({d, patch_w_.numel() / d});
  patch_b_ = load("patch_embedding.bias");
  text0_w_ = load("text_embedding.0.weight");
  text0_b_ = load("text_embedding.0.bias");
  text2_w_ = load("text_embedding.2.weight");
  text2_b_ = load("text_embedding.2.bias");
  time0_w_ = load("time_embedding.0.weight");
  time0_b_ = load("time_embedding.0.bias");
  time2_w_ = load("time_embedding.2.weight");
  time2_b_ = load("time_embedding.2.bias");
  proj_w_ = load("time_projection.1.weight");
  proj_b_ = load("time_projection.1.bias");
  head_mod_ = backend_.upload(weights("head.modulation", {1, 2, d}), DType::F32).reshape({2, d});
  head_w_ = load("head.head.weight");
  head_b_ = load("head.head.bias");
  blocks_.resize(static_cast<size_t>(cfg_.num_layers));
  for (int i = 0; i < cfg_.num_layers; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    DitBlockWeights& w = blocks_[static_cast<size_t>(i)];
    w.modulation =
        backend_.upload(weights(b + "modulation", {1, 6, d}), DType::F32).reshape({6 * d});
    Tensor* sa[] = {&w.sa_q_w, &w.sa_q_b, &w.sa_k_w, &w.sa_k_b,
                    &w.sa_v_w, &w.sa_v_b, &w.sa_o_w, &w.sa_o_b};
    Tensor* ca[] = {&w.ca_q_w, &w.ca_q_b, &w.ca_k_w, &w.ca_k_b,
                    &w.ca_v_w, &w.ca_v_b, &w.ca_o_w, &w.ca_o_b};
    // A block matrix: in fp8 as the file stores it where it is E4M3 already, else loaded.
    w.fp8.assign(models::fp8_matrices(precision) ? DitBlockWeights::kMatrices : 0, {});
    const auto matrix = [&](int m, const std::string& name) {
      if (models::fp8_matrices(precision) && stored_fp8)
        if (std::optional<Fp8Rows> q = stored_fp8(name, shape_of.at(name))) {
          w.fp8[static_cast<size_t>(m)] = std::move(*q);
          return;
        }
      *w.matrix(m) = load(name);
    };
    const char* lin[] = {"q", "k", "v", "o"};
    for (int j = 0; j < 4; ++j) {
      matrix(DitBlockWeights::SaQ + j, b + "self_attn." + lin[j] + ".weight");
      *sa[2 * j + 1] = load(b + "self_attn." + lin[j] + ".bias");
      matrix(DitBlockWeights::CaQ + j, b + "cross_attn." + lin[j] + ".weight");
      *ca[2 * j + 1] = load(b + "cross_attn." + lin[j] + ".bias");
    }
    if (cfg_.qk_norm) {
      w.sa_norm_q = load(b + "self_attn.norm_q.weight");
      w.sa_norm_k = load(b + "self_attn.norm_k.weight");
      w.ca_norm_q = load(b + "cross_attn.norm_q.weight");
      w.ca_norm_k = load(b + "cross_attn.norm_k.weight");
    }
    if (cfg_.cross_attn_norm) {
      w.norm3_w = load(b + "norm3.weight");
      w.norm3_b = load(b + "norm3.bias");
    }
    matrix(DitBlockWeights::FfnIn, b + "ffn.0.weight");
    w.ffn_in_b = load(b + "ffn.0.bias");
    matrix(DitBlockWeights::FfnOut, b + "ffn.2.weight");
    w.ffn_out_b = load(b + "ffn.2.bias");
    if (models::fp8_matrices(precision)) quantize_block(w);  // as it loads: one bf16 block
    if (streamer_) streamer_->add_block(i, w.tensors());
  }
}

std::string WanDiT::placement() const { return plan_.active() ? plan_.describe() : ""; }

void WanDiT::set_precision(models::Precision precision) {
  if (precision == precision_) return;
  if (models::fp8_matrices(precision_)) {  // the matrices are E4M3 already: only attention changes
    if (!models::fp8_matrices(precision))
      throw Error(
          "the Wan DiT's fp8 weights cannot go back to the default precision: load it again");
    precision_ = precision;
    return;
  }
  if (streamer_)
    throw Error(
        "this Wan DiT streams blocks from host memory (--gpu-memory-limit): load it with "
        "--precision " +
        std::string(models::precision_name(precision)) + " instead of switching it after the load");
  check_fp8(precision);
  for (DitBlockWeights& w : blocks_) quantize_block(w);
  weights_revision_ = next_weights_revision();
}

void WanDiT::check_fp8(models::Precision precision) {
  // The backend must have the fp8 GEMM: a one-row probe, before any weight is touched.
  const Fp8Rows probe =
      backend_.quantize_rows(backend_.upload(Tensor::zeros({16, 16}), DType::F32));
  Tensor y = backend_.empty({16, 16});
  backend_.linear_fp8(probe, probe, nullptr, y);
  precision_ = precision;  // the blocks are quantized as they load, or next
}

// Each matrix quantized per output channel once, where it lives; the default-precision copy is
// dropped.
void WanDiT::quantize_block(DitBlockWeights& w) {
  w.fp8.resize(DitBlockWeights::kMatrices);
  for (int m = 0; m < DitBlockWeights::kMatrices; ++m) {
    Tensor* t = w.matrix(m);
    if (!t->defined()) continue;  // stored as E4M3 already
    w.fp8[static_cast<size_t>(m)] = backend_.quantize_rows(*t);
    *t = Tensor();
  }
}

WanDiT::MatrixInput WanDiT::matrix_input(const Tensor& x) {
  if (models::fp8_matrices(precision_)) return {x, backend_.quantize_rows(x)};
  return {x, {}};
}

WanDiT::MatrixInput WanDiT::normed_input(const Tensor& x, const Tensor* weight, const Tensor* bias,
                                         ModChunk shift, ModChunk scale) {
  const float eps = static_cast<float>(cfg_.eps);
  if (models::fp8_matrices(precision_))  // quantized as it is normalized: no bf16 copy
    return {Tensor(), backend_.layer_norm_fp8(x, weight, bias, eps, shift, scale)};
  Tensor xn = backend_.empty(x.shape(), backend_.activation_dtype());
  backend_.layer_norm(x, weight, bias, eps, xn, shift, scale);
  return {xn, {}};
}

void WanDiT::linear(const DitBlockWeights& w, int m, const MatrixInput& in, const Tensor* b,
                    Tensor& y, Activation act) {
  if (models::fp8_matrices(precision_))
    backend_.linear_fp8(in.q, w.fp8[static_cast<size_t>(m)], b, y, act);
  else
    backend_.linear(in.x, *w.matrix(m), b, y, act);
}

Tensor WanDiT::embed_text(const Tensor& context) {
  if (context.ndim() != 2 || context.dim(1) != cfg_.text_dim)
    throw Error("context must be [tokens, " + std::to_string(cfg_.text_dim) + "], got " +
                shape_str(context.shape()));
  if (context.dim(0) > cfg_.text_len)
    throw Error("context has " + std::to_string(context.dim(0)) +
                " tokens, more than the model's "
                "text_len " +
                std::to_string(cfg_.text_len));
  // Zero rows up to text_len, embedded and attended like the real ones (WanModel.forward).
  Tensor padded = Tensor::zeros({cfg_.text_len, cfg_.text_dim});
  const Tensor src = context.to_f32();
  std::copy(src.f32(), src.f32() + src.numel(), padded.f32());
  Tensor in = backend_.upload(padded, DType::F32);
  const DType act = backend_.activation_dtype();
  Tensor hidden = backend_.empty({cfg_.text_len, cfg_.dim}, act);
  Tensor out = backend_.empty({cfg_.text_len, cfg_.dim}, act);
  backend_.linear(in, text0_w_, &text0_b_, hidden, Activation::GeluTanh);
  backend_.linear(hidden, text2_w_, &text2_b_, out);
  return out;
}

Modulation WanDiT::gather_modulation(const Modulation& mod, const std::vector<int32_t>& frames,
                                     int64_t tokens_per_frame) {
  if (!mod.token_rows.defined()) return mod;
  Modulation out{mod.table, backend_.empty({static_cast<int64_t>(frames.size()) * tokens_per_frame},
                                           DType::I32)};
  backend_.gather_frames(mod.token_rows, frames, tokens_per_frame, out.token_rows);
  return out;
}

void WanDiT::self_attention(const DitBlockWeights& w, const Tensor& x, const Modulation& mod,
                            const RopeGrid& grid, Tensor& out) {
  const int64_t n = x.dim(0), d = cfg_.dim, heads = cfg_.num_heads, hd = cfg_.head_dim();
  const float eps = static_cast<float>(cfg_.eps);
  const DType act = backend_.activation_dtype();
  const MatrixInput in = normed_input(x, nullptr, nullptr, {&mod, 0}, {&mod, 1});
  Tensor q = backend_.empty({n, d}, act), k = backend_.empty({n, d}, act),
         v = backend_.empty({n, d}, act);
  linear(w, DitBlockWeights::SaQ, in, &w.sa_q_b, q);
  linear(w, DitBlockWeights::SaK, in, &w.sa_k_b, k);
  linear(w, DitBlockWeights::SaV, in, &w.sa_v_b, v);
  Tensor q3 = q.reshape({n, heads, hd}), k3 = k.reshape({n, heads, hd});
  if (cfg_.qk_norm) {  // over the full dim, all heads together, then RoPE per head
    backend_.rms_norm_rope(q, w.sa_norm_q, eps, heads, grid);
    backend_.rms_norm_rope(k, w.sa_norm_k, eps, heads, grid);
  } else {
    backend_.rope_3d(q3, grid);
    backend_.rope_3d(k3, grid);
  }
  Tensor o = backend_.empty({n, heads, hd}, act);
  if (precision_ == models::Precision::Fp8)
    backend_.attention_fp8(q3, k3, v.reshape({n, heads, hd}), o);
  else
    backend_.attention(q3, k3, v.reshape({n, heads, hd}), o);
  linear(w, DitBlockWeights::SaO, matrix_input(o.reshape({n, d})), &w.sa_o_b, out);
}

models::BlockText WanDiT::text_kv(const DitBlockWeights& w, const Tensor& text) {
  const int64_t lt = text.dim(0), d = cfg_.dim;
  const DType act = backend_.activation_dtype();
  models::BlockText kv{backend_.empty({lt, d}, act), backend_.empty({lt, d}, act)};
  const MatrixInput context = matrix_input(text);
  linear(w, DitBlockWeights::CaK, context, &w.ca_k_b, kv.k);
  linear(w, DitBlockWeights::CaV, context, &w.ca_v_b, kv.v);
  if (cfg_.qk_norm) backend_.rms_norm(kv.k, w.ca_norm_k, static_cast<float>(cfg_.eps), kv.k);
  return kv;
}

void WanDiT::cross_attention(const DitBlockWeights& w, const Tensor& x, const models::BlockText& kv,
                             Tensor& out) {
  const int64_t n = x.dim(0), lt = kv.k.dim(0), d = cfg_.dim, heads = cfg_.num_heads,
                hd = cfg_.head_dim();
  const float eps = static_cast<float>(cfg_.eps);
  const DType act = backend_.activation_dtype();
  const MatrixInput in =
      cfg_.cross_attn_norm ? normed_input(x, &w.norm3_w, &w.norm3_b) : matrix_input(x);
  Tensor q = backend_.empty({n, d}, act);
  linear(w, DitBlockWeights::CaQ, in, &w.ca_q_b, q);
  if (cfg_.qk_norm) backend_.rms_norm(q, w.ca_norm_q, eps, q);
  Tensor o = backend_.empty({n, heads, hd}, act);
  backend_.attention(q.reshape({n, heads, hd}), kv.k.reshape({lt, heads, hd}),
                     kv.v.reshape({lt, heads, hd}), o);
  linear(w, DitBlockWeights::CaO, matrix_input(o.reshape({n, d})), &w.ca_o_b, out);
}

void WanDiT::feed_forward(const DitBlockWeights& w, const Tensor& x, const Modulation& mod,
                          Tensor& out) {
  const int64_t n = x.dim(0);
  const DType act = backend_.activation_dtype();
  const MatrixInput in = normed_input(x, nullptr, nullptr, {&mod, 3}, {&mod, 4});
  Tensor hidden = backend_.empty({n, cfg_.ffn_dim}, act);
  linear(w, DitBlockWeights::FfnIn, in, &w.ffn_in_b, hidden, Activation::GeluTanh);
  linear(w, DitBlockWeights::FfnOut, matrix_input(hidden), &w.ffn_out_b, out);
}

// WanAttentionBlock.forward: three gated residual branches (cross-attention ungated), fp32.
void WanDiT::run_block(int index, Tensor& x, const Modulation& mod, const RopeGrid& grid,
                       const models::BlockText& kv) {
  const DitBlockWeights& w = blocks_[static_cast<size_t>(index)];
  Tensor branch = backend_.empty(x.shape(), backend_.activation_dtype());
  self_attention(w, x, mod, grid, branch);
  backend_.add(x, branch, {&mod, 2});
  cross_attention(w, x, kv, branch);
  backend_.add(x, branch);
  feed_forward(w, x, mod, branch);
  backend_.add(x, branch, {&mod, 5});
}

// FIS.md, "What runs on the anchors" and "Reconstruction".
void WanDiT::run_block_sparse(int index, Tensor& x, const Modulation& mod, const RopeGrid& grid,
                              const models::BlockText& kv, const std::vector<int32_t>& anchors,
                              const accel::FisConfig& fis) {
  const DitBlockWeights& w = blocks_[static_cast<size_t>(index)];
  const int64_t per_frame = static_cast<int64_t>(grid.height) * grid.width;
  const int64_t rows = static_cast<int64_t>(anchors.size()) * per_frame;
  const Modulation mod_a = gather_modulation(mod, anchors, per_frame);
  const RopeGrid grid_a{anchors, grid.height, grid.width};  // true frame indices for RoPE
  Tensor xa = backend_.empty({rows, cfg_.dim});
  backend_.gather_frames(x, anchors, per_frame, xa);
  if (fis.granularity == accel::Granularity::Block &&
      fis.reconstruct == accel::Reconstruct::Linear) {  // Y_f = linear(Y_A)_f
    run_block(index, xa, mod_a, grid_a, kv);
    backend_.interpolate_frames(xa, anchors, per_frame, x, /*accumulate=*/false);
    return;
  }
  if (!literal_module_reconstruction_ || fis.granularity == accel::Granularity::Block) {
    // Module granularity: the anchors' rows see exactly the dense block's updates and the
    // interpolation is linear, so the three reconstructed branches sum to the reconstruction of
    // Y_A - X_A: one gather and one reconstruction instead of three (block: the delta operator).
    run_block(index, xa, mod_a, grid_a, kv);
    backend_.reconstruct_frames_delta(xa, anchors, per_frame, x);
    return;
  }
  // Module granularity literally (FIS.md): each branch on the anchors, reconstructed, added.
  Tensor za = backend_.empty({rows, cfg_.dim}, backend_.activation_dtype());
  self_attention(w, xa, mod_a, grid_a, za);
  backend_.mul_gate(za, {&mod_a, 2});
  backend_.interpolate_frames(za, anchors, per_frame, x, /*accumulate=*/true);
  backend_.gather_frames(x, anchors, per_frame, xa);
  cross_attention(w, xa, kv, za);
  backend_.interpolate_frames(za, anchors, per_frame, x, /*accumulate=*/true);
  backend_.gather_frames(x, anchors, per_frame, xa);
  feed_forward(w, xa, mod_a, za);
  backend_.mul_gate(za, {&mod_a, 5});
  backend_.interpolate_frames(za, anchors, per_frame, x, /*accumulate=*/true);
}

namespace {
// sinusoidal_embedding_1d: [cos, sin] (cos first), freqs 10000^(-i/half), float64.
Tensor sinusoidal_embedding(const std::vector<float>& timesteps, int freq_dim) {
  const int half = freq_dim / 2;
  Tensor out = Tensor::zeros({static_cast<int64_t>(timesteps.size()), freq_dim});
  float* p = out.f32();
  for (size_t r = 0; r < timesteps.size(); ++r) {
    for (int i = 0; i < half; ++i) {
      const double arg = static_cast<double>(timesteps[r]) *
                         std::pow(10000.0, -static_cast<double>(i) / static_cast<double>(half));
      p[r * freq_dim + i] = static_cast<float>(std::cos(arg));
      p[r * freq_dim + half + i] = static_cast<float>(std::sin(arg));
    }
  }
  return out;
}

// Expands [rows, n] per-row values to one row per token (fixture hooks are per token).
Tensor expand_rows(const Tensor& table, const std::vector<int32_t>& token_rows, int64_t tokens) {
  const int64_t n = table.numel() / table.dim(0);
  Tensor out = Tensor::zeros({tokens, n});
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t r = token_rows.empty() ? 0 : token_rows[static_cast<size_t>(t)];
    std::copy(table.f32() + r * n, table.f32() + (r + 1) * n, out.f32() + t * n);
  }
  return out;
}
// The rows of a per-token timestep (StepPlan::token_rows) as a host I32 tensor.
Tensor rows_tensor(const std::vector<int32_t>& rows) {
  Tensor host = Tensor::zeros({static_cast<int64_t>(rows.size())}, DType::I32);
  std::copy(rows.begin(), rows.end(), host.data_as<int32_t>());
  return host;
}
}  // namespace

models::TextEmbedding WanDiT::embed_text(const models::TextContext& text) {
  if (!text.extra.empty())
    throw Error("the Wan DiT's text side takes the text encoder's states only, got '" +
                text.extra.begin()->first + "' too");
  models::TextEmbedding out;
  out.states = embed_text(text.states);
  out.revision = weights_revision_;
  if (streamer_ || backend_.memory_budget().limit >= 0) return out;
  out.blocks.reserve(blocks_.size());
  for (const DitBlockWeights& w : blocks_) out.blocks.push_back(text_kv(w, out.states));
  return out;
}

Tensor WanDiT::forward(const Tensor& x, const models::Timestep& time,
                       const models::TextEmbedding& text, const models::ForwardOptions& o) {
  if (time.r) throw Error("the Wan DiT takes no MeanFlow r timestep");
  if (!text.extra.empty()) throw Error("the Wan DiT's text embedding has no extra parts");
  if (!text.blocks.empty() &&
      (text.revision != weights_revision_ || text.blocks.size() != blocks_.size()))
    throw Error(
        "the text embedding's block keys and values are not this Wan DiT's as its weights are now "
        "(made by another model, or before --precision changed them): embed the text again");
  return forward_blocks(x, time.t, text.states, text.blocks, o.plan, o.step_open, o.observer,
                        o.stack);
}

Tensor WanDiT::forward(const Tensor& x, const Tensor& t, const Tensor& text,
                       const accel::FisPlan* plan, bool step_open, const ForwardObserver& observer,
                       const BlockStackResidual& stack) {
  return forward_blocks(x, t, text, {}, plan, step_open, observer, stack);
}

WanDiT::StepPlan WanDiT::step_plan(const Tensor& x, const Tensor& t, const Tensor& text,
                                   const accel::FisPlan* plan, bool step_open) const {
  const auto& p = cfg_.patch_size;
  if (x.ndim() != 4 || x.dim(0) != cfg_.in_dim)
    throw Error("latent must be [" + std::to_string(cfg_.in_dim) + ", F, H, W], got " +
                shape_str(x.shape()));
  if (x.dim(1) % p[0] || x.dim(2) % p[1] || x.dim(3) % p[2])
    throw Error("latent " + shape_str(x.shape()) + " is not divisible by the patch size");
  if (text.ndim() != 2 || text.dim(1) != cfg_.dim)
    throw Error("text embedding must be [tokens, dim] from embed_text");
  StepPlan s;
  s.gf = x.dim(1) / p[0];
  s.gh = x.dim(2) / p[1];
  s.gw = x.dim(3) / p[2];
  s.tokens = s.gf * s.gh * s.gw;
  if (plan && plan->num_frames() != s.gf)
    throw Error("FIS plan is for " + std::to_string(plan->num_frames()) +
                " latent frames, the latent has " + std::to_string(s.gf));
  if (plan && plan->num_blocks() != cfg_.num_layers)
    throw Error("FIS plan is for " + std::to_string(plan->num_blocks()) +
                " blocks, the model has " + std::to_string(cfg_.num_layers));

  // Timesteps: one row per distinct value (t2v/i2v: one row for all tokens).
  const std::vector<float> tv = t.to_vector();
  if (!(tv.size() == 1 || static_cast<int64_t>(tv.size()) == s.tokens))
    throw Error("timestep t must have 1 or " + std::to_string(s.tokens) +
                " (one per token) values, "
                "got " +
                std::to_string(tv.size()));
  std::map<float, int32_t> row_of;
  for (float v : tv) {
    if (!std::isfinite(v)) throw Error("timestep t contains a non-finite value");
    if (row_of.emplace(v, static_cast<int32_t>(row_of.size())).second) s.unique_t.push_back(v);
  }
  if (s.unique_t.size() > 1)
    for (float v : tv) s.token_rows.push_back(row_of.at(v));

  s.blocks.resize(static_cast<size_t>(cfg_.num_layers));
  if (plan) {
    s.fis = plan->config();
    for (int i = 0; i < cfg_.num_layers; ++i)
      s.blocks[static_cast<size_t>(i)] = plan->plan_for(step_open, i);
  }
  return s;
}

Shape WanDiT::output_shape(const StepPlan& s) const {
  const auto& p = cfg_.patch_size;
  return {cfg_.out_dim, s.gf * p[0], s.gh * p[1], s.gw * p[2]};
}

Tensor WanDiT::forward_blocks(const Tensor& x, const Tensor& t, const Tensor& text,
                              const std::vector<models::BlockText>& kv, const accel::FisPlan* plan,
                              bool step_open, const ForwardObserver& observer,
                              const BlockStackResidual& stack) {
  const StepPlan s = step_plan(x, t, text, plan, step_open);
  if (graphable(s, kv, observer, stack)) return forward_graphed(s, x, kv);
  const Tensor sin_emb =
      backend_.upload(sinusoidal_embedding(s.unique_t, cfg_.freq_dim), DType::F32);
  Tensor token_rows;
  if (!s.token_rows.empty()) token_rows = backend_.upload(rows_tensor(s.token_rows), DType::I32);
  Tensor out = backend_.empty(output_shape(s));
  run_step(s, x, sin_emb, token_rows, text, kv, observer, stack, out);
  return out;
}

void WanDiT::run_step(const StepPlan& s, const Tensor& x, const Tensor& sin_emb,
                      const Tensor& token_rows_dev, const Tensor& text,
                      const std::vector<models::BlockText>& kv, const ForwardObserver& observer,
                      const BlockStackResidual& stack, Tensor& out) {
  const auto& p = cfg_.patch_size;
  const int64_t gf = s.gf, gh = s.gh, gw = s.gw, tokens = s.tokens, d = cfg_.dim;
  auto observe = [&](const std::string& name, const Tensor& dev) {
    if (observer) observer(name, backend_.download(dev));
  };

  const int64_t rows = static_cast<int64_t>(s.unique_t.size());
  Tensor e_hidden = backend_.empty({rows, d}), e = backend_.empty({rows, d});
  backend_.linear(sin_emb, time0_w_, &time0_b_, e_hidden, Activation::Silu);
  backend_.linear(e_hidden, time2_w_, &time2_b_, e);
  Tensor e_act = backend_.empty({rows, d}), e0 = backend_.empty({rows, 6 * d});
  backend_.activation(e, e_act, Activation::Silu);
  backend_.linear(e_act, proj_w_, &proj_b_, e0);

  // Patch embedding (Conv3d with kernel = stride = patch) as patchify + linear.
  Tensor patches = backend_.empty({tokens, static_cast<int64_t>(cfg_.in_dim) * p[0] * p[1] * p[2]});
  backend_.patchify(x, p, patches);
  Tensor h = backend_.empty({tokens, d});
  backend_.linear(patches, patch_w_, &patch_b_, h);
  if (observer) {
    observe("x_embed", h);
    observer("e", expand_rows(backend_.download(e), s.token_rows, tokens));
    observer("e0",
             expand_rows(backend_.download(e0), s.token_rows, tokens).reshape({tokens, 6, d}));
  }

  RopeGrid grid{{}, static_cast<int>(gh), static_cast<int>(gw)};
  for (int64_t f = 0; f < gf; ++f) grid.frames.push_back(static_cast<int32_t>(f));
  if (stack.apply) {  // MagCache skipped step: the cached residual stands in for every block
    const Tensor& r = *stack.apply;
    if (r.shape() != h.shape() || r.dtype() != DType::F32)
      throw Error("cached block-stack residual " + shape_str(r.shape()) + " does not fit " +
                  shape_str(h.shape()) + " F32");
    backend_.add(h, r);
  } else {
    Tensor h_in;
    if (stack.keep) {
      h_in = backend_.empty({tokens, d});
      backend_.copy(h, h_in);
    }
    Tensor block_table = backend_.empty({rows, 6 * d});
    for (int i = 0; i < cfg_.num_layers; ++i) {
      if (streamer_) streamer_->fetch(i);
      backend_.add_row(e0, blocks_[static_cast<size_t>(i)].modulation, block_table);
      const Modulation mod{block_table.reshape({rows, 6, d}), token_rows_dev};
      const accel::BlockPlan& bp = s.blocks[static_cast<size_t>(i)];
      const models::BlockText block_kv =
          kv.empty() ? text_kv(blocks_[static_cast<size_t>(i)], text) : kv[static_cast<size_t>(i)];
      if (bp.sparse)
        run_block_sparse(i, h, mod, grid, block_kv, bp.anchors, s.fis);
      else
        run_block(i, h, mod, grid, block_kv);
      if (streamer_) streamer_->release(i);
      if (observer) observe("block_" + std::to_string(i), h);
    }
    if (stack.keep) {
      Tensor& keep = *stack.keep;
      if (!keep.defined() || keep.shape() != h.shape() || keep.dtype() != DType::F32 ||
          keep.device() != h.device())
        keep = backend_.empty({tokens, d});
      backend_.sub(h, h_in, keep);
    }
  }

  // Head: (head.modulation + e) -> shift, scale; Linear(LN(x) * (1 + scale) + shift). The table
  // is made on the device, one row of e at a time, so the forward never waits for the GPU.
  Tensor head_table = backend_.empty({rows, 2, d});
  for (int64_t r = 0; r < rows; ++r) {
    Tensor table_row = head_table.slice_rows(r, r + 1).reshape({2, d});
    backend_.add_row(head_mod_, e.slice_rows(r, r + 1), table_row);
  }
  const Modulation head_mod{head_table, token_rows_dev};
  Tensor hn = backend_.empty({tokens, d});
  backend_.layer_norm(h, nullptr, nullptr, static_cast<float>(cfg_.eps), hn, {&head_mod, 0},
                      {&head_mod, 1});
  Tensor head_out = backend_.empty({tokens, head_w_.dim(0)});
  backend_.linear(hn, head_w_, &head_b_, head_out);
  observe("head_out", head_out);
  backend_.unpatchify(head_out, p, gf, gh, gw, out);
}

bool WanDiT::graphable(const StepPlan& s, const std::vector<models::BlockText>& kv,
                       const ForwardObserver& observer, const BlockStackResidual& stack) const {
  return backend_.graphs() && s.tokens <= graph_tokens_ && !kv.empty() && !observer &&
         !stack.apply && !stack.keep && !streamer_ && backend_.memory_budget().limit < 0;
}

size_t WanDiT::text_slot(const std::vector<models::BlockText>& kv) {
  constexpr size_t kSlots = 2;  // a prompt's cond and uncond texts
  std::vector<const Tensor*> src;
  for (const models::BlockText& b : kv) {
    src.push_back(&b.k);
    src.push_back(&b.v);
  }
  const auto holds = [&](const TextSlot& slot) {
    if (slot.sources.size() != src.size()) return false;
    for (size_t i = 0; i < src.size(); ++i)
      if (slot.sources[i] != src[i]->raw() || slot.owners[i].expired()) return false;
    return true;
  };
  for (size_t i = 0; i < graph_text_.size(); ++i)
    if (holds(*graph_text_[i])) {
      graph_text_[i]->used = ++graph_clock_;
      return i;
    }
  // A slot whose text is gone (the last request's) first, so a new request replays the last
  // one's graphs; else a new slot while there are fewer than kSlots; else the least recently used.
  const auto gone = [](const TextSlot& slot) {
    return std::any_of(slot.owners.begin(), slot.owners.end(),
                       [](const std::weak_ptr<const void>& o) { return o.expired(); });
  };
  size_t i = graph_text_.size();
  for (size_t j = 0; j < graph_text_.size(); ++j)
    if (gone(*graph_text_[j]) &&
        (i == graph_text_.size() || graph_text_[j]->used < graph_text_[i]->used))
      i = j;
  if (i == graph_text_.size() && i < kSlots) {
    auto slot = std::make_shared<TextSlot>();
    for (const models::BlockText& b : kv)
      slot->kv.push_back(
          {backend_.empty(b.k.shape(), b.k.dtype()), backend_.empty(b.v.shape(), b.v.dtype())});
    graph_text_.push_back(std::move(slot));
  } else if (i == graph_text_.size()) {
    i = 0;
    for (size_t j = 1; j < graph_text_.size(); ++j)
      if (graph_text_[j]->used < graph_text_[i]->used) i = j;
  }
  TextSlot& slot = *graph_text_[i];
  if (slot.kv.size() != kv.size()) throw Error("the text's keys and values do not fit this DiT");
  for (size_t b = 0; b < kv.size(); ++b) {  // into the slot's own tensors: graphs read them
    backend_.copy(kv[b].k, slot.kv[b].k);
    backend_.copy(kv[b].v, slot.kv[b].v);
  }
  ++graph_text_copies_;
  slot.sources.clear();
  slot.owners.clear();
  for (const Tensor* t : src) {
    slot.sources.push_back(t->raw());
    slot.owners.emplace_back(t->owner());
  }
  slot.used = ++graph_clock_;
  return i;
}

Tensor WanDiT::forward_graphed(const StepPlan& s, const Tensor& x,
                               const std::vector<models::BlockText>& kv) {
  if (graphs_revision_ != weights_revision_) {  // the graphs read weights that are gone
    graphs_.clear();
    graph_text_.clear();
    graphs_revision_ = weights_revision_;
  }
  const size_t slot = text_slot(kv);
  // What a recording fixes: the shapes, the timestep rows, the blocks' plans, the text slot, the
  // arithmetic.
  std::string key = shape_str(x.shape()) + " " + std::string(dtype_name(x.dtype())) + " t" +
                    std::to_string(s.unique_t.size()) + " slot" + std::to_string(slot) + " " +
                    models::precision_name(precision_) +
                    (literal_module_reconstruction_ ? " literal" : "") + " fis " +
                    accel::granularity_name(s.fis.granularity) + "/" +
                    accel::reconstruct_name(s.fis.reconstruct);
  if (!s.token_rows.empty()) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the rows
    for (int32_t r : s.token_rows) h = (h ^ static_cast<uint32_t>(r)) * 1099511628211ull;
    key += " rows" + std::to_string(h);
  }
  for (const accel::BlockPlan& bp : s.blocks) {
    key += bp.sparse ? " [" : " d";
    if (bp.sparse) {
      for (int32_t a : bp.anchors) key += std::to_string(a) + ",";
      key += "]";
    }
  }
  const Tensor sin_emb =
      backend_.upload(sinusoidal_embedding(s.unique_t, cfg_.freq_dim), DType::F32);
  const auto op_by_op = [&] {
    Tensor token_rows;
    if (!s.token_rows.empty()) token_rows = backend_.upload(rows_tensor(s.token_rows), DType::I32);
    Tensor out = backend_.empty(output_shape(s));
    run_step(s, x, sin_emb, token_rows, Tensor(), kv, {}, {}, out);
    return out;
  };
  const GraphCache::Step step = graphs_.next(key);
  if (step == GraphCache::Step::Run) return op_by_op();
  if (step == GraphCache::Step::Record) {
    // The graph's own inputs and output: x, the sinusoids, the token rows (fixed by the key), out.
    GraphCache::Entry e;
    e.buffers = {
        backend_.empty(x.shape(), x.dtype()), backend_.empty(sin_emb.shape()),
        s.token_rows.empty() ? Tensor() : backend_.upload(rows_tensor(s.token_rows), DType::I32),
        backend_.empty(output_shape(s))};
    e.keep = graph_text_[slot];
    const std::shared_ptr<TextSlot> text = graph_text_[slot];
    try {
      e.graph = backend_.capture([this, s, b = e.buffers, text]() mutable {
        run_step(s, b[0], b[1], b[2], Tensor(), text->kv, {}, {}, b[3]);
      });
    } catch (const Error& err) {
      if (graphs_.failed(key, err.what()))
        std::fprintf(stderr,
                     "fisdit: a DiT forward could not be recorded as a graph, so it runs op by "
                     "op: %s\n",
                     err.what());
      return op_by_op();
    }
    graphs_.store(key, std::move(e));
  }
  GraphCache::Entry& e = graphs_.entry(key);
  backend_.copy(x, e.buffers[0]);
  backend_.copy(sin_emb, e.buffers[1]);
  backend_.replay(e.graph);
  Tensor out = backend_.empty(e.buffers[3].shape());
  backend_.copy(e.buffers[3], out);  // the next replay writes the graph's own again
  return out;
}

}  // namespace fisdit::wan
