#include "models/wan/family.h"

#include <cmath>
#include <cstdio>
#include <functional>

#include "fisdit/error.h"
#include "models/wan/loader.h"
#include "models/wan/release.h"

namespace fisdit::wan {

namespace {

std::vector<std::string> config_names() { return preset_config_names(); }

models::ModelInfo config_info(const std::string& name_or_path) {
  return model_info(load_config(name_or_path));
}

bool recognizes(const Checkpoint& checkpoint, std::string* why_not) {
  try {
    detect_wan_layout(checkpoint);
    return true;
  } catch (const Error& e) {
    if (why_not) *why_not = e.what();
    return false;
  }
}

models::ModelInfo probe(const std::string& path) { return model_info(open_model(path).config); }

std::vector<std::string> explain(const std::string& path) {
  std::vector<std::string> lines;
  char line[512];
  try {
    const ModelSource src = open_model(path);
    const WanConfig& c = src.config;
    lines.push_back("family       wan");
    lines.push_back("layout       " + layout_name(src.keys.layout) +
                    (src.keys.prefix.empty() ? "" : ", prefix '" + src.keys.prefix + "'"));
    lines.push_back("config       " + std::string(models::task_name(c.task)) + " (from " +
                    src.config_origin + ")");
    std::snprintf(line, sizeof line,
                  "  dim %d, ffn_dim %d, freq_dim %d, heads %d (head_dim %d), layers %d", c.dim,
                  c.ffn_dim, c.freq_dim, c.num_heads, c.head_dim(), c.num_layers);
    lines.push_back(line);
    std::snprintf(line, sizeof line,
                  "  in_dim %d, out_dim %d, text_dim %d, text_len %d, patch [%d, %d, %d], eps %g",
                  c.in_dim, c.out_dim, c.text_dim, c.text_len, c.patch_size[0], c.patch_size[1],
                  c.patch_size[2], c.eps);
    lines.push_back(line);
    models::append_loadable_lines(lines, check_model(src),
                                  "every tensor of the " + std::string(models::task_name(c.task)) +
                                      " DiT is present with its shape");
  } catch (const Error& e) {
    lines.push_back(std::string("loadable     no: ") + e.what());
  }
  return lines;
}

std::unique_ptr<models::VelocityModel> load(const std::string& path, Backend& backend,
                                            const std::vector<LoraSpec>& loras,
                                            std::vector<std::string>* report,
                                            models::Precision precision) {
  const ModelSource src = open_model(path);
  auto dit = load_dit(src, backend, loras, precision);
  if (report) {
    const WanConfig& c = src.config;
    report->push_back(std::string("wan ") + models::task_name(c.task) + ", " +
                      std::to_string(c.num_layers) + " blocks, dim " + std::to_string(c.dim) +
                      " (config from " + src.config_origin + ")");
    if (!loras.empty()) {
      const LoraMerge merge = dit_lora(loras, c);
      for (size_t i = 0; i < loras.size(); ++i) {
        char line[512];
        std::snprintf(line, sizeof line, "LoRA %s (strength %g): %zu weights changed",
                      loras[i].path.c_str(), static_cast<double>(loras[i].strength),
                      merge.count_for(i));
        report->push_back(line);
      }
    }
  }
  return dit;
}

// Random weights of the real shapes, drawn where the backend keeps tensors: matrices
// N(0, 1/fan_in) so activations stay O(1), biases N(0, 0.1^2), norm gains N(1, 0.1^2),
// modulation N(0, 0.2^2) (F32, as the model keeps it). head.modulation is read on the host.
WeightFn random_weights(Backend& backend) {
  return [&backend](const std::string& name, const Shape& shape) -> Tensor {
    const uint64_t seed = std::hash<std::string>{}(name);
    if (name == "head.modulation") {
      Tensor host = Tensor::zeros(shape);
      uint64_t z = seed;
      for (int64_t i = 0; i < host.numel(); ++i) {  // small; uniform with std 0.2
        z = z * 6364136223846793005ULL + 1442695040888963407ULL;
        host.f32()[i] = (static_cast<float>(z >> 40) / 16777216.0f - 0.5f) * 0.69f;
      }
      return host;
    }
    if (name.find("modulation") != std::string::npos)
      return backend.random_normal(shape, DType::F32, 0.0f, 0.2f, seed);
    const DType wt = backend.weight_dtype();
    if (shape.size() == 1) {
      const bool gain = name.find("norm") != std::string::npos;
      return backend.random_normal(shape, wt, gain ? 1.0f : 0.0f, 0.1f, seed);
    }
    const double fan_in = static_cast<double>(shape_numel(shape) / shape[0]);
    return backend.random_normal(shape, wt, 0.0f, static_cast<float>(1.0 / std::sqrt(fan_in)),
                                 seed);
  };
}

std::unique_ptr<models::VelocityModel> random(const std::string& name_or_path, Backend& backend,
                                              models::Precision precision) {
  return std::make_unique<WanDiT>(load_config(name_or_path), backend, random_weights(backend),
                                  precision);
}

}  // namespace

models::Family family() {
  models::Family f = {"wan",    &config_names, &config_info, &recognizes, &probe,
                      &explain, &load,         &random,      nullptr};
#ifdef FISDIT_WITH_PIPELINE
  f.open_release = &open_release;  // release_stages.cpp: needs the tokenizer
#endif
  return f;
}

}  // namespace fisdit::wan
