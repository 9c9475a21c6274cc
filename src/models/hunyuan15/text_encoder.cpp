#include "models/hunyuan15/text_encoder.h"

#include <cstring>

#include "core/dtype.h"
#include "fisdit/error.h"
#include "models/hunyuan15/config.h"
#include "models/weights.h"

namespace fisdit::hunyuan15 {

void QwenTextConfig::validate(const std::string& where) const {
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) throw Error(where + ": " + what);
  };
  need(vocab > 0 && hidden > 0 && intermediate > 0 && layers > 0, "sizes must be positive");
  need(heads > 0 && kv_heads > 0 && heads % kv_heads == 0,
       "num_attention_heads (" + std::to_string(heads) +
           ") must be a positive multiple of num_key_value_heads (" + std::to_string(kv_heads) +
           ")");
  need(hidden % heads == 0 && head_dim() % 2 == 0, "hidden_size " + std::to_string(hidden) +
                                                       " must split into " + std::to_string(heads) +
                                                       " heads of an even size");
  need(skip_layers >= 0 && skip_layers < layers,
       "the hidden state skip (" + std::to_string(skip_layers) + ") must be below the " +
           std::to_string(layers) + " layers");
  need(rope_theta > 1.0 && rms_eps > 0.0, "rope_theta must be > 1 and rms_norm_eps > 0");
}

QwenTextConfig qwen_text_config_from_json(const nlohmann::json& root, const std::string& where) {
  if (!root.is_object()) throw Error(where + ": the config is not a JSON object");
  // Newer transformers nest the language model's keys under text_config; older files (the
  // released Qwen2.5-VL-7B-Instruct) keep them at the top level.
  const nlohmann::json& j =
      root.contains("text_config") && root["text_config"].is_object() ? root["text_config"] : root;
  QwenTextConfig c;
  // A key text_config lacks may stand at the top level.
  auto read = [&](const char* key, auto& value) {
    read_field(j.contains(key) ? j : root, key, value, where);
  };
  read("vocab_size", c.vocab);
  read("hidden_size", c.hidden);
  read("intermediate_size", c.intermediate);
  read("num_hidden_layers", c.layers);
  read("num_attention_heads", c.heads);
  read("num_key_value_heads", c.kv_heads);
  read("rms_norm_eps", c.rms_eps);
  read("rope_theta", c.rope_theta);
  for (const nlohmann::json* o : {&j, &root})
    if (o->contains("rope_parameters") && (*o)["rope_parameters"].is_object() &&
        (*o)["rope_parameters"].contains("rope_theta"))
      c.rope_theta = (*o)["rope_parameters"]["rope_theta"].get<double>();
  c.validate(where);
  return c;
}

namespace {
// The stored rows of a [heads * head_dim, ...] projection (weight or bias) reordered per head from
// rotate_half's halves to adjacent pairs: new channel 2j <- old j, 2j + 1 <- old j + head_dim / 2.
// Byte moves of whole rows, no rounding.
Tensor pair_rows(const Tensor& stored, int64_t head_dim) {
  const int64_t rows = stored.dim(0), heads = rows / head_dim, half = head_dim / 2;
  const size_t row_bytes = stored.nbytes() / static_cast<size_t>(rows);
  Tensor out = Tensor::zeros(stored.shape(), stored.dtype());
  const auto* src = static_cast<const char*>(stored.raw());
  auto* dst = static_cast<char*>(out.raw());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t j = 0; j < half; ++j)
      for (int64_t side = 0; side < 2; ++side) {
        const int64_t from = h * head_dim + j + side * half, to = h * head_dim + 2 * j + side;
        std::memcpy(dst + static_cast<size_t>(to) * row_bytes,
                    src + static_cast<size_t>(from) * row_bytes, row_bytes);
      }
  return out;
}
}  // namespace

struct QwenTextEncoder::Layer {
  Tensor in_norm, q, q_bias, k, k_bias, v, v_bias, o, post_norm, gate, up, down;
};

struct QwenTextEncoder::DeviceLayer {
  Tensor in_norm, q, q_bias, k, k_bias, v, v_bias, o, post_norm, gate, up, down;
};

