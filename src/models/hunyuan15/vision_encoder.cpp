#include "models/hunyuan15/vision_encoder.h"

#include <cstring>
#include <filesystem>

#include "core/dtype.h"
#include "fisdit/error.h"
#include "models/hunyuan15/config.h"
#include "models/weights.h"

namespace fisdit::hunyuan15 {

void SiglipConfig::validate(const std::string& where) const {
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) throw Error(where + ": " + what);
  };
  need(hidden > 0 && intermediate > 0 && layers > 0 && heads > 0, "sizes must be positive");
  need(hidden % heads == 0, "hidden_size " + std::to_string(hidden) + " does not split into " +
                                std::to_string(heads) + " heads");
  need(patch_size > 0 && image_size >= patch_size, "image_size " + std::to_string(image_size) +
                                                       " must hold a patch of " +
                                                       std::to_string(patch_size));
  need(eps > 0.0, "layer_norm_eps must be > 0");
}

SiglipConfig siglip_config_from_json(const nlohmann::json& root, const std::string& where) {
  if (!root.is_object()) throw Error(where + ": the config is not a JSON object");
  const nlohmann::json& j = root.contains("vision_config") && root["vision_config"].is_object()
                                ? root["vision_config"]
                                : root;
  SiglipConfig c;
  auto read = [&](const char* key, auto& value) { read_field(j, key, value, where); };
  read("hidden_size", c.hidden);
  read("intermediate_size", c.intermediate);
  read("num_hidden_layers", c.layers);
  read("num_attention_heads", c.heads);
  read("image_size", c.image_size);
  read("patch_size", c.patch_size);
  read("layer_norm_eps", c.eps);
  if (j.contains("hidden_act") && j["hidden_act"] != "gelu_pytorch_tanh")
    throw Error(where + ": hidden_act " + j["hidden_act"].dump() +
                " is not supported (SigLIP uses gelu_pytorch_tanh)");
  if (j.contains("num_channels") && j["num_channels"] != 3)
    throw Error(where + ": num_channels must be 3");
  c.validate(where);
  return c;
}

SiglipEncoder::SiglipEncoder(SiglipConfig cfg, const Checkpoint& ck, const std::string& prefix,
                             Backend& backend)
    : cfg_(cfg), backend_(backend) {
  cfg_.validate("SigLIP config");
  const DType wt = backend_.weight_dtype();
  const WeightSource weights(ck, [&prefix](const std::string& c) { return prefix + c; });
  auto get = [&](const std::string& name, const Shape& shape, DType dtype) {
    return models::load_weight(weights, name, shape, backend_, dtype);
  };
  const int64_t d = cfg_.hidden, ff = cfg_.intermediate, p = cfg_.patch_size;
  patch_w_ = get("embeddings.patch_embedding.weight", {d, 3, p, p}, wt).reshape({d, 3 * p * p});
  patch_b_ = get("embeddings.patch_embedding.bias", {d}, wt);
  pos_ = get("embeddings.position_embedding.weight", {cfg_.tokens(), d}, DType::F32);
  for (int i = 0; i < cfg_.layers; ++i) {
    const std::string b = "encoder.layers." + std::to_string(i) + ".";
    Layer l;
    l.ln1_w = get(b + "layer_norm1.weight", {d}, DType::F32);
    l.ln1_b = get(b + "layer_norm1.bias", {d}, DType::F32);
    l.q = get(b + "self_attn.q_proj.weight", {d, d}, wt);
    l.q_b = get(b + "self_attn.q_proj.bias", {d}, wt);
    l.k = get(b + "self_attn.k_proj.weight", {d, d}, wt);
    l.k_b = get(b + "self_attn.k_proj.bias", {d}, wt);
    l.v = get(b + "self_attn.v_proj.weight", {d, d}, wt);
    l.v_b = get(b + "self_attn.v_proj.bias", {d}, wt);
    l.o = get(b + "self_attn.out_proj.weight", {d, d}, wt);
    l.o_b = get(b + "self_attn.out_proj.bias", {d}, wt);
    l.ln2_w = get(b + "layer_norm2.weight", {d}, DType::F32);
    l.ln2_b = get(b + "layer_norm2.bias", {d}, DType::F32);
    l.fc1 = get(b + "mlp.fc1.weight", {ff, d}, wt);
    l.fc1_b = get(b + "mlp.fc1.bias", {ff}, wt);
    l.fc2 = get(b + "mlp.fc2.weight", {d, ff}, wt);
    l.fc2_b = get(b + "mlp.fc2.bias", {d}, wt);
    layers_.push_back(std::move(l));
  }
  post_w_ = get("post_layernorm.weight", {d}, DType::F32);
  post_b_ = get("post_layernorm.bias", {d}, DType::F32);
}

SiglipEncoder::~SiglipEncoder() = default;

