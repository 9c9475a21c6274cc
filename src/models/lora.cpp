#include "models/lora.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <string_view>

#include "backend/backend.h"
#include "fisdit/error.h"
#include "io/text.h"

namespace fisdit {

namespace {

enum class Part : uint8_t { Down, Up, Alpha, Diff, DiffBias };

struct Suffix {
  std::string_view text;
  Part part;
};
constexpr Suffix kSuffixes[] = {
    {".lora_down.weight", Part::Down},
    {".lora_up.weight", Part::Up},
    {".lora_A.weight", Part::Down},
    {".lora_B.weight", Part::Up},
    {".alpha", Part::Alpha},
    {".diff_b", Part::DiffBias},
    {".diff", Part::Diff},
};

// Longest first; "" last (bare module paths).
constexpr std::string_view kPrefixes[] = {"model.diffusion_model.", "diffusion_model.",
                                          "transformer.", "base_model.model.", ""};

[[noreturn]] void mismatch(const std::string& path, const std::string& what) {
  throw Error(path + ": LoRA does not match the model: " + what);
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// kohya / musubi-tuner flatten module paths: `lora_unet_blocks_0_self_attn_q` for
// `blocks.0.self_attn.q`.
constexpr std::string_view kFlatPrefix = "lora_unet_";

std::string flattened(std::string_view module) {
  std::string out(module);
  std::replace(out.begin(), out.end(), '.', '_');
  return out;
}

// The model parameter that `part` of LoRA module `module` changes, or "" when there is none.
// `flat` maps flattened module paths (see above) to official ones.
std::string target_of(std::string_view module, Part part,
                      const std::map<std::string, Shape>& params,
                      const std::map<std::string, std::string, std::less<>>& flat,
                      const LoraModuleNames& other_names) {
  if (starts_with(module, kFlatPrefix)) {
    const auto it = flat.find(module.substr(kFlatPrefix.size()));
    if (it == flat.end()) return {};
    const std::string param = it->second + (part == Part::DiffBias ? ".bias" : ".weight");
    if (params.count(param)) return param;
    if (part == Part::Diff && params.count(it->second)) return it->second;
    return {};
  }
  for (std::string_view prefix : kPrefixes) {
    if (!starts_with(module, prefix)) continue;
    const std::string_view rest = module.substr(prefix.size());
    for (const bool official : {true, false}) {
      if (!official && !other_names) break;
      const std::string canonical =
          official ? std::string(rest) : other_names(rest).value_or(std::string());
      const std::string param = canonical + (part == Part::DiffBias ? ".bias" : ".weight");
      if (params.count(param)) return param;
      if (part == Part::Diff && params.count(canonical)) return canonical;
    }
  }
  return {};
}

// How an unmatched module reads as an official name (for the error message).
std::string official_reading(std::string_view module, Part part) {
  for (std::string_view prefix : kPrefixes)
    if (starts_with(module, prefix))
      return std::string(module.substr(prefix.size())) +
             (part == Part::DiffBias ? ".bias" : ".weight");
  return std::string(module);
}

// The tensors of one LoRA file that change one parameter.
struct Group {
  std::string down, up, alpha, diff;
};

std::string& slot(Group& g, Part part) {
  switch (part) {
    case Part::Down:
      return g.down;
    case Part::Up:
      return g.up;
    case Part::Alpha:
      return g.alpha;
    case Part::Diff:
    case Part::DiffBias:
      break;
  }
  return g.diff;
}

const char* part_name(Part part) {
  switch (part) {
    case Part::Down:
      return "lora_down (lora_A)";
    case Part::Up:
      return "lora_up (lora_B)";
    case Part::Alpha:
      return "alpha";
    case Part::Diff:
      return "diff";
    case Part::DiffBias:
      return "diff_b";
  }
  return "?";
}

Shape with_rank_first(int64_t rank, const Shape& w) {
  Shape s{rank};
  s.insert(s.end(), w.begin() + 1, w.end());
  return s;
}

}  // namespace

LoraMerge::LoraMerge(const std::vector<LoraSpec>& loras,
                     const std::vector<std::pair<std::string, Shape>>& parameters,
                     const LoraModuleNames& other_names) {
  const std::map<std::string, Shape> params(parameters.begin(), parameters.end());
  std::map<std::string, std::string, std::less<>> flat;  // flattened module path -> official
  for (const auto& [name, shape] : parameters) {
    for (std::string_view suffix : {".weight", ".bias"})
      if (std::string_view(name).ends_with(suffix)) {
        const std::string module = name.substr(0, name.size() - suffix.size());
        flat.emplace(flattened(module), module);
      }
    flat.emplace(flattened(name), name);  // bare parameters (modulation) take .diff directly
  }
  for (size_t index = 0; index < loras.size(); ++index) {
    const LoraSpec& spec = loras[index];
    if (!std::isfinite(spec.strength))
      throw Error(spec.path + ": LoRA strength " + std::to_string(spec.strength) +
                  " is not a finite number");
    Checkpoint ckpt = Checkpoint::open(spec.path);
    const std::string& path = spec.path;
    const std::vector<std::string> names = ckpt.names();
    if (names.empty()) throw Error(path + ": the LoRA file holds no tensors");

    std::map<std::string, Group> groups;  // by target parameter
    for (const std::string& name : names) {
      const Suffix* suffix = nullptr;
      for (const Suffix& s : kSuffixes) {
        if (name.size() > s.text.size() &&
            std::string_view(name).substr(name.size() - s.text.size()) == s.text) {
          suffix = &s;
          break;
        }
      }
      if (!suffix)
        mismatch(path, "tensor " + squoted(name) +
                           " is not a LoRA tensor (expected <module>.lora_down.weight, "
                           ".lora_up.weight, .lora_A.weight, .lora_B.weight, .alpha, .diff or "
                           ".diff_b)");
      const std::string_view module =
          std::string_view(name).substr(0, name.size() - suffix->text.size());
      const std::string target = target_of(module, suffix->part, params, flat, other_names);
      if (target.empty() && starts_with(module, kFlatPrefix))
        mismatch(path, "tensor " + squoted(name) + " names the flattened module path " +
                           squoted(module) + ", which matches no parameter of the model");
      if (target.empty())
        mismatch(path, "tensor " + squoted(name) + " changes " +
                           squoted(official_reading(module, suffix->part)) +
                           ", which the model does not have");
      const TensorInfo* info = ckpt.find(name);
      if (!is_float(info->dtype))
        mismatch(path, "tensor " + squoted(name) + " has dtype " +
                           std::string(dtype_name(info->dtype)) + ", expected a float type");
      std::string& s = slot(groups[target], suffix->part);
      if (!s.empty())
        mismatch(path, "tensors " + squoted(s) + " and " + squoted(name) + " both give the " +
                           part_name(suffix->part) + " of " + squoted(target));
      s = name;
    }

    for (const auto& [target, g] : groups) {
      const Shape& w = params.at(target);
      if (!g.diff.empty()) {
        const Shape& d = ckpt.find(g.diff)->shape;
        if (d != w)
          mismatch(path, "tensor " + squoted(g.diff) + " has shape " + shape_str(d) +
                             ", expected " + shape_str(w) + " as " + squoted(target));
        Patch p;
        p.file = index;
        p.delta = g.diff;
        p.scale = spec.strength;
        patches_[target].push_back(std::move(p));
      }
      if (g.down.empty() && g.up.empty()) {
        if (!g.alpha.empty())
          mismatch(path, "tensor " + squoted(g.alpha) +
                             " is an alpha without a lora_down/lora_up "
                             "pair");
        continue;
      }
      if (g.down.empty() || g.up.empty())
        mismatch(path, "tensor " + squoted(g.down.empty() ? g.up : g.down) + " has no matching " +
                           (g.down.empty() ? "lora_down (lora_A)" : "lora_up (lora_B)") +
                           " tensor");
      if (w.size() < 2)
        mismatch(path, "tensors " + squoted(g.down) + " / " + squoted(g.up) +
                           " form a low-rank update of " + squoted(target) + " of shape " +
                           shape_str(w) + ", which is not a matrix (use .diff)");
      const Shape& down = ckpt.find(g.down)->shape;
      const Shape& up = ckpt.find(g.up)->shape;
      const int64_t rank = down.empty() ? 0 : down[0];
      const int64_t in = shape_numel(w) / w[0];
      const bool down_ok = rank >= 1 && (down == with_rank_first(rank, w) ||
                                         (w.size() > 2 && down == Shape{rank, in}));
      if (!down_ok)
        mismatch(path, "tensor " + squoted(g.down) + " has shape " + shape_str(down) +
                           ", expected " + shape_str(with_rank_first(rank >= 1 ? rank : 1, w)) +
                           " (rank first) to change " + squoted(target) + " of shape " +
                           shape_str(w));
      Shape up_full{w[0], rank};
      up_full.resize(w.size(), 1);
      if (up != Shape{w[0], rank} && up != up_full)
        mismatch(path, "tensor " + squoted(g.up) + " has shape " + shape_str(up) + ", expected " +
                           shape_str(Shape{w[0], rank}) + " to change " + squoted(target) +
                           " of shape " + shape_str(w) + " with rank " + std::to_string(rank));
      float alpha = static_cast<float>(rank);
      if (!g.alpha.empty()) {
        const TensorInfo* a = ckpt.find(g.alpha);
        if (a->numel() != 1)
          mismatch(path, "tensor " + squoted(g.alpha) + " has shape " + shape_str(a->shape) +
                             ", expected a single value");
        alpha = ckpt.tensor_f32(g.alpha).f32()[0];
        if (!std::isfinite(alpha))
          mismatch(path, "tensor " + squoted(g.alpha) + " is not a finite number");
      }
      Patch p;
      p.file = index;
      p.up = g.up;
      p.down = g.down;
      p.rank = rank;
      p.scale = spec.strength * (alpha / static_cast<float>(rank));
      patches_[target].push_back(std::move(p));
    }
    files_.push_back(std::move(ckpt));
    paths_.push_back(path);
  }
}

std::vector<std::string> LoraMerge::targets() const {
  std::vector<std::string> out;
  for (const auto& [name, patches] : patches_) out.push_back(name);
  return out;
}

size_t LoraMerge::count_for(size_t index) const {
  size_t n = 0;
  for (const auto& [name, patches] : patches_)
    n += std::any_of(patches.begin(), patches.end(),
                     [&](const Patch& p) { return p.file == index; });
  return n;
}

void LoraMerge::apply(const std::string& canonical, Tensor& weight) const {
  if (!touches(canonical)) return;
  if (weight.dtype() != DType::F32 || weight.device() != Device::CPU || weight.ndim() < 1)
    throw Error("LoRA merge of " + squoted(canonical) + ": the weight must be a host F32 tensor");
  static const std::unique_ptr<Backend> cpu = make_backend("cpu");
  apply(canonical, weight, *cpu);
}

void LoraMerge::apply(const std::string& canonical, Tensor& weight, Backend& backend) const {
  const auto it = patches_.find(canonical);
  if (it == patches_.end()) return;
  if (weight.dtype() != DType::F32 || weight.device() != backend.device() || weight.ndim() < 1)
    throw Error("LoRA merge of " + squoted(canonical) + ": the weight must be an F32 tensor on " +
                backend.name());
  const int64_t rows = weight.dim(0);
  const int64_t cols = rows > 0 ? weight.numel() / rows : 0;
  for (const Patch& p : it->second) {
    const Checkpoint& file = files_[p.file];
    if (!p.delta.empty()) {
      const Tensor d = file.tensor_f32(p.delta);
      if (d.numel() != weight.numel())
        throw Error(paths_[p.file] + ": LoRA tensor " + squoted(p.delta) + " does not match " +
                    squoted(canonical));
      backend.add_scaled(weight, backend.upload(d.reshape(weight.shape()), DType::F32), p.scale);
      continue;
    }
    // W += scale * (up @ down), in fp32 on the backend (the weights' dtype comes after).
    const Tensor up = file.tensor_f32(p.up), down = file.tensor_f32(p.down);
    const int64_t rank = p.rank;
    if (up.numel() != rows * rank || down.numel() != rank * cols)
      throw Error(paths_[p.file] + ": LoRA tensors " + squoted(p.up) + " / " + squoted(p.down) +
                  " do not match " + squoted(canonical) + " " + shape_str(weight.shape()));
    backend.add_low_rank(weight, backend.upload(up.reshape({rows, rank}), DType::F32),
                         backend.upload(down.reshape({rank, cols}), DType::F32), p.scale);
  }
}

}  // namespace fisdit