QwenTextEncoder::QwenTextEncoder(QwenTextConfig cfg, Checkpoint checkpoint, std::string prefix,
                                 Backend& backend)
    : cfg_(cfg), checkpoint_(std::move(checkpoint)), prefix_(std::move(prefix)), backend_(backend) {
  cfg_.validate("Qwen2.5-VL text config");
  // Named as the released files name them, under `prefix_`; missing or misshaped tensors are
  // errors naming both names (WeightSource). A view of the file, as stored.
  const WeightSource weights(checkpoint_, [this](const std::string& c) { return prefix_ + c; });
  auto get = [&](const std::string& name, const Shape& shape) {
    float scale = 1.0f;
    Tensor t = weights.get_stored(name, shape, scale);
    if (scale != 1.0f)
      throw Error(checkpoint_.path() + ": text encoder tensor '" + prefix_ + name +
                  "' is a scaled fp8 weight, which the text encoder does not read");
    return t;
  };
  const int64_t d = cfg_.hidden, hd = cfg_.head_dim(), ff = cfg_.intermediate;
  const int64_t qd = cfg_.heads * hd, kvd = cfg_.kv_heads * hd;
  embed_ = get("embed_tokens.weight", {cfg_.vocab, d});
  for (int i = 0; i < cfg_.layers_run(); ++i) {
    const std::string b = "layers." + std::to_string(i) + ".";
    Layer l;
    l.in_norm = get(b + "input_layernorm.weight", {d});
    l.q = get(b + "self_attn.q_proj.weight", {qd, d});
    l.q_bias = get(b + "self_attn.q_proj.bias", {qd});
    l.k = get(b + "self_attn.k_proj.weight", {kvd, d});
    l.k_bias = get(b + "self_attn.k_proj.bias", {kvd});
    l.v = get(b + "self_attn.v_proj.weight", {kvd, d});
    l.v_bias = get(b + "self_attn.v_proj.bias", {kvd});
    l.o = get(b + "self_attn.o_proj.weight", {d, qd});
    l.post_norm = get(b + "post_attention_layernorm.weight", {d});
    l.gate = get(b + "mlp.gate_proj.weight", {ff, d});
    l.up = get(b + "mlp.up_proj.weight", {ff, d});
    l.down = get(b + "mlp.down_proj.weight", {d, ff});
    layers_.push_back(std::move(l));
  }
}

QwenTextEncoder::~QwenTextEncoder() = default;

void QwenTextEncoder::set_resident(bool resident) {
  resident_ = resident;
  if (!resident_) on_device_.clear();
}

QwenTextEncoder::DeviceLayer QwenTextEncoder::upload_layer(int index) const {
  const Layer& s = layers_[static_cast<size_t>(index)];
  const DType wt = backend_.weight_dtype();
  auto matrix = [&](const Tensor& t) { return models::upload_weight(t, 1.0f, backend_, wt); };
  auto vec = [&](const Tensor& t) { return models::upload_weight(t, 1.0f, backend_, DType::F32); };
  // q and k in adjacent-pair order (pair_rows), reordered here so the host keeps file views only.
  auto paired = [&](const Tensor& t) { return matrix(pair_rows(t, cfg_.head_dim())); };
  DeviceLayer l;
  l.in_norm = vec(s.in_norm);
  l.q = paired(s.q);
  l.q_bias = paired(s.q_bias);
  l.k = paired(s.k);
  l.k_bias = paired(s.k_bias);
  l.v = matrix(s.v);
  l.v_bias = matrix(s.v_bias);
  l.o = matrix(s.o);
  l.post_norm = vec(s.post_norm);
  l.gate = matrix(s.gate);
  l.up = matrix(s.up);
  l.down = matrix(s.down);
  return l;
}