Tensor SiglipEncoder::encode(const Tensor& pixels, const SiglipObserver& observer) {
  const int64_t s = cfg_.image_size, d = cfg_.hidden, n = cfg_.tokens(), heads = cfg_.heads,
                hd = cfg_.head_dim(), p = cfg_.patch_size;
  if (pixels.shape() != Shape{3, s, s})
    throw Error("image encoder: expects pixels [3, " + std::to_string(s) + ", " +
                std::to_string(s) + "], got " + shape_str(pixels.shape()));
  Backend& be = backend_;
  const DType act = be.activation_dtype();
  const float eps = static_cast<float>(cfg_.eps);
  // The strided convolution: patch vectors ordered (c, i, j) as the weight flattens, then a
  // matrix product. Pixels past the last whole patch are never read (384 = 27 * 14 + 6).
  const int64_t g = cfg_.grid() * p;
  Tensor used = pixels;
  if (g != s) {
    used = Tensor::zeros({3, g, g});
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < g; ++y)
        std::memcpy(used.f32() + (c * g + y) * g, pixels.f32() + (c * s + y) * s,
                    static_cast<size_t>(g) * sizeof(float));
  }
  const Tensor img = be.upload(used.reshape({3, 1, g, g}), DType::F32);
  Tensor patches = be.empty({n, 3 * p * p}, DType::F32);
  be.patchify(img, {1, static_cast<int>(p), static_cast<int>(p)}, patches);
  Tensor x = be.empty({n, d}, DType::F32);
  be.linear(patches, patch_w_, &patch_b_, x);
  be.add(x, pos_);
  if (observer) observer("embedding", be.download(x));

  Tensor xn = be.empty({n, d}, act), q = be.empty({n, d}, act), k = be.empty({n, d}, act),
         v = be.empty({n, d}, act), o = be.empty({n, heads, hd}, act),
         branch = be.empty({n, d}, act), hidden = be.empty({n, cfg_.intermediate}, act);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    be.layer_norm(x, &l.ln1_w, &l.ln1_b, eps, xn);
    be.linear(xn, l.q, &l.q_b, q);
    be.linear(xn, l.k, &l.k_b, k);
    be.linear(xn, l.v, &l.v_b, v);
    be.attention(q.reshape({n, heads, hd}), k.reshape({n, heads, hd}), v.reshape({n, heads, hd}),
                 o);
    be.linear(o.reshape({n, d}), l.o, &l.o_b, branch);
    be.add(x, branch);
    be.layer_norm(x, &l.ln2_w, &l.ln2_b, eps, xn);
    be.linear(xn, l.fc1, &l.fc1_b, hidden, Activation::GeluTanh);
    be.linear(hidden, l.fc2, &l.fc2_b, branch);
    be.add(x, branch);
    if (observer) observer("layer_" + std::to_string(i), be.download(x));
  }
  Tensor out = be.empty({n, d}, DType::F32);
  be.layer_norm(x, &post_w_, &post_b_, eps, out);
  return be.download(out);
}

std::optional<SiglipSource> find_siglip(const std::string& path) {
  namespace fs = std::filesystem;
  // The released vision_encoder/siglip folder keeps the model in image_encoder/.
  std::string where = path;
  if (fs::is_directory(path) && fs::is_directory(fs::path(path) / "image_encoder"))
    where = (fs::path(path) / "image_encoder").string();
  SiglipSource src{Checkpoint::open(where), "", {}, ""};
  const auto prefix = shortest_prefix(src.checkpoint.names(), "embeddings.patch_embedding.weight");
  if (!prefix || !src.checkpoint.contains(*prefix + "encoder.layers.0.self_attn.q_proj.weight"))
    return std::nullopt;
  src.prefix = *prefix;
  if (auto j = src.checkpoint.config_json()) {
    src.config = siglip_config_from_json(*j, *src.checkpoint.config_path());
    src.config_origin = "config.json";
  } else if (auto m = metadata_config(src.checkpoint); m && m->contains("constructor")) {
    src.config = siglip_config_from_json(m->at("constructor"), where + " (metadata)");
    src.config_origin = "file metadata";
  } else {
    SiglipConfig c;
    const TensorInfo* w = src.checkpoint.find(src.prefix + "embeddings.patch_embedding.weight");
    const TensorInfo* pos =
        src.checkpoint.find(src.prefix + "embeddings.position_embedding.weight");
    const TensorInfo* fc1 = src.checkpoint.find(src.prefix + "encoder.layers.0.mlp.fc1.weight");
    if (w->shape.size() != 4 || !pos || pos->shape.size() != 2 || !fc1 || fc1->shape.size() != 2)
      throw Error(where + ": cannot read the image encoder's sizes from its tensors");
    c.hidden = w->shape[0];
    c.patch_size = static_cast<int>(w->shape[2]);
    int64_t grid = 0;
    while ((grid + 1) * (grid + 1) <= pos->shape[0]) ++grid;
    c.image_size = static_cast<int>(grid * c.patch_size);
    c.intermediate = fc1->shape[0];
    c.heads = static_cast<int>(c.hidden / 72);
    c.layers = 0;
    while (src.checkpoint.contains(src.prefix + "encoder.layers." + std::to_string(c.layers) +
                                   ".self_attn.q_proj.weight"))
      ++c.layers;
    c.validate(where + " (sizes read from the tensors)");
    src.config = c;
    src.config_origin = "tensor shapes";
  }
  return src;
}

SiglipSource open_siglip(const std::string& path) {
  std::optional<SiglipSource> src = find_siglip(path);
  if (!src)
    throw Error(path +
                ": no SigLIP image encoder here (looked for 'embeddings.patch_embedding.weight' "
                "beside 'encoder.layers.0.self_attn.q_proj.weight' under any prefix, as in the "
                "vision_encoder/siglip/image_encoder folder of the HunyuanVideo 1.5 download)");
  return std::move(*src);
}

std::unique_ptr<SiglipEncoder> load_siglip(const SiglipSource& src, Backend& backend) {
  return std::make_unique<SiglipEncoder>(src.config, src.checkpoint, src.prefix, backend);
}

}  // namespace fisdit::hunyuan15
