#include "models/hunyuan15/family.h"

#include "models/hunyuan15/release.h"
#include "models/hunyuan15/release_layout.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "fisdit/error.h"
#include "io/weights.h"
#include "models/weights.h"

namespace fisdit::hunyuan15 {

namespace {
// Two tensors that name a HunyuanVideo 1.5 DiT in each layout (HunyuanVideo 1.0 fuses img_attn_qkv
// and its diffusers port has no time_embed).
constexpr const char* kMarkers[2][2] = {
    {"img_in.proj.weight", "double_blocks.0.img_attn_q.weight"},
    {"x_embedder.proj.weight", "time_embed.timestep_embedder.linear_1.weight"}};

struct Found {
  Layout layout;
  std::string prefix;
};

// The layout and the prefix before its names (io's shortest_prefix of the first marker), or
// nullopt when the checkpoint holds no HunyuanVideo 1.5 DiT.
std::optional<Found> find_layout(const Checkpoint& ckpt) {
  const std::vector<std::string> names = ckpt.names();
  for (int l = 0; l < 2; ++l)
    if (const std::optional<std::string> p = shortest_prefix(names, kMarkers[l][0]))
      if (ckpt.contains(*p + kMarkers[l][1]))
        return Found{l == 0 ? Layout::Official : Layout::Diffusers, *p};
  return std::nullopt;
}

std::string not_hunyuan(const std::string& path) {
  return path + ": not a HunyuanVideo 1.5 DiT (no '" + kMarkers[0][0] + "' with '" +
         kMarkers[0][1] + "', nor diffusers' '" + kMarkers[1][0] + "' with '" + kMarkers[1][1] +
         "')";
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

// diffusers' HunyuanVideo15Transformer3DModel config.json (the conversion script's
// TRANSFORMER_CONFIGS keys) as HunyuanConfig.
HunyuanConfig config_from_diffusers(const nlohmann::json& j, const std::string& source) {
  nlohmann::json o = {{"mm_double_blocks_depth", 54}};
  auto copy = [&](const char* from, const char* to) {
    if (j.contains(from) && !j[from].is_null()) o[to] = j[from];
  };
  if (j.contains("in_channels")) {
    if (!j["in_channels"].is_number_integer() || j["in_channels"].get<int>() % 2 != 1)
      throw Error(source + ": in_channels must be an odd integer (latent, condition, mask)");
    o["in_channels"] = (j["in_channels"].get<int>() - 1) / 2;
  }
  copy("out_channels", "out_channels");
  copy("num_attention_heads", "heads_num");
  if (j.contains("num_attention_heads") && j.contains("attention_head_dim")) {
    if (!j["num_attention_heads"].is_number_integer() ||
        !j["attention_head_dim"].is_number_integer())
      throw Error(source + ": num_attention_heads and attention_head_dim must be integers");
    o["hidden_size"] = j["num_attention_heads"].get<int>() * j["attention_head_dim"].get<int>();
  }
  copy("num_layers", "mm_double_blocks_depth");
  copy("mlp_ratio", "mlp_width_ratio");
  copy("rope_axes_dim", "rope_dim_list");
  copy("rope_theta", "rope_theta");
  copy("text_embed_dim", "text_states_dim");
  copy("image_embed_dim", "vision_states_dim");
  copy("use_meanflow", "use_meanflow");
  copy("task_type", "ideal_task");
  if (j.contains("target_size") && j["target_size"].is_number_integer()) {
    const int t = j["target_size"].get<int>();  // the bucket base: 640 is 480p, 960 is 720p
    if (t == 640 || t == 960) o["ideal_resolution"] = t == 640 ? "480p" : "720p";
  }
  for (const char* key : {"patch_size", "patch_size_t"})
    if (j.contains(key) && !(j[key].is_number_integer() && j[key].get<int>() == 1))
      throw Error(source + ": " + key + " other than 1 is not supported");
  if (j.contains("qk_norm") && j["qk_norm"] != "rms_norm")
    throw Error(source + ": qk_norm must be rms_norm");
  return config_from_json(o, source);
}
}  // namespace

std::string diffusers_name(const std::string& official) {
  const size_t dot = official.rfind('.');
  const std::string base = official.substr(0, dot), leaf = official.substr(dot);
  static const std::map<std::string, std::string> flat = {
      {"time_in.mlp.0", "time_embed.timestep_embedder.linear_1"},
      {"time_in.mlp.2", "time_embed.timestep_embedder.linear_2"},
      {"time_r_in.mlp.0", "time_embed.timestep_embedder_r.linear_1"},
      {"time_r_in.mlp.2", "time_embed.timestep_embedder_r.linear_2"},
      {"txt_in.t_embedder.mlp.0", "context_embedder.time_text_embed.timestep_embedder.linear_1"},
      {"txt_in.t_embedder.mlp.2", "context_embedder.time_text_embed.timestep_embedder.linear_2"},
      {"txt_in.c_embedder.linear_1", "context_embedder.time_text_embed.text_embedder.linear_1"},
      {"txt_in.c_embedder.linear_2", "context_embedder.time_text_embed.text_embedder.linear_2"},
      {"txt_in.input_embedder", "context_embedder.proj_in"},
      {"byt5_in.layernorm", "context_embedder_2.norm"},
      {"byt5_in.fc1", "context_embedder_2.linear_1"},
      {"byt5_in.fc2", "context_embedder_2.linear_2"},
      {"byt5_in.fc3", "context_embedder_2.linear_3"},
      {"vision_in.proj.0", "image_embedder.norm_in"},
      {"vision_in.proj.1", "image_embedder.linear_1"},
      {"vision_in.proj.3", "image_embedder.linear_2"},
      {"vision_in.proj.4", "image_embedder.norm_out"},
      {"img_in.proj", "x_embedder.proj"},
      {"cond_type_embedding", "cond_type_embed"},
      {"final_layer.adaLN_modulation.1", "norm_out.linear"},
      {"final_layer.linear", "proj_out"},
  };
  if (const auto it = flat.find(base); it != flat.end()) return it->second + leaf;
  static const std::map<std::string, std::string> refiner = {
      {"norm1", "norm1"},
      {"norm2", "norm2"},
      {"self_attn_proj", "attn.to_out.0"},
      {"mlp.fc1", "ff.net.0.proj"},
      {"mlp.fc2", "ff.net.2"},
      {"adaLN_modulation.1", "norm_out.linear"},
  };
  static const std::map<std::string, std::string> block = {
      {"img_mod.linear", "norm1.linear"},
      {"txt_mod.linear", "norm1_context.linear"},
      {"img_attn_q", "attn.to_q"},
      {"img_attn_k", "attn.to_k"},
      {"img_attn_v", "attn.to_v"},
      {"img_attn_q_norm", "attn.norm_q"},
      {"img_attn_k_norm", "attn.norm_k"},
      {"img_attn_proj", "attn.to_out.0"},
      {"txt_attn_q", "attn.add_q_proj"},
      {"txt_attn_k", "attn.add_k_proj"},
      {"txt_attn_v", "attn.add_v_proj"},
      {"txt_attn_q_norm", "attn.norm_added_q"},
      {"txt_attn_k_norm", "attn.norm_added_k"},
      {"txt_attn_proj", "attn.to_add_out"},
      {"img_mlp.fc1", "ff.net.0.proj"},
      {"img_mlp.fc2", "ff.net.2"},
      {"txt_mlp.fc1", "ff_context.net.0.proj"},
      {"txt_mlp.fc2", "ff_context.net.2"},
  };
  // "<group>.<i>.<rest>" with a block index.
  auto indexed = [&](const std::string& group, const std::string& to,
                     const std::map<std::string, std::string>& names) -> std::string {
    if (!starts_with(base, group)) return {};
    const size_t end = base.find('.', group.size());
    if (end == std::string::npos) return {};
    const auto it = names.find(base.substr(end + 1));
    if (it == names.end()) return {};
    return to + base.substr(group.size(), end - group.size()) + "." + it->second + leaf;
  };
  if (std::string n = indexed("txt_in.individual_token_refiner.blocks.",
                              "context_embedder.token_refiner.refiner_blocks.", refiner);
      !n.empty())
    return n;
  if (std::string n = indexed("double_blocks.", "transformer_blocks.", block); !n.empty()) return n;
  return {};  // the refiner's fused qkv (three tensors in diffusers), or not a parameter
}

std::string stored_name(const ModelSource& src, const std::string& official) {
  if (src.layout == Layout::Official) return src.prefix + official;
  const std::string n = diffusers_name(official);
  return n.empty() ? std::string() : src.prefix + n;
}

namespace {
// The diffusers names of the refiner's q, k and v that make its fused qkv `official`.
std::array<std::string, 3> split_qkv_names(const ModelSource& src, const std::string& official) {
  const std::string group = "txt_in.individual_token_refiner.blocks.";
  const size_t end = official.find('.', group.size());
  const std::string i = official.substr(group.size(), end - group.size());
  const std::string leaf = official.substr(official.rfind('.'));
  std::array<std::string, 3> names;
  const char* parts[3] = {"to_q", "to_k", "to_v"};
  for (int p = 0; p < 3; ++p)
    names[static_cast<size_t>(p)] = src.prefix + "context_embedder.token_refiner.refiner_blocks." +
                                    i + ".attn." + parts[p] + leaf;
  return names;
}

// What the tensor shapes say (names through `stored`), over `c`.
HunyuanConfig config_from_shapes(const Checkpoint& ckpt,
                                 const std::function<std::string(const std::string&)>& stored,
                                 HunyuanConfig c) {
  auto shape = [&](const std::string& name) -> const Shape* {
    const TensorInfo* info = ckpt.find(stored(name));
    return info ? &info->shape : nullptr;
  };
  auto has = [&](const std::string& name) { return shape(name) != nullptr; };
  if (const Shape* s = shape("img_in.proj.weight"); s && s->size() == 5) {
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
  int n = 0;
  while (has("double_blocks." + std::to_string(n) + ".img_attn_q.weight")) ++n;
  c.num_blocks = n;
  n = 0;
  while (has("txt_in.individual_token_refiner.blocks." + std::to_string(n) + ".norm1.weight")) ++n;
  c.refiner_blocks = n;
  c.meanflow = has("time_r_in.mlp.0.weight");
  c.glyph = has("byt5_in.fc1.weight");
  if (c.glyph) {
    const Shape* f1 = shape("byt5_in.fc1.weight");
    const Shape* f2 = shape("byt5_in.fc2.weight");
    if (f1 && f2 && f1->size() == 2 && f2->size() == 2)
      c.byt5_dims = {static_cast<int>((*f1)[1]), static_cast<int>((*f1)[0]),
                     static_cast<int>((*f2)[0])};
  }
  const Shape* v = shape("vision_in.proj.1.weight");
  c.vision_dim = v && v->size() == 2 ? static_cast<int>((*v)[1]) : 0;
  c.cond_type_embedding = has("cond_type_embedding.weight");
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
  const std::optional<Found> found = find_layout(ckpt);
  if (!found) throw Error(not_hunyuan(path));
  ModelSource src{std::move(ckpt), found->layout, found->prefix, {}, {}};
  std::optional<nlohmann::json> j = src.checkpoint.config_json();
  std::string origin;
  if (j) {
    origin = src.checkpoint.config_path().value_or("config.json");
    if (j->is_object() && j->value("_class_name", "") == "HunyuanVideo15Transformer3DModel")
      *j = nlohmann::json{{"diffusers", *j}};
  } else if (const std::optional<nlohmann::json> meta = metadata_config(src.checkpoint)) {
    j = meta->at("constructor");  // the fixtures carry their constructor (io/checkpoint.h)
    origin = "file metadata";
  }
  const HunyuanConfig shapes = config_from_shapes(
      src.checkpoint, [&](const std::string& n) { return stored_name(src, n); }, {});
  HunyuanConfig cfg;
  if (j) {
    cfg = j->contains("diffusers") ? config_from_diffusers((*j)["diffusers"], origin)
                                   : config_from_json(*j, origin);
    // The config must describe these tensors.
    auto agree = [&](const char* key, double from_config, double from_shapes) {
      if (from_config != from_shapes)
        throw Error(origin + ": " + key + " is " + std::to_string(from_config) +
                    " but the tensors say " + std::to_string(from_shapes));
    };
    agree("hidden size", cfg.hidden, shapes.hidden);
    agree("heads", cfg.heads, shapes.heads);
    agree("latent channels", cfg.latent_channels, shapes.latent_channels);
    agree("double-stream blocks", cfg.num_blocks, shapes.num_blocks);
    agree("mlp ratio", cfg.mlp_ratio, shapes.mlp_ratio);
    agree("text states dim", cfg.text_dim, shapes.text_dim);
    agree("use_meanflow", cfg.meanflow, shapes.meanflow);
    agree("vision states dim", cfg.vision_dim, shapes.vision_dim);
    cfg.refiner_blocks = shapes.refiner_blocks;
    if (cfg.glyph) cfg.byt5_dims = shapes.byt5_dims;
  } else {
    origin = "tensor shapes";
    cfg = shapes;
  }
  cfg.validate(origin);
  src.config = std::move(cfg);
  src.config_origin = std::move(origin);
  return src;
}

std::vector<std::string> check_model(const ModelSource& src) {
  std::vector<std::string> problems;
  auto check = [&](const std::string& stored, const Shape& shape) {
    const TensorInfo* info = src.checkpoint.find(stored);
    if (!info)
      problems.push_back("missing '" + stored + "'");
    else if (info->shape != shape)
      problems.push_back("'" + stored + "' has shape " + shape_str(info->shape) + ", expected " +
                         shape_str(shape));
    else if (!is_float(info->dtype))
      problems.push_back("'" + stored + "' has non-float dtype " +
                         std::string(dtype_name(info->dtype)));
  };
  for (const auto& [name, shape] : dit_parameter_shapes(src.config)) {
    const std::string stored = stored_name(src, name);
    if (!stored.empty()) {
      check(stored, shape);
      continue;
    }
    Shape part = shape;  // diffusers: the fused qkv as three thirds
    part[0] /= 3;
    for (const std::string& p : split_qkv_names(src, name)) check(p, part);
  }
  return problems;
}

std::unique_ptr<HunyuanDiT> load_dit(const ModelSource& src, Backend& backend,
                                     models::Precision precision) {
  const WeightSource weights(src.checkpoint,
                             [&src](const std::string& name) { return stored_name(src, name); });
  const bool diffusers = src.layout == Layout::Diffusers;
  return std::make_unique<HunyuanDiT>(
      src.config, backend,
      [&](const std::string& name, const Shape& shape) -> Tensor {
        if (diffusers && name.find("self_attn_qkv") != std::string::npos) {
          // Stored as to_q, to_k, to_v: the fused rows in that order.
          Shape part = shape;
          part[0] /= 3;
          Tensor fused = Tensor::zeros(shape);
          const std::array<std::string, 3> parts = split_qkv_names(src, name);
          for (size_t p = 0; p < 3; ++p) {
            const Tensor t = src.checkpoint.tensor_f32(parts[p]);
            if (t.shape() != part)
              throw Error(src.checkpoint.path() + ": tensor '" + parts[p] + "' has shape " +
                          shape_str(t.shape()) + ", expected " + shape_str(part));
            std::copy(t.f32(), t.f32() + t.numel(), fused.f32() + p * t.numel());
          }
          return fused;
        }
        if (diffusers && starts_with(name, "final_layer.adaLN_modulation.1.")) {
          // diffusers stores (scale, shift); the official order is (shift, scale).
          const Tensor t = models::host_weight(weights, name, shape);
          Tensor swapped = Tensor::zeros(shape);
          const int64_t half = t.numel() / 2;
          std::copy(t.f32() + half, t.f32() + 2 * half, swapped.f32());
          std::copy(t.f32(), t.f32() + half, swapped.f32() + half);
          return swapped;
        }
        // The fused refiner qkv (split on the host) and the condition-type table stay on the
        // host; the rest goes where and as HunyuanDiT keeps it.
        if (name.find("self_attn_qkv") != std::string::npos || name == "cond_type_embedding.weight")
          return models::host_weight(weights, name, shape);
        return models::load_weight(weights, name, shape, backend, backend.weight_dtype());
      },
      precision);
}

namespace {

std::vector<std::string> config_names() { return preset_config_names(); }

models::ModelInfo config_info(const std::string& name_or_path) {
  return model_info(load_config(name_or_path));
}

bool recognizes(const Checkpoint& checkpoint, std::string* why_not) {
  if (find_layout(checkpoint)) return true;
  if (why_not) *why_not = not_hunyuan(checkpoint.path());
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
    lines.push_back(std::string("layout       ") +
                    (src.layout == Layout::Official ? "official" : "diffusers") +
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
    models::append_loadable_lines(lines, check_model(src),
                                  "every tensor of the DiT is present with its shape");
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
  const ModelSource src = open_model(path);
  auto dit = load_dit(src, backend, precision);
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
  const HunyuanConfig cfg = load_config(name_or_path);
  return std::make_unique<HunyuanDiT>(
      cfg, backend,
      [&backend](const std::string& name, const Shape& shape) -> Tensor {
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
      },
      precision);
}

#if !defined(FISDIT_WITH_PIPELINE) || !defined(FISDIT_WITH_QWEN_TOKENIZER)
// A build without the pipeline or the Qwen2 tokenizer cannot run a release's text encoder: a
// HunyuanVideo 1.5 release gets that said rather than another family's reasons.
std::unique_ptr<models::Release> open_release_unavailable(const std::string& path,
                                                          const models::ReleaseOptions&) {
  throw Error(path +
              ": this fisdit was built without the pipeline or the Qwen2 tokenizer, so it cannot "
              "run HunyuanVideo 1.5's text encoder (Debian: apt-get install libpcre2-dev "
              "libicu-dev, then configure again)");
}
bool owns_release_unavailable(const std::string& path) { return looks_like_release(path); }
#endif

}  // namespace

models::Family family() {
#if defined(FISDIT_WITH_PIPELINE) && defined(FISDIT_WITH_QWEN_TOKENIZER)
  models::Family f{"hunyuan15", &config_names, &config_info, &recognizes,  &probe,
                   &explain,    &load,         &random,      &open_release};
  f.owns_release = &owns_release;
#else
  models::Family f{"hunyuan15", &config_names, &config_info,
                   &recognizes, &probe,        &explain,
                   &load,       &random,       &open_release_unavailable};
  f.owns_release = &owns_release_unavailable;
#endif
  return f;
}

}  // namespace fisdit::hunyuan15