Tensor QwenTextEncoder::encode(const std::vector<int32_t>& ids, const QwenObserver& observer) {
  const int64_t n = static_cast<int64_t>(ids.size()), d = cfg_.hidden;
  if (n == 0) throw Error("text encoder: no tokens to encode");
  for (int64_t i = 0; i < n; ++i)
    if (ids[static_cast<size_t>(i)] < 0 || ids[static_cast<size_t>(i)] >= cfg_.vocab)
      throw Error("text encoder: token " + std::to_string(i) + " has id " +
                  std::to_string(ids[static_cast<size_t>(i)]) + ", outside the vocabulary of " +
                  std::to_string(cfg_.vocab));
  // The embedding rows, widened on the host (fp32 for the residual stream).
  Tensor x_host = Tensor::zeros({n, d});
  for (int64_t i = 0; i < n; ++i) {
    const Tensor row =
        embed_.slice_rows(ids[static_cast<size_t>(i)], ids[static_cast<size_t>(i)] + 1).to_f32();
    std::memcpy(x_host.f32() + i * d, row.f32(), static_cast<size_t>(d) * sizeof(float));
  }
  if (observer) observer("embedding", x_host);
  Backend& be = backend_;
  Tensor x = be.upload(x_host, DType::F32);

  const DType act = be.activation_dtype();
  const int64_t heads = cfg_.heads, kvh = cfg_.kv_heads, hd = cfg_.head_dim();
  const float eps = static_cast<float>(cfg_.rms_eps);
  // Token i at position i: one frame, one row, n columns, every pair on the column axis (a
  // frame list is short on the GPU; a row of columns has no such limit).
  RopeGrid grid;
  grid.frames = {0};
  grid.height = 1;
  grid.width = static_cast<int>(n);
  grid.axis_pairs = {0, 0, static_cast<int>(hd / 2)};
  grid.theta = cfg_.rope_theta;

  Tensor xn = be.empty({n, d}, act), branch = be.empty({n, d}, act);
  Tensor q = be.empty({n, heads * hd}, act), k = be.empty({n, kvh * hd}, act),
         v = be.empty({n, kvh * hd}, act), o = be.empty({n, heads, hd}, act);
  Tensor gate = be.empty({n, cfg_.intermediate}, act), up = be.empty({n, cfg_.intermediate}, act);
  for (int i = 0; i < cfg_.layers_run(); ++i) {
    DeviceLayer streamed;
    if (!resident_ || static_cast<size_t>(i) >= on_device_.size()) streamed = upload_layer(i);
    if (resident_ && static_cast<size_t>(i) >= on_device_.size())
      on_device_.push_back(std::move(streamed));
    const DeviceLayer& w = resident_ ? on_device_[static_cast<size_t>(i)] : streamed;
    // Qwen2_5_VLDecoderLayer.forward: the attention block, then the MLP block.
    be.rms_norm(x, w.in_norm, eps, xn);
    be.linear(xn, w.q, &w.q_bias, q);
    be.linear(xn, w.k, &w.k_bias, k);
    be.linear(xn, w.v, &w.v_bias, v);
    Tensor q3 = q.reshape({n, heads, hd}), k3 = k.reshape({n, kvh, hd});
    be.rope_3d(q3, grid);
    be.rope_3d(k3, grid);
    be.causal_attention(q3, k3, v.reshape({n, kvh, hd}), o);
    be.linear(o.reshape({n, heads * hd}), w.o, nullptr, branch);
    be.add(x, branch);
    be.rms_norm(x, w.post_norm, eps, xn);
    be.linear(xn, w.gate, nullptr, gate, Activation::Silu);
    be.linear(xn, w.up, nullptr, up);
    be.mul(up, gate);
    be.linear(up, w.down, nullptr, branch);
    be.add(x, branch);
    if (observer) observer("layer_" + std::to_string(i), be.download(x));
  }
  return be.download(x);
}

QwenTextSource open_qwen_text(const std::string& path) {
  std::optional<QwenTextSource> src = find_qwen_text(path);
  if (!src)
    throw Error(path +
                ": no Qwen2.5-VL language model here (looked for 'embed_tokens.weight' beside "
                "'layers.0.self_attn.q_proj.weight' under any prefix, as in the text_encoder/llm "
                "folder of the HunyuanVideo 1.5 download)");
  return std::move(*src);
}

std::optional<QwenTextSource> find_qwen_text(const std::string& path) {
  QwenTextSource src{Checkpoint::open(path), "", {}, ""};
  const std::vector<std::string> names = src.checkpoint.names();
  // The shortest prefix holding the layers (the released files also hold "visual." and
  // "lm_head."; a fixture may hold the language model alone).
  const auto prefix = shortest_prefix(names, "layers.0.self_attn.q_proj.weight");
  if (!prefix || !src.checkpoint.contains(*prefix + "embed_tokens.weight")) return std::nullopt;
  src.prefix = *prefix;
  if (auto j = src.checkpoint.config_json()) {
    src.config = qwen_text_config_from_json(*j, *src.checkpoint.config_path());
    src.config_origin = "config.json";
  } else if (auto m = metadata_config(src.checkpoint); m && m->contains("constructor")) {
    src.config = qwen_text_config_from_json(m->at("constructor"), path + " (metadata)");
    src.config_origin = "file metadata";
  } else {
    // From the shapes: Qwen2.5's head_dim is 128 at every size.
    QwenTextConfig c;
    const TensorInfo* emb = src.checkpoint.find(src.prefix + "embed_tokens.weight");
    const TensorInfo* k = src.checkpoint.find(src.prefix + "layers.0.self_attn.k_proj.weight");
    const TensorInfo* g = src.checkpoint.find(src.prefix + "layers.0.mlp.gate_proj.weight");
    if (emb->shape.size() != 2 || !k || k->shape.size() != 2 || !g || g->shape.size() != 2)
      throw Error(path + ": cannot read the text encoder's sizes from its tensors");
    c.vocab = emb->shape[0];
    c.hidden = emb->shape[1];
    c.intermediate = g->shape[0];
    c.heads = static_cast<int>(c.hidden / 128);
    c.kv_heads = static_cast<int>(k->shape[0] / 128);
    c.layers = 0;
    while (src.checkpoint.contains(src.prefix + "layers." + std::to_string(c.layers) +
                                   ".self_attn.q_proj.weight"))
      ++c.layers;
    c.validate(path + " (sizes read from the tensors)");
    src.config = c;
    src.config_origin = "tensor shapes";
  }
  return src;
}

std::unique_ptr<QwenTextEncoder> load_qwen_text(const QwenTextSource& src, Backend& backend) {
  return std::make_unique<QwenTextEncoder>(src.config, src.checkpoint, src.prefix, backend);
}

}  // namespace fisdit::hunyuan15
