#include "models/wan/loader.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "fisdit/error.h"
#include "models/wan/config.h"
#include "models/weights.h"

namespace fisdit::wan {

namespace {
const TensorInfo* find(const Checkpoint& ckpt, const KeyMap& keys, const std::string& canonical) {
  return ckpt.find(keys.stored_name(canonical));
}

const TensorInfo& require(const Checkpoint& ckpt, const KeyMap& keys, const std::string& canonical,
                          size_t ndim) {
  const TensorInfo* info = find(ckpt, keys, canonical);
  if (!info)
    throw Error(ckpt.path() + ": tensor '" + keys.stored_name(canonical) + "' (" + canonical +
                ") is missing, cannot determine the model config");
  if (info->shape.size() != ndim)
    throw Error(ckpt.file_of(info->name) + ": tensor '" + info->name + "' has shape " +
                shape_str(info->shape) + ", expected " + std::to_string(ndim) + " dimensions");
  return *info;
}

// Everything the tensor shapes say about the config (what official config.json files omit).
struct ShapeFacts {
  int dim, in_dim, text_dim, freq_dim, ffn_dim, out_dim, num_layers;
  std::array<int, 3> patch;
  bool qk_norm, cross_attn_norm;
};

ShapeFacts facts_from_shapes(const Checkpoint& ckpt, const KeyMap& keys) {
  ShapeFacts f{};
  const TensorInfo& pe = require(ckpt, keys, "patch_embedding.weight", 5);
  f.dim = static_cast<int>(pe.shape[0]);
  f.in_dim = static_cast<int>(pe.shape[1]);
  f.patch = {static_cast<int>(pe.shape[2]), static_cast<int>(pe.shape[3]),
             static_cast<int>(pe.shape[4])};
  f.text_dim = static_cast<int>(require(ckpt, keys, "text_embedding.0.weight", 2).shape[1]);
  f.freq_dim = static_cast<int>(require(ckpt, keys, "time_embedding.0.weight", 2).shape[1]);
  f.ffn_dim = static_cast<int>(require(ckpt, keys, "blocks.0.ffn.0.weight", 2).shape[0]);
  const int64_t head_rows = require(ckpt, keys, "head.head.weight", 2).shape[0];
  const int64_t patch_vol = int64_t{f.patch[0]} * f.patch[1] * f.patch[2];
  if (patch_vol <= 0 || head_rows % patch_vol != 0)
    throw Error(ckpt.path() + ": head.head.weight rows do not match the patch size");
  f.out_dim = static_cast<int>(head_rows / patch_vol);
  f.num_layers = count_wan_blocks(ckpt.names(), keys);
  f.qk_norm = find(ckpt, keys, "blocks.0.self_attn.norm_q.weight") != nullptr;
  f.cross_attn_norm = find(ckpt, keys, "blocks.0.norm3.weight") != nullptr;
  return f;
}

models::Task task_for(int in_dim) {
  if (in_dim == 36) return models::Task::I2V;
  if (in_dim == 48) return models::Task::TI2V;
  return models::Task::T2V;
}

// diffusers' transformer/config.json (WanTransformer3DModel) in official terms.
nlohmann::json official_from_diffusers(const nlohmann::json& d, const std::string& source) {
  auto need = [&](const char* key) {
    if (!d.contains(key) || !d[key].is_number_integer())
      throw Error(source + ": diffusers config lacks integer field '" + std::string(key) + "'");
    return d[key].get<int>();
  };
  nlohmann::json j;
  j["dim"] = need("num_attention_heads") * need("attention_head_dim");
  j["num_heads"] = need("num_attention_heads");
  j["in_dim"] = need("in_channels");
  j["out_dim"] = need("out_channels");
  j["ffn_dim"] = need("ffn_dim");
  j["num_layers"] = need("num_layers");
  for (const char* key : {"text_dim", "freq_dim", "patch_size", "eps"})
    if (d.contains(key)) j[key] = d[key];
  if (d.contains("cross_attn_norm")) j["cross_attn_norm"] = d["cross_attn_norm"];
  j["model_type"] = models::task_name(task_for(j["in_dim"].get<int>()));
  return j;
}
}  // namespace

ModelSource open_model(const std::string& path) {
  Checkpoint ckpt = Checkpoint::open(path);
  KeyMap keys = detect_wan_layout(ckpt);
  const ShapeFacts facts = facts_from_shapes(ckpt, keys);
  WanConfig cfg;
  std::string origin;
  std::optional<nlohmann::json> j = ckpt.config_json();
  if (j) {
    origin = ckpt.config_path().value_or("config.json");
    if (j->is_object() && j->value("_class_name", "") == "WanTransformer3DModel")
      *j = official_from_diffusers(*j, origin);
  } else if (ckpt.files().size() == 1) {
    // Files written by fisdit or the fixture generator carry their constructor in metadata
    // (else the shapes say it all).
    if (const std::optional<nlohmann::json> meta = metadata_config(ckpt)) {
      j = meta->at("constructor");
      origin = "file metadata";
    }
  }
  if (j) {
    cfg = config_from_json(*j, origin);
    // Values an official config.json omits come from the shapes; present ones must agree.
    auto agree = [&](const char* key, int from_config, int from_shapes) {
      if (from_config != from_shapes)
        throw Error(origin + ": " + key + " is " + std::to_string(from_config) +
                    " but the tensors say " + std::to_string(from_shapes));
    };
    if (j->contains("text_dim")) agree("text_dim", cfg.text_dim, facts.text_dim);
    if (j->contains("patch_size"))
      for (int i = 0; i < 3; ++i) agree("patch_size", cfg.patch_size[i], facts.patch[i]);
    cfg.text_dim = facts.text_dim;
    cfg.patch_size = facts.patch;
    agree("dim", cfg.dim, facts.dim);
    agree("in_dim", cfg.in_dim, facts.in_dim);
    agree("num_layers", cfg.num_layers, facts.num_layers);
  } else {
    // A bare file (e.g. ComfyUI): every released Wan model has head_dim 128.
    origin = "tensor shapes";
    cfg.dim = facts.dim;
    cfg.in_dim = facts.in_dim;
    cfg.patch_size = facts.patch;
    cfg.text_dim = facts.text_dim;
    cfg.freq_dim = facts.freq_dim;
    cfg.ffn_dim = facts.ffn_dim;
    cfg.out_dim = facts.out_dim;
    cfg.num_layers = facts.num_layers;
    cfg.num_heads = facts.dim % 128 == 0 ? facts.dim / 128 : 1;
    cfg.qk_norm = facts.qk_norm;
    cfg.cross_attn_norm = facts.cross_attn_norm;
    cfg.task = task_for(facts.in_dim);
  }
  cfg.validate(origin);
  return ModelSource{std::move(ckpt), std::move(keys), std::move(cfg), std::move(origin)};
}

std::vector<std::string> check_model(const ModelSource& src) {
  std::vector<std::string> problems;
  for (const auto& [name, shape] : dit_parameter_shapes(src.config)) {
    const std::string stored = src.keys.stored_name(name);
    const TensorInfo* info = src.checkpoint.find(stored);
    if (!info)
      problems.push_back("missing '" + stored + "' (" + name + ")");
    else if (info->shape != shape)
      problems.push_back("'" + stored + "' has shape " + shape_str(info->shape) + ", expected " +
                         shape_str(shape));
    else if (!is_float(info->dtype))
      problems.push_back("'" + stored + "' has non-float dtype " +
                         std::string(dtype_name(info->dtype)));
  }
  return problems;
}

LoraMerge dit_lora(const std::vector<LoraSpec>& loras, const WanConfig& config) {
  const KeyMap diffusers{KeyLayout::Diffusers, ""};
  return LoraMerge(loras, dit_parameter_shapes(config), [diffusers](std::string_view module) {
    return diffusers.canonical_name(module);
  });
}

namespace {
// --precision fp8: a block matrix the file stores as E4M3 (scaled fp8) is used as stored, its
// per-tensor scale repeated per row, unless a LoRA changes it (then merged, then quantized).
bool fp8_as_stored(const WeightSource& weights, const LoraMerge& lora, const std::string& name,
                   const Shape& shape) {
  if (lora.touches(name) || shape.size() != 2) return false;
  const TensorInfo* info = weights.info(name);
  return info && info->shape == shape && info->dtype == DType::F8_E4M3;
}
}  // namespace

StagedDit stage_dit(const ModelSource& src, Device device, const std::vector<LoraSpec>& loras,
                    models::Precision precision, int64_t budget, std::stop_token stop,
                    const models::UploadAhead& upload) {
  const WeightSource weights = dit_weights(src.checkpoint, src.keys);
  StagedDit staged;
  staged.device = device;
  staged.lora = dit_lora(loras, src.config);
  const bool fp8 = models::fp8_matrices(precision);
  int64_t host_bytes = 0;
  // On a GPU with an upload: the stored tensor on the device, when load_dit can take it as it is
  // (load_stored_weight) and it leaves upload.reserve free; uploads stop at the first that does
  // not.
  bool uploading = device != Device::CPU && upload.backend != nullptr;
  const auto put_on_device = [&](const std::string& name, const Shape& shape) {
    const TensorInfo* info = weights.info(name);
    if (!info || info->shape != shape ||
        !(is_fp8(info->dtype) || info->dtype == DType::BF16 || info->dtype == DType::F32))
      return false;  // the load reshapes, widens on the host or names the problem
    const int64_t size = static_cast<int64_t>(info->nbytes);
    const int64_t free_now = upload.backend->memory_free();
    if (free_now >= 0 && free_now - size < upload.reserve) {
      uploading = false;
      return false;
    }
    float scale = 1.0f;
    const Tensor stored = weights.get_stored(name, shape, scale);
    staged.on_device.emplace(name,
                             StagedDit::OnDevice{upload.backend->upload_beside(stored), scale});
    staged.device_bytes += size;
    staged.bytes += size;
    return true;
  };
  for (const auto& [name, shape] : dit_parameter_shapes(src.config)) {
    if (stop.stop_requested()) break;
    // Where load_dit's weight function makes it on the host: head.modulation always, the rest on
    // the CPU only, except block matrices used in E4M3 as stored (a GPU gets the stored bytes,
    // which are read here instead).
    const bool host =
        name == "head.modulation" ||
        (device == Device::CPU && !(fp8 && name.rfind("blocks.", 0) == 0 &&
                                    fp8_as_stored(weights, staged.lora, name, shape)));
    if (!host && uploading && put_on_device(name, shape)) continue;
    const TensorInfo* info = weights.info(name);
    const int64_t size =
        host ? shape_numel(shape) * 4 : (info ? static_cast<int64_t>(info->nbytes) : 0);
    if (host_bytes + size > budget) break;
    if (host)
      staged.host.emplace(name, models::host_weight(weights, name, shape, &staged.lora));
    else
      models::read_ahead(weights, name);
    host_bytes += size;
    staged.bytes += size;
  }
  return staged;
}

std::unique_ptr<WanDiT> load_dit(const ModelSource& src, Backend& backend,
                                 const std::vector<LoraSpec>& loras, models::Precision precision,
                                 StagedDit* staged) {
  if (staged && staged->device != backend.device())
    throw Error("internal error: DiT weights staged for another device");
  const WeightSource weights = dit_weights(src.checkpoint, src.keys);
  const LoraMerge lora = staged ? std::move(staged->lora) : dit_lora(loras, src.config);
  std::set<std::string> merged;
  // A weight put on the device ahead (stage_dit), taken out; else undefined.
  const auto take_on_device = [&](const std::string& name, float& scale) -> Tensor {
    if (!staged) return {};
    auto made = staged->on_device.extract(name);
    if (made.empty()) return {};
    scale = made.mapped().scale;
    return made.mapped().stored;
  };
  const StoredFp8Fn stored_fp8 = [&](const std::string& name,
                                     const Shape& shape) -> std::optional<Fp8Rows> {
    if (lora.touches(name) || shape.size() != 2) return std::nullopt;
    if (staged) {  // on the device already: used here when E4M3, else left for the weight's load
      const auto it = staged->on_device.find(name);
      if (it != staged->on_device.end() && it->second.stored.dtype() != DType::F8_E4M3)
        return std::nullopt;
    }
    float scale = 1.0f;
    Tensor stored = take_on_device(name, scale);
    if (!stored.defined()) stored = weights.get_stored(name, shape, scale);
    if (stored.dtype() != DType::F8_E4M3) return std::nullopt;
    Tensor scales = Tensor::zeros({shape[0]});
    std::fill(scales.f32(), scales.f32() + shape[0], scale);
    return Fp8Rows{backend.upload(stored.reshape(shape), DType::F8_E4M3),
                   backend.upload(scales, DType::F32)};
  };
  auto dit = std::make_unique<WanDiT>(
      src.config, backend,
      [&](const std::string& name, const Shape& shape) -> Tensor {
        if (lora.touches(name)) merged.insert(name);
        // Each weight where and in the dtype WanDiT keeps it (dit.cpp), so its own upload is a
        // no-op: head.modulation on the host (WanDiT uploads it in F32), the other modulation
        // tables in fp32, the rest in the backend's weight dtype (an fp8 weight is dequantised
        // straight to that).
        const bool fp32 = name.find("modulation") != std::string::npos;
        const DType dtype = fp32 ? DType::F32 : backend.weight_dtype();
        if (staged) {  // made ahead: only its way to the backend is left
          auto made = staged->host.extract(name);
          if (!made.empty())
            return name == "head.modulation"
                       ? made.mapped()
                       : models::load_host_weight(std::move(made.mapped()), backend, dtype);
        }
        if (name == "head.modulation") return models::host_weight(weights, name, shape, &lora);
        float scale = 1.0f;
        if (const Tensor stored = take_on_device(name, scale); stored.defined())
          return models::load_stored_weight(stored, scale, name, backend, dtype, &lora);
        return models::load_weight(weights, name, shape, backend, dtype, &lora);
      },
      precision, stored_fp8);
  for (const std::string& target : lora.targets())
    if (!merged.count(target))
      throw Error("internal error: the DiT never loaded " + target + ", which a LoRA changes");
  return dit;
}

}  // namespace fisdit::wan
