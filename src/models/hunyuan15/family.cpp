#include "models/hunyuan15/family.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>

#include "fisdit/error.h"
#include "io/weights.h"
#include "models/weights.h"

namespace fisdit::hunyuan15 {

namespace {
constexpr const char* kMarker = "img_in.proj.weight";
constexpr const char* kBlockMarker = "double_blocks.0.img_attn_q.weight";

// The prefix before the official names, or nullopt when the checkpoint holds no HunyuanVideo
// 1.5 DiT (its patch embedding and a double-stream block's q projection).
std::optional<std::string> find_prefix(const Checkpoint& ckpt) {
  for (const std::string& name : ckpt.names()) {
    const std::string marker = kMarker;
    if (name.size() < marker.size() ||
        name.compare(name.size() - marker.size(), marker.size(), marker) != 0)
      continue;
    const std::string prefix = name.substr(0, name.size() - marker.size());
    if (!prefix.empty() && prefix.back() != '.') continue;
    if (ckpt.contains(prefix + kBlockMarker)) return prefix;
  }
  return std::nullopt;
}

// What the tensor shapes say, over `c`.
HunyuanConfig config_from_shapes(const Checkpoint& ckpt, const std::string& prefix,
                                 HunyuanConfig c) {
  auto shape = [&](const std::string& name) -> const Shape* {
    const TensorInfo* info = ckpt.find(prefix + name);
    return info ? &info->shape : nullptr;
  };
  if (const Shape* s = shape(kMarker); s && s->size() == 5) {
    c.hidden = static_cast<int>((*s)[0]);
    const int in = static_cast<int>((*s)[1]);
    c.concat_condition = in % 2 == 1;
    c.latent_channels = c.concat_condition ? (in - 1) / 2 : in;
    c.patch_size = {static_cast<int>((*s)[2]), static_cast<int>((*s)[3]),
                    static_cast<int>((*s)[4])};
  }
  if (const Shape* s = shape("double_blocks.0.img_attn_q_norm.weight"); s && s->size() == 1)
    c.heads = c.hidden / static_cast<int>((*s)[0]);
  if (const Shape* s = shape("double_blocks.0.img_mlp.fc1.weight"); s && s->size() == 2)
    c.mlp_ratio = static_cast<double>((*s)[0]) / c.hidden;
  if (const Shape* s = shape("final_layer.linear.weight"); s && s->size() == 2)
    c.out_channels =
        static_cast<int>((*s)[0]) / (c.patch_size[0] * c.patch_size[1] * c.patch_size[2]);
  if (const Shape* s = shape("txt_in.input_embedder.weight"); s && s->size() == 2)
    c.text_dim = static_cast<int>((*s)[1]);
  // Blocks: double_blocks.<i>. and the refiner's.
  int n = 0;
  while (ckpt.contains(prefix + "double_blocks." + std::to_string(n) + ".img_attn_q.weight")) ++n;
  c.num_blocks = n;
  n = 0;
  while (ckpt.contains(prefix + "txt_in.individual_token_refiner.blocks." + std::to_string(n) +
                       ".norm1.weight"))
    ++n;
  c.refiner_blocks = n;
  c.meanflow = ckpt.contains(prefix + "time_r_in.mlp.0.weight");
  c.glyph = ckpt.contains(prefix + "byt5_in.fc1.weight");
  if (c.glyph) {
    const Shape* f1 = shape("byt5_in.fc1.weight");
    const Shape* f2 = shape("byt5_in.fc2.weight");
    if (f1 && f2 && f1->size() == 2 && f2->size() == 2)
      c.byt5_dims = {static_cast<int>((*f1)[1]), static_cast<int>((*f1)[0]),
                     static_cast<int>((*f2)[0])};
  }
  const Shape* v = shape("vision_in.proj.1.weight");
  c.vision_dim = v && v->size() == 2 ? static_cast<int>((*v)[1]) : 0;
  c.cond_type_embedding = ckpt.contains(prefix + "cond_type_embedding.weight");
  // rope_dim_list is not in the shapes: the released split for head_dim 128, else thirds.
  const int hd = c.head_dim();
  if (hd != 128) {
    const int axis = hd / 6 * 2;
    c.rope_dims = {hd - 2 * axis, axis, axis};
  }
  return c;
}
}  // namespace

ModelSource open_model(const std::string& path) {
  Checkpoint ckpt = Checkpoint::open(path);
  const std::optional<std::string> prefix = find_prefix(ckpt);
  if (!prefix)
    throw Error(path + ": not a HunyuanVideo 1.5 DiT (no '" + std::string(kMarker) + "' with '" +
                kBlockMarker + "')");
  std::optional<nlohmann::json> j = ckpt.config_json();
  std::string origin;
  if (j) {
    origin = ckpt.config_path().value_or("config.json");
  } else if (ckpt.files().size() == 1) {
    const auto& meta = ckpt.files()[0]->metadata();
    if (const auto it = meta.find("config"); it != meta.end()) {
      try {
        j = nlohmann::json::parse(it->second);
      } catch (const nlohmann::json::exception& e) {
        throw Error(path + ": the metadata 'config' is not JSON: " + e.what());
      }
      origin = "file metadata";
    }
  }
  const HunyuanConfig shapes = config_from_shapes(ckpt, *prefix, {});
  HunyuanConfig cfg;
  if (j) {
    cfg = config_from_json(*j, origin);
    // The config must describe these tensors.
    auto agree = [&](const char* key, double from_config, double from_shapes) {
      if (from_config != from_shapes)
        throw Error(origin + ": " + key + " is " + std::to_string(from_config) +
                    " but the tensors say " + std::to_string(from_shapes));
    };
    agree("hidden_size", cfg.hidden, shapes.hidden);
    agree("heads_num", cfg.heads, shapes.heads);
    agree("in_channels", cfg.latent_channels, shapes.latent_channels);
    agree("mm_double_blocks_depth", cfg.num_blocks, shapes.num_blocks);
    agree("mlp_width_ratio", cfg.mlp_ratio, shapes.mlp_ratio);
    agree("text_states_dim", cfg.text_dim, shapes.text_dim);
    agree("use_meanflow", cfg.meanflow, shapes.meanflow);
    agree("vision_states_dim", cfg.vision_dim, shapes.vision_dim);
    cfg.refiner_blocks = shapes.refiner_blocks;
    if (cfg.glyph) cfg.byt5_dims = shapes.byt5_dims;
  } else {
    origin = "tensor shapes";
    cfg = shapes;
  }
  cfg.validate(origin);
  return ModelSource{std::move(ckpt), *prefix, std::move(cfg), std::move(origin)};
}

std::vector<std::string> check_model(const ModelSource& src) {
  std::vector<std::string> problems;
  for (const auto& [name, shape] : dit_parameter_shapes(src.config)) {
    const std::string stored = src.prefix + name;
    const TensorInfo* info = src.checkpoint.find(stored);
    if (!info)
      problems.push_back("missing '" + stored + "'");
    else if (info->shape != shape)
      problems.push_back("'" + stored + "' has shape " + shape_str(info->shape) + ", expected " +
                         shape_str(shape));
    else if (!is_float(info->dtype))
      problems.push_back("'" + stored + "' has non-float dtype " +
                         std::string(dtype_name(info->dtype)));
  }
  return problems;
}

std::unique_ptr<HunyuanDiT> load_dit(const ModelSource& src, Backend& backend) {
  const std::string prefix = src.prefix;
  const WeightSource weights(src.checkpoint,
                             [prefix](const std::string& canonical) { return prefix + canonical; });
  return std::make_unique<HunyuanDiT>(
      src.config, backend, [&](const std::string& name, const Shape& shape) -> Tensor {
        // The fused refiner qkv (split on the host) and the condition-type table stay on the
        // host; the rest goes where and as HunyuanDiT keeps it.
        if (name.find("self_attn_qkv") != std::string::npos || name == "cond_type_embedding.weight")
          return models::host_weight(weights, name, shape);
        return models::load_weight(weights, name, shape, backend, backend.weight_dtype());
      });
}

namespace {

std::vector<std::string> config_names() { return preset_config_names(); }

models::ModelInfo config_info(const std::string& name_or_path) {
  return model_info(load_config(name_or_path));
}

bool recognizes(const Checkpoint& checkpoint, std::string* why_not) {
  if (find_prefix(checkpoint)) return true;
  if (why_not)
    *why_not = checkpoint.path() + ": not a HunyuanVideo 1.5 DiT (no '" + kMarker + "' with '" +
               kBlockMarker + "')";
  return false;
}

models::ModelInfo probe(const std::string& path) { return model_info(open_model(path).config); }

std::vector<std::string> explain(const std::string& path) {
  std::vector<std::string> lines;
  char line[512];
  try {
    const ModelSource src = open_model(path);
    const HunyuanConfig& c = src.config;
    lines.push_back("family       hunyuan15");
    lines.push_back("layout       official" +
                    (src.prefix.empty() ? "" : ", prefix '" + src.prefix + "'"));
    lines.push_back("config       " + std::string(models::task_name(c.task)) +
                    (c.meanflow ? ", MeanFlow (step-distilled)" : "") + " (from " +
                    src.config_origin + ")");
    std::snprintf(line, sizeof line,
                  "  hidden %d, heads %d (head_dim %d), mlp %d, double blocks %d, refiner %d",
                  c.hidden, c.heads, c.head_dim(), c.mlp_dim(), c.num_blocks, c.refiner_blocks);
    lines.push_back(line);
    std::snprintf(line, sizeof line,
                  "  latent %d (+%d condition), out %d, text_dim %d, byT5 %s, vision %d, rope "
                  "%d/%d/%d theta %g",
                  c.latent_channels, c.in_dim() - c.latent_channels, c.out_channels, c.text_dim,
                  c.glyph ? "yes" : "no", c.vision_dim, c.rope_dims[0], c.rope_dims[1],
                  c.rope_dims[2], c.rope_theta);
    lines.push_back(line);
    const std::vector<std::string> problems = check_model(src);
    if (problems.empty()) {
      lines.push_back("loadable     yes: every tensor of the DiT is present with its shape");
    } else {
      lines.push_back("loadable     no: " + std::to_string(problems.size()) + " problem(s)");
      for (size_t i = 0; i < problems.size() && i < 50; ++i) lines.push_back("  " + problems[i]);
      if (problems.size() > 50)
        lines.push_back("  ... and " + std::to_string(problems.size() - 50) + " more");
    }
  } catch (const Error& e) {
    lines.push_back(std::string("loadable     no: ") + e.what());
  }
  return lines;
}

std::unique_ptr<models::VelocityModel> load(const std::string& path, Backend& backend,
                                            const std::vector<LoraSpec>& loras,
                                            std::vector<std::string>* report,
                                            models::Precision precision) {
  if (!loras.empty()) throw ParamError("lora", ": LoRAs are not supported for HunyuanVideo 1.5");
  if (precision != models::Precision::Default)
    throw ParamError("precision", ": HunyuanVideo 1.5 runs in bf16 only for now");
  const ModelSource src = open_model(path);
  auto dit = load_dit(src, backend);
  if (report)
    report->push_back(std::string("hunyuan15 ") + models::task_name(src.config.task) +
                      (src.config.meanflow ? " (MeanFlow)" : "") + ", " +
                      std::to_string(src.config.num_blocks) + " double-stream blocks, hidden " +
                      std::to_string(src.config.hidden) + " (config from " + src.config_origin +
                      ")");
  return dit;
}

// Random weights of the real shapes where the backend keeps them: matrices N(0, 1/fan_in),
// biases N(0, 0.1^2), norm gains N(1, 0.1^2), the condition-type table N(0, 0.5^2) on the host.
std::unique_ptr<models::VelocityModel> random(const std::string& name_or_path, Backend& backend,
                                              models::Precision precision) {
  if (precision != models::Precision::Default)
    throw ParamError("precision", ": HunyuanVideo 1.5 runs in bf16 only for now");
  const HunyuanConfig cfg = load_config(name_or_path);
  return std::make_unique<HunyuanDiT>(
      cfg, backend, [&backend](const std::string& name, const Shape& shape) -> Tensor {
        const uint64_t seed = std::hash<std::string>{}(name);
        if (name.find("self_attn_qkv") != std::string::npos ||
            name == "cond_type_embedding.weight") {  // host tensors
          const float std = shape.size() == 1 ? 0.1f
                            : name == "cond_type_embedding.weight"
                                ? 0.5f
                                : static_cast<float>(1.0 / std::sqrt(double(shape[1])));
          return backend.download(backend.random_normal(shape, DType::F32, 0.0f, std, seed));
        }
        const DType wt = backend.weight_dtype();
        if (shape.size() == 1) {
          const bool bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
          return backend.random_normal(shape, wt, bias ? 0.0f : 1.0f, 0.1f, seed);
        }
        const double fan_in = static_cast<double>(shape_numel(shape) / shape[0]);
        return backend.random_normal(shape, wt, 0.0f, static_cast<float>(1.0 / std::sqrt(fan_in)),
                                     seed);
      });
}

}  // namespace

models::Family family() {
  return {"hunyuan15", &config_names, &config_info, &recognizes, &probe,
          &explain,    &load,         &random,      nullptr};
}

}  // namespace fisdit::hunyuan15
