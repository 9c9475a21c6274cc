#include "models/hunyuan15/dit.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "fisdit/error.h"

namespace fisdit::hunyuan15 {

namespace {
constexpr float kEps = 1e-6f;        // the blocks' and the refiner's LayerNorms, q/k RMSNorm
constexpr float kMapperEps = 1e-5f;  // nn.LayerNorm's default: byT5 mapper, vision projection
constexpr int kFreqDim = 256;        // TimestepEmbedder's frequency_embedding_size
constexpr int kRefinerMlpRatio = 4;  // SingleTokenRefiner's default mlp_width_ratio

// embed_layers.py timestep_embedding, in fp32 as the official code computes it:
// freqs = exp(-ln(10000) * i / half), args = t * freqs, [cos, sin].
Tensor timestep_embedding(float t) {
  const int half = kFreqDim / 2;
  Tensor out = Tensor::zeros({1, kFreqDim});
  const float c = static_cast<float>(-std::log(10000.0));
  for (int i = 0; i < half; ++i) {
    const float freq = std::exp(c * static_cast<float>(i) / static_cast<float>(half));
    const float arg = t * freq;
    out.f32()[i] = std::cos(arg);
    out.f32()[half + i] = std::sin(arg);
  }
  return out;
}
}  // namespace

std::vector<std::pair<std::string, Shape>> dit_parameter_shapes(const HunyuanConfig& c) {
  const int64_t d = c.hidden, m = c.mlp_dim(), hd = c.head_dim(), td = c.text_dim;
  const auto& p = c.patch_size;
  std::vector<std::pair<std::string, Shape>> s;
  auto lin = [&](const std::string& name, int64_t out, int64_t in) {
    s.push_back({name + ".weight", {out, in}});
    s.push_back({name + ".bias", {out}});
  };
  auto norm = [&](const std::string& name, int64_t n) {
    s.push_back({name + ".weight", {n}});
    s.push_back({name + ".bias", {n}});
  };
  if (c.glyph) {
    norm("byt5_in.layernorm", c.byt5_dims[0]);
    lin("byt5_in.fc1", c.byt5_dims[1], c.byt5_dims[0]);
    lin("byt5_in.fc2", c.byt5_dims[2], c.byt5_dims[1]);
    lin("byt5_in.fc3", d, c.byt5_dims[2]);
  }
  s.push_back({"img_in.proj.weight", {d, c.in_dim(), p[0], p[1], p[2]}});
  s.push_back({"img_in.proj.bias", {d}});
  if (c.vision_dim > 0) {
    norm("vision_in.proj.0", c.vision_dim);
    lin("vision_in.proj.1", c.vision_dim, c.vision_dim);
    lin("vision_in.proj.3", d, c.vision_dim);
    norm("vision_in.proj.4", d);
  }
  lin("txt_in.input_embedder", d, td);
  lin("txt_in.t_embedder.mlp.0", d, kFreqDim);
  lin("txt_in.t_embedder.mlp.2", d, d);
  lin("txt_in.c_embedder.linear_1", d, td);
  lin("txt_in.c_embedder.linear_2", d, d);
  for (int i = 0; i < c.refiner_blocks; ++i) {
    const std::string b = "txt_in.individual_token_refiner.blocks." + std::to_string(i) + ".";
    norm(b + "norm1", d);
    lin(b + "self_attn_qkv", 3 * d, d);
    lin(b + "self_attn_proj", d, d);
    norm(b + "norm2", d);
    lin(b + "mlp.fc1", kRefinerMlpRatio * d, d);
    lin(b + "mlp.fc2", d, kRefinerMlpRatio * d);
    lin(b + "adaLN_modulation.1", 2 * d, d);
  }
  lin("time_in.mlp.0", d, kFreqDim);
  lin("time_in.mlp.2", d, d);
  if (c.meanflow) {
    lin("time_r_in.mlp.0", d, kFreqDim);
    lin("time_r_in.mlp.2", d, d);
  }
  for (int i = 0; i < c.num_blocks; ++i) {
    const std::string b = "double_blocks." + std::to_string(i) + ".";
    for (const char* st : {"img", "txt"}) {
      const std::string x = b + st;
      lin(x + "_mod.linear", 6 * d, d);
      for (const char* qkv : {"_attn_q", "_attn_k", "_attn_v"}) lin(x + qkv, d, d);
      s.push_back({x + "_attn_q_norm.weight", {hd}});
      s.push_back({x + "_attn_k_norm.weight", {hd}});
      lin(x + "_attn_proj", d, d);
      lin(x + "_mlp.fc1", m, d);
      lin(x + "_mlp.fc2", d, m);
    }
  }
  lin("final_layer.linear", int64_t{p[0]} * p[1] * p[2] * c.out_channels, d);
  lin("final_layer.adaLN_modulation.1", 2 * d, d);
  if (c.cond_type_embedding) s.push_back({"cond_type_embedding.weight", {3, d}});
  return s;
}

double forward_flops(const HunyuanConfig& c, int64_t gf, int64_t gh, int64_t gw,
                     int64_t prompt_tokens, int64_t side_tokens, const accel::FisPlan* plan,
                     bool step_open) {
  const double d = c.hidden, m = c.mlp_dim(), n = static_cast<double>(gf * gh * gw);
  const double per_frame = static_cast<double>(gh * gw), lp = static_cast<double>(prompt_tokens);
  const double s = static_cast<double>(side_tokens);  // the whole text side, prompt included
  const auto& p = c.patch_size;
  const double patch = static_cast<double>(p[0]) * p[1] * p[2];
  const double embedder = 2.0 * kFreqDim * d + 2.0 * d * d;
  double f = 2.0 * n * c.in_dim() * patch * d + embedder * (c.meanflow ? 2 : 1);
  // The token refiner on the prompt rows (its timestep embedder, gates, attention and MLP).
  f += embedder;
  const double rm = kRefinerMlpRatio * d;
  f += c.refiner_blocks *
       (2.0 * d * 2 * d + 2.0 * lp * (4 * d * d + 2 * d * rm) + 4.0 * lp * lp * d);
  for (int l = 0; l < c.num_blocks; ++l) {
    double v = n;
    if (plan) {
      const accel::BlockPlan bp = plan->plan_for(step_open, l);
      if (bp.sparse) v = static_cast<double>(bp.anchors.size()) * per_frame;
    }
    const double rows = v + s;
    f += 2 * (2.0 * d * 6 * d)                   // both streams' modulation
         + 2.0 * rows * (4 * d * d + 2 * d * m)  // q, k, v, proj, fc1, fc2 (both streams)
         + 4.0 * rows * rows * d;                // joint attention: QK^T and PV
  }
  f += 2.0 * d * 2 * d + 2.0 * n * d * patch * c.out_channels;  // final layer
  return f;
}

models::ModelInfo model_info(const HunyuanConfig& cfg) {
  models::ModelInfo info;
  info.family = "hunyuan15";
  info.task = cfg.task;
  info.num_blocks = cfg.num_blocks;
  info.dim = cfg.hidden;
  info.num_heads = cfg.heads;
  info.in_channels = cfg.in_dim();
  info.latent_channels = cfg.out_channels;
  info.text_tokens = cfg.text_len;
  info.text_dim = cfg.text_dim;
  info.patch = cfg.patch_size;
  info.vae_stride = {4, 16, 16};  // the HunyuanVideo 1.5 VAE
  info.meanflow = cfg.meanflow;
  if (cfg.glyph) info.text_extra["byt5"] = {cfg.byt5_len, cfg.byt5_dims[0]};
  if (cfg.vision_dim > 0) info.text_extra["vision"] = {cfg.vision_tokens, cfg.vision_dim};
  const int64_t side =
      cfg.text_len + (cfg.task == models::Task::I2V && cfg.vision_dim > 0 ? cfg.vision_tokens : 0);
  info.activation_bytes = [cfg, side](const models::LatentGrid& g, int act, bool fis, bool cache) {
    // What lives at once in forward() (F32 unless said): the video stream h, the patches and
    // the text side; with MagCache h_in and the kept residual, with FIS the anchors' rows; then
    // the larger of a block's joint attention (q, k, v, o over video and text, the normed input
    // and a branch in the activation dtype) and its MLP (normed input, hidden, branch), or the
    // head's F32 norm output and its output.
    const auto& p = cfg.patch_size;
    const int64_t tokens = g.frames / p[0] * (g.height / p[1]) * (g.width / p[2]);
    const int64_t d = cfg.hidden, ld = tokens * d;
    int64_t bytes = 4 * ld + tokens * int64_t{cfg.in_dim()} * 4 + 4 * side * d;
    if (cache) bytes += 8 * ld;
    if (fis) bytes += 4 * ld;
    const int64_t attention = int64_t{act} * (4 * (tokens + side) * d + 2 * ld);
    const int64_t mlp = int64_t{act} * (2 * ld + tokens * int64_t{cfg.mlp_dim()});
    const int64_t head = 4 * ld + tokens * int64_t{cfg.out_channels} * 8;
    bytes += std::max({attention, mlp, head});
    return bytes + (int64_t{512} << 20);
  };
  info.forward_flops = [cfg, side](const models::LatentGrid& g, const accel::FisPlan* plan,
                                   bool step_open, int64_t /*timestep_rows*/) {
    const auto& p = cfg.patch_size;
    return forward_flops(cfg, g.frames / p[0], g.height / p[1], g.width / p[2], cfg.text_len, side,
                         plan, step_open);
  };
  return info;
}

HunyuanDiT::HunyuanDiT(HunyuanConfig cfg, Backend& backend, const WeightFn& weights,
                       models::Precision precision)
    : cfg_(std::move(cfg)), backend_(backend) {
  cfg_.validate("model config");
  if (cfg_.patch_size != std::array<int, 3>{1, 1, 1})
    throw Error("HunyuanVideo 1.5 DiT: patch_size other than [1, 1, 1] is not supported");
  info_ = model_info(cfg_);
  const auto shapes = dit_parameter_shapes(cfg_);
  const std::map<std::string, Shape> shape_of(shapes.begin(), shapes.end());
  const DType wt = backend_.weight_dtype();
  auto load = [&](const std::string& name) {
    return backend_.upload(weights(name, shape_of.at(name)), wt);
  };
  auto lin = [&](const std::string& name) {
    return Linear{load(name + ".weight"), load(name + ".bias"), {}};
  };
  const int64_t d = cfg_.hidden;
  img_in_ = lin("img_in.proj");
  img_in_.w = img_in_.w.reshape({d, img_in_.w.numel() / d});
  time_in_ = {lin("time_in.mlp.0"), lin("time_in.mlp.2")};
  if (cfg_.meanflow) time_r_in_ = {lin("time_r_in.mlp.0"), lin("time_r_in.mlp.2")};
  refiner_time_ = {lin("txt_in.t_embedder.mlp.0"), lin("txt_in.t_embedder.mlp.2")};
  input_embedder_ = lin("txt_in.input_embedder");
  c_linear1_ = lin("txt_in.c_embedder.linear_1");
  c_linear2_ = lin("txt_in.c_embedder.linear_2");
  for (int i = 0; i < cfg_.refiner_blocks; ++i) {
    const std::string b = "txt_in.individual_token_refiner.blocks." + std::to_string(i) + ".";
    RefinerBlock r;
    r.norm1_w = load(b + "norm1.weight");
    r.norm1_b = load(b + "norm1.bias");
    r.norm2_w = load(b + "norm2.weight");
    r.norm2_b = load(b + "norm2.bias");
    // The fused qkv projection splits as (K H D) with K outermost: q, k, v are row blocks.
    const Tensor qkv_w = weights(b + "self_attn_qkv.weight", {3 * d, d}).to_f32();
    const Tensor qkv_b = weights(b + "self_attn_qkv.bias", {3 * d}).to_f32();
    Linear* parts[3] = {&r.q, &r.k, &r.v};
    for (int j = 0; j < 3; ++j) {
      parts[j]->w = backend_.upload(qkv_w.slice_rows(j * d, (j + 1) * d).clone(), wt);
      parts[j]->b = backend_.upload(
          Tensor::from_vector(std::vector<float>(qkv_b.f32() + j * d, qkv_b.f32() + (j + 1) * d),
                              {d}),
          wt);
    }
    r.proj = lin(b + "self_attn_proj");
    r.fc1 = lin(b + "mlp.fc1");
    r.fc2 = lin(b + "mlp.fc2");
    r.ada = lin(b + "adaLN_modulation.1");
    refiner_.push_back(std::move(r));
  }
  if (cfg_.glyph) {
    byt5_norm_w_ = load("byt5_in.layernorm.weight");
    byt5_norm_b_ = load("byt5_in.layernorm.bias");
    byt5_fc1_ = lin("byt5_in.fc1");
    byt5_fc2_ = lin("byt5_in.fc2");
    byt5_fc3_ = lin("byt5_in.fc3");
  }
  if (cfg_.vision_dim > 0) {
    vision_norm0_w_ = load("vision_in.proj.0.weight");
    vision_norm0_b_ = load("vision_in.proj.0.bias");
    vision_fc1_ = lin("vision_in.proj.1");
    vision_fc3_ = lin("vision_in.proj.3");
    vision_norm4_w_ = load("vision_in.proj.4.weight");
    vision_norm4_b_ = load("vision_in.proj.4.bias");
  }
  if (cfg_.cond_type_embedding) {  // its rows on the device once: prompt, glyph, vision
    const Tensor table = weights("cond_type_embedding.weight", {3, d}).to_f32();
    for (int64_t t = 0; t < 3; ++t)
      cond_rows_.push_back(backend_.upload(table.slice_rows(t, t + 1).reshape({d}), DType::F32));
  }
  blocks_.resize(static_cast<size_t>(cfg_.num_blocks));
  for (int i = 0; i < cfg_.num_blocks; ++i) {
    const std::string b = "double_blocks." + std::to_string(i) + ".";
    for (const char* st : {"img", "txt"}) {
      Stream& s = std::string(st) == "img" ? blocks_[static_cast<size_t>(i)].img
                                           : blocks_[static_cast<size_t>(i)].txt;
      const std::string x = b + st;
      s.mod = lin(x + "_mod.linear");
      s.q = lin(x + "_attn_q");
      s.k = lin(x + "_attn_k");
      s.v = lin(x + "_attn_v");
      s.q_norm = load(x + "_attn_q_norm.weight");
      s.k_norm = load(x + "_attn_k_norm.weight");
      s.proj = lin(x + "_attn_proj");
      s.fc1 = lin(x + "_mlp.fc1");
      s.fc2 = lin(x + "_mlp.fc2");
    }
    if (models::fp8_matrices(precision)) {  // as it loads: one bf16 block at a time
      if (i == 0)
        set_precision(precision);  // probes the backend, quantizes block 0
      else
        quantize_block(i);
    }
  }
  final_mod_ = lin("final_layer.adaLN_modulation.1");
  final_linear_ = lin("final_layer.linear");
}

void HunyuanDiT::linear(const Tensor& x, const Linear& l, Tensor& y, Activation act) {
  backend_.linear(x, l.w, &l.b, y, act);
}

HunyuanDiT::MatrixInput HunyuanDiT::matrix_input(const Tensor& x) {
  if (models::fp8_matrices(precision_)) return {x, backend_.quantize_rows(x)};
  return {x, {}};
}

void HunyuanDiT::block_linear(const MatrixInput& in, const Linear& l, Tensor& y, Activation act) {
  if (l.q.codes.defined())
    backend_.linear_fp8(in.q, l.q, &l.b, y, act);
  else
    backend_.linear(in.x, l.w, &l.b, y, act);
}

void HunyuanDiT::quantize_block(int index) {
  Block& b = blocks_[static_cast<size_t>(index)];
  for (Stream* s : {&b.img, &b.txt})
    for (Linear* l : {&s->q, &s->k, &s->v, &s->proj, &s->fc1, &s->fc2}) {
      if (l->q.codes.defined() || !l->w.defined()) continue;
      l->q = backend_.quantize_rows(l->w);
      l->w = Tensor();
    }
}

void HunyuanDiT::set_precision(models::Precision precision) {
  if (precision == precision_) return;
  if (models::fp8_matrices(precision_)) {  // the matrices are E4M3 already
    if (!models::fp8_matrices(precision))
      throw Error(
          "the HunyuanVideo 1.5 DiT's fp8 weights cannot go back to the default precision: load "
          "it again");
    precision_ = precision;
    return;
  }
  // The backend must have the fp8 GEMM: a probe before any weight is touched.
  const Fp8Rows probe =
      backend_.quantize_rows(backend_.upload(Tensor::zeros({16, 16}), DType::F32));
  Tensor y = backend_.empty({16, 16});
  backend_.linear_fp8(probe, probe, nullptr, y);
  precision_ = precision;
  for (size_t i = 0; i < blocks_.size(); ++i)
    if (blocks_[i].img.q.w.defined() || blocks_[i].img.q.q.codes.defined())
      quantize_block(static_cast<int>(i));
}

Modulation HunyuanDiT::modulation(const Linear& l, const Tensor& c_act, int chunks) {
  Tensor y = backend_.empty({1, int64_t{chunks} * cfg_.hidden});
  linear(c_act, l, y);
  return Modulation{y.reshape({1, chunks, cfg_.hidden}), {}};
}

Tensor HunyuanDiT::embed_time(const TimeEmbedder& e, float t) {
  const Tensor freq = backend_.upload(timestep_embedding(t), DType::F32);
  Tensor hidden = backend_.empty({1, cfg_.hidden}), out = backend_.empty({1, cfg_.hidden});
  linear(freq, e.l0, hidden, Activation::Silu);
  linear(hidden, e.l2, out);
  return out;
}

void HunyuanDiT::head_norm(Tensor& x, const Tensor& weight) {
  Tensor rows = x.reshape({x.dim(0) * cfg_.heads, cfg_.head_dim()});
  backend_.rms_norm(rows, weight, kEps, rows);
}

models::TextEmbedding HunyuanDiT::embed_text(const models::TextContext& text) {
  const int64_t d = cfg_.hidden;
  const Tensor& states = text.states;
  if (!states.defined() || states.ndim() != 2 || states.dim(1) != cfg_.text_dim)
    throw Error("HunyuanVideo 1.5 DiT: the prompt states must be [tokens, " +
                std::to_string(cfg_.text_dim) + "], got " +
                (states.defined() ? shape_str(states.shape()) : std::string("none")));
  if (states.dim(0) < 1 || states.dim(0) > cfg_.text_len)
    throw Error("HunyuanVideo 1.5 DiT: the prompt has " + std::to_string(states.dim(0)) +
                " tokens; 1 to " + std::to_string(cfg_.text_len) + " are taken");
  for (const auto& [name, t] : text.extra)
    if (name != "byt5" && name != "vision")
      throw Error("HunyuanVideo 1.5 DiT: unknown text-side stream '" + name +
                  "' (known: byt5, vision)");
  models::TextEmbedding out;
  const Tensor host = states.to_f32();
  const int64_t lp = host.dim(0);
  // c_embedder of the mean over the (valid) prompt tokens, summed in double.
  std::vector<double> mean(static_cast<size_t>(cfg_.text_dim), 0.0);
  for (int64_t r = 0; r < lp; ++r)
    for (int64_t c = 0; c < cfg_.text_dim; ++c)
      mean[static_cast<size_t>(c)] += host.f32()[r * cfg_.text_dim + c];
  Tensor mean_host = Tensor::zeros({1, cfg_.text_dim});
  for (int64_t c = 0; c < cfg_.text_dim; ++c)
    mean_host.f32()[c] = static_cast<float>(mean[static_cast<size_t>(c)] / static_cast<double>(lp));
  Tensor hidden = backend_.empty({1, d}), pooled = backend_.empty({1, d});
  linear(backend_.upload(mean_host, DType::F32), c_linear1_, hidden, Activation::Silu);
  linear(hidden, c_linear2_, pooled);
  out.extra["pooled"] = pooled;
  out.states = backend_.empty({lp, d});
  linear(backend_.upload(host, DType::F32), input_embedder_, out.states);

  // The rows no refiner touches: [vision ; glyph], each with its condition-type row.
  auto extra_rows = [&](const char* name, int width) -> Tensor {
    const auto it = text.extra.find(name);
    if (it == text.extra.end()) return {};
    const Tensor& t = it->second;
    if (t.ndim() != 2 || t.dim(1) != width)
      throw Error(std::string("HunyuanVideo 1.5 DiT: '") + name + "' states must be [tokens, " +
                  std::to_string(width) + "], got " + shape_str(t.shape()));
    return t.to_f32();
  };
  const Tensor vision = extra_rows("vision", cfg_.vision_dim);
  const Tensor byt5 = extra_rows("byt5", cfg_.byt5_dims[0]);
  if (vision.defined() && cfg_.vision_dim == 0)
    throw Error("HunyuanVideo 1.5 DiT: this model has no vision projection for 'vision' states");
  if (byt5.defined() && !cfg_.glyph)
    throw Error("HunyuanVideo 1.5 DiT: this model has no glyph (byT5) projection");
  if (vision.defined() && vision.dim(0) > cfg_.vision_tokens)
    throw Error("HunyuanVideo 1.5 DiT: " + std::to_string(vision.dim(0)) +
                " vision tokens, more than the " + std::to_string(cfg_.vision_tokens) + " taken");
  if (byt5.defined() && byt5.dim(0) > cfg_.byt5_len)
    throw Error("HunyuanVideo 1.5 DiT: " + std::to_string(byt5.dim(0)) +
                " glyph tokens, more than the " + std::to_string(cfg_.byt5_len) + " taken");
  const int64_t lv = vision.defined() ? vision.dim(0) : 0, lb = byt5.defined() ? byt5.dim(0) : 0;
  if (lv + lb == 0) return out;
  Tensor side = backend_.empty({lv + lb, d});
  auto add_type = [&](Tensor& rows, int type) {
    if (cond_rows_.empty() || rows.dim(0) == 0) return;
    backend_.add_row(rows, cond_rows_[static_cast<size_t>(type)], rows);
  };
  if (lv) {  // VisionProjection: LN, Linear, GELU, Linear, LN
    const int64_t vd = cfg_.vision_dim;
    Tensor x = backend_.upload(vision, DType::F32), xn = backend_.empty({lv, vd}),
           h = backend_.empty({lv, vd}), y = backend_.empty({lv, d});
    backend_.layer_norm(x, &vision_norm0_w_, &vision_norm0_b_, kMapperEps, xn);
    linear(xn, vision_fc1_, h, Activation::Gelu);
    linear(h, vision_fc3_, y);
    Tensor rows = side.slice_rows(0, lv);
    backend_.layer_norm(y, &vision_norm4_w_, &vision_norm4_b_, kMapperEps, rows);
    add_type(rows, 2);
  }
  if (lb) {  // ByT5Mapper without residual: LN, fc1, GELU, fc2, GELU, fc3
    Tensor x = backend_.upload(byt5, DType::F32), xn = backend_.empty({lb, cfg_.byt5_dims[0]}),
           h1 = backend_.empty({lb, cfg_.byt5_dims[1]}),
           h2 = backend_.empty({lb, cfg_.byt5_dims[2]});
    backend_.layer_norm(x, &byt5_norm_w_, &byt5_norm_b_, kMapperEps, xn);
    linear(xn, byt5_fc1_, h1, Activation::Gelu);
    linear(h1, byt5_fc2_, h2, Activation::Gelu);
    Tensor rows = side.slice_rows(lv, lv + lb);
    linear(h2, byt5_fc3_, rows);
    add_type(rows, 1);
  }
  out.extra["side"] = side;
  return out;
}

// IndividualTokenRefiner: x += gate_msa * proj(attn(LN1(x))); x += gate_mlp * MLP(LN2(x)), the
// gates Linear(SiLU(c)); attention among the prompt tokens, no q/k norm, no RoPE.
void HunyuanDiT::refine(Tensor& x, const Tensor& c_act) {
  const int64_t l = x.dim(0), d = cfg_.hidden, heads = cfg_.heads, hd = cfg_.head_dim();
  const DType act = backend_.activation_dtype();
  for (const RefinerBlock& r : refiner_) {
    const Modulation gates = modulation(r.ada, c_act, 2);
    Tensor xn = backend_.empty({l, d}, act);
    backend_.layer_norm(x, &r.norm1_w, &r.norm1_b, kEps, xn);
    Tensor q = backend_.empty({l, d}, act), k = backend_.empty({l, d}, act),
           v = backend_.empty({l, d}, act), o = backend_.empty({l, heads, hd}, act);
    linear(xn, r.q, q);
    linear(xn, r.k, k);
    linear(xn, r.v, v);
    backend_.attention(q.reshape({l, heads, hd}), k.reshape({l, heads, hd}),
                       v.reshape({l, heads, hd}), o);
    Tensor branch = backend_.empty({l, d}, act);
    linear(o.reshape({l, d}), r.proj, branch);
    backend_.add(x, branch, {&gates, 0});
    backend_.layer_norm(x, &r.norm2_w, &r.norm2_b, kEps, xn);
    Tensor hidden = backend_.empty({l, int64_t{kRefinerMlpRatio} * d}, act);
    linear(xn, r.fc1, hidden, Activation::Silu);
    linear(hidden, r.fc2, branch);
    backend_.add(x, branch, {&gates, 1});
  }
}

// MMDoubleStreamBlock.forward: each stream modulated by its own Linear(SiLU(vec)) (shift, scale,
// gate for the attention, then for the MLP); q and k RMS-normed per head; RoPE on the video's
// q and k; one attention over [video ; text side]; each stream's gated residual branches.
void HunyuanDiT::run_block(int index, Tensor& img, Tensor& txt, const Tensor& vec_act,
                           const RopeGrid& grid) {
  const Block& b = blocks_[static_cast<size_t>(index)];
  const int64_t n = img.dim(0), m = txt.dim(0), d = cfg_.hidden, heads = cfg_.heads,
                hd = cfg_.head_dim();
  const DType act = backend_.activation_dtype();
  const Modulation im = modulation(b.img.mod, vec_act, 6), tm = modulation(b.txt.mod, vec_act, 6);
  Tensor q = backend_.empty({n + m, d}, act), k = backend_.empty({n + m, d}, act),
         v = backend_.empty({n + m, d}, act);
  auto project = [&](const Stream& s, const Tensor& x, const Modulation& mod, int64_t row0,
                     int64_t rows, const RopeGrid* rope) {
    Tensor xn = backend_.empty({rows, d}, act);
    backend_.layer_norm(x, nullptr, nullptr, kEps, xn, {&mod, 0}, {&mod, 1});
    Tensor qs = q.slice_rows(row0, row0 + rows), ks = k.slice_rows(row0, row0 + rows),
           vs = v.slice_rows(row0, row0 + rows);
    const MatrixInput in = matrix_input(xn);
    block_linear(in, s.q, qs);
    block_linear(in, s.k, ks);
    block_linear(in, s.v, vs);
    head_norm(qs, s.q_norm);
    head_norm(ks, s.k_norm);
    if (rope) {
      Tensor q3 = qs.reshape({rows, heads, hd}), k3 = ks.reshape({rows, heads, hd});
      backend_.rope_3d(q3, *rope);
      backend_.rope_3d(k3, *rope);
    }
  };
  project(b.img, img, im, 0, n, &grid);
  project(b.txt, txt, tm, n, m, nullptr);
  Tensor o = backend_.empty({n + m, heads, hd}, act);
  if (precision_ == models::Precision::Fp8)
    backend_.attention_fp8(q.reshape({n + m, heads, hd}), k.reshape({n + m, heads, hd}),
                           v.reshape({n + m, heads, hd}), o);
  else
    backend_.attention(q.reshape({n + m, heads, hd}), k.reshape({n + m, heads, hd}),
                       v.reshape({n + m, heads, hd}), o);
  auto finish = [&](const Stream& s, Tensor& x, const Modulation& mod, int64_t row0, int64_t rows) {
    Tensor branch = backend_.empty({rows, d}, act);
    block_linear(matrix_input(o.slice_rows(row0, row0 + rows).reshape({rows, d})), s.proj, branch);
    backend_.add(x, branch, {&mod, 2});
    Tensor xn = backend_.empty({rows, d}, act);
    backend_.layer_norm(x, nullptr, nullptr, kEps, xn, {&mod, 3}, {&mod, 4});
    Tensor hidden = backend_.empty({rows, cfg_.mlp_dim()}, act);
    block_linear(matrix_input(xn), s.fc1, hidden, Activation::GeluTanh);
    block_linear(matrix_input(hidden), s.fc2, branch);
    backend_.add(x, branch, {&mod, 5});
  };
  finish(b.img, img, im, 0, n);
  finish(b.txt, txt, tm, n, m);
}

Tensor HunyuanDiT::forward(const Tensor& x, const models::Timestep& time,
                           const models::TextEmbedding& text, const models::ForwardOptions& o) {
  const int64_t d = cfg_.hidden;
  if (x.ndim() != 4 || x.dim(0) != cfg_.in_dim())
    throw Error("HunyuanVideo 1.5 DiT: the latent must be [" + std::to_string(cfg_.in_dim()) +
                ", F, H, W] (latent, condition latent, mask), got " + shape_str(x.shape()));
  if (!text.states.defined() || text.states.ndim() != 2 || text.states.dim(1) != d ||
      !text.extra.count("pooled"))
    throw Error("HunyuanVideo 1.5 DiT: the text embedding must come from its embed_text");
  const std::vector<float> tv = time.t.to_vector();
  if (tv.size() != 1 || !std::isfinite(tv[0]))
    throw Error("HunyuanVideo 1.5 DiT: the timestep t must be one finite value");
  if (time.r && !cfg_.meanflow)
    throw Error("HunyuanVideo 1.5 DiT: a MeanFlow r timestep given to a model without time_r_in");
  const int64_t gf = x.dim(1), gh = x.dim(2), gw = x.dim(3), tokens = gf * gh * gw;
  const accel::FisPlan* plan = o.plan;
  if (plan && plan->num_frames() != gf)
    throw Error("FIS plan is for " + std::to_string(plan->num_frames()) +
                " latent frames, the latent has " + std::to_string(gf));
  if (plan && plan->num_blocks() != cfg_.num_blocks)
    throw Error("FIS plan is for " + std::to_string(plan->num_blocks()) +
                " blocks, the model has " + std::to_string(cfg_.num_blocks));
  auto observe = [&](const std::string& name, const Tensor& dev) {
    if (o.observer) o.observer(name, backend_.download(dev));
  };

  // vec = time_in(t) (+ time_r_in(r)); the blocks and the final layer read SiLU(vec).
  Tensor vec = embed_time(time_in_, tv[0]);
  if (time.r) {
    if (!std::isfinite(*time.r)) throw Error("HunyuanVideo 1.5 DiT: r must be finite");
    backend_.add(vec, embed_time(time_r_in_, *time.r));
  }
  observe("vec", vec);
  Tensor vec_act = backend_.empty({1, d});
  backend_.activation(vec, vec_act, Activation::Silu);

  Tensor patches = backend_.empty({tokens, cfg_.in_dim()});
  backend_.patchify(x, cfg_.patch_size, patches);
  Tensor h = backend_.empty({tokens, d});
  linear(patches, img_in_, h);
  observe("x_embed", h);

  // The text side: [vision ; glyph] as embedded, then the prompt through the token refiner
  // (conditioned on its own timestep embedding plus the pooled prompt) and its type row.
  const auto side_it = text.extra.find("side");
  const int64_t ls = side_it == text.extra.end() ? 0 : side_it->second.dim(0);
  const int64_t lp = text.states.dim(0);
  Tensor txt = backend_.empty({ls + lp, d});
  if (ls) {
    Tensor rows = txt.slice_rows(0, ls);
    backend_.copy(side_it->second, rows);
  }
  Tensor prompt = txt.slice_rows(ls, ls + lp);
  backend_.copy(text.states, prompt);
  Tensor c = embed_time(refiner_time_, tv[0]);
  backend_.add(c, text.extra.at("pooled"));
  Tensor c_act = backend_.empty({1, d});
  backend_.activation(c, c_act, Activation::Silu);
  refine(prompt, c_act);
  observe("txt_refined", prompt);
  if (!cond_rows_.empty()) backend_.add_row(prompt, cond_rows_[0], prompt);
  observe("context", txt);

  RopeGrid grid{{}, static_cast<int>(gh), static_cast<int>(gw)};
  for (int64_t f = 0; f < gf; ++f) grid.frames.push_back(static_cast<int32_t>(f));
  grid.axis_pairs = {cfg_.rope_dims[0] / 2, cfg_.rope_dims[1] / 2, cfg_.rope_dims[2] / 2};
  grid.theta = cfg_.rope_theta;
  const int64_t per_frame = gh * gw;
  if (o.stack.apply) {  // MagCache skipped step: the cached residual stands in for every block
    const Tensor& r = *o.stack.apply;
    if (r.shape() != h.shape() || r.dtype() != DType::F32)
      throw Error("cached block-stack residual " + shape_str(r.shape()) + " does not fit " +
                  shape_str(h.shape()) + " F32");
    backend_.add(h, r);
  } else {
    Tensor h_in;
    if (o.stack.keep) {
      h_in = backend_.empty({tokens, d});
      backend_.copy(h, h_in);
    }
    for (int i = 0; i < cfg_.num_blocks; ++i) {
      const accel::BlockPlan bp = plan ? plan->plan_for(o.step_open, i) : accel::BlockPlan{};
      if (!bp.sparse) {
        run_block(i, h, txt, vec_act, grid);
      } else {
        // FIS.md, MMDiT: the video stream's block on the anchor frames (true positions), the
        // text side in full; the video update reconstructed for every frame.
        RopeGrid grid_a = grid;
        grid_a.frames = bp.anchors;
        Tensor xa = backend_.empty({static_cast<int64_t>(bp.anchors.size()) * per_frame, d});
        backend_.gather_frames(h, bp.anchors, per_frame, xa);
        run_block(i, xa, txt, vec_act, grid_a);
        const accel::FisConfig& fis = plan->config();
        if (fis.granularity == accel::Granularity::Block &&
            fis.reconstruct == accel::Reconstruct::Linear)
          backend_.interpolate_frames(xa, bp.anchors, per_frame, h, /*accumulate=*/false);
        else  // module granularity (exactly, as for Wan: models/wan/dit.cpp) or the delta operator
          backend_.reconstruct_frames_delta(xa, bp.anchors, per_frame, h);
      }
      if (o.observer) {
        observe("block_" + std::to_string(i), h);
        observe("txt_block_" + std::to_string(i), txt);
      }
    }
    if (o.stack.keep) {
      Tensor& keep = *o.stack.keep;
      if (!keep.defined() || keep.shape() != h.shape() || keep.dtype() != DType::F32 ||
          keep.device() != h.device())
        keep = backend_.empty({tokens, d});
      backend_.sub(h, h_in, keep);
    }
  }

  // FinalLayer: shift, scale = Linear(SiLU(vec)) (shift first); Linear(LN(x) * (1 + scale) +
  // shift).
  const Modulation fm = modulation(final_mod_, vec_act, 2);
  Tensor hn = backend_.empty({tokens, d});
  backend_.layer_norm(h, nullptr, nullptr, kEps, hn, {&fm, 0}, {&fm, 1});
  Tensor head_out = backend_.empty({tokens, final_linear_.w.dim(0)});
  linear(hn, final_linear_, head_out);
  observe("head_out", head_out);
  Tensor out = backend_.empty({cfg_.out_channels, gf, gh, gw});
  backend_.unpatchify(head_out, cfg_.patch_size, gf, gh, gw, out);
  return out;
}

}  // namespace fisdit::hunyuan15
