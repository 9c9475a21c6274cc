#include "accel/fis.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fisdit/error.h"

namespace fisdit::accel {

void FisConfig::validate() const {
  if (stride < 1) throw Error("FIS: --fis-stride must be >= 1, got " + std::to_string(stride));
  if (head < 0 || tail < 0) throw Error("FIS: --fis-head and --fis-tail must be >= 0");
  if (dense_last_steps < 0) throw Error("FIS: --fis-dense-last-steps must be >= 0");
  if (reconstruct == Reconstruct::Delta && granularity != Granularity::Block)
    throw Error("FIS: --fis-reconstruct delta needs --fis-granularity block (FIS.md)");
}

std::string granularity_name(Granularity g) {
  return g == Granularity::Module ? "module" : "block";
}
std::string reconstruct_name(Reconstruct r) {
  return r == Reconstruct::Linear ? "linear" : "delta";
}

Granularity parse_granularity(const std::string& s) {
  if (s == "module") return Granularity::Module;
  if (s == "block") return Granularity::Block;
  throw Error("FIS granularity must be module or block, got '" + s + "'");
}

Reconstruct parse_reconstruct(const std::string& s) {
  if (s == "linear") return Reconstruct::Linear;
  if (s == "delta") return Reconstruct::Delta;
  throw Error("FIS reconstruction must be linear or delta, got '" + s + "'");
}

std::string FisConfig::describe() const {
  if (!enabled()) return name == "off" ? "off (dense)" : name + " (s=1: dense)";
  return name + " (s=" + std::to_string(stride) + ", head=" + std::to_string(head) +
         ", tail=" + std::to_string(tail) +
         ", dense_last_steps=" + std::to_string(dense_last_steps) + ", " +
         (interleave ? "interleaved" : "fixed offset") + ", " + granularity_name(granularity) +
         ", " + reconstruct_name(reconstruct) + ")";
}

nlohmann::json FisConfig::to_json() const {
  return {{"name", name},
          {"stride", stride},
          {"head", head},
          {"tail", tail},
          {"dense_last_steps", dense_last_steps},
          {"interleave", interleave},
          {"granularity", granularity_name(granularity)},
          {"reconstruct", reconstruct_name(reconstruct)}};
}

FisConfig fis_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": FIS preset must be a JSON object");
  FisConfig c;
  c.name = "custom";
  for (const auto& item : j.items()) {
    const std::string& key = item.key();
    const nlohmann::json& value = item.value();
    auto need_int = [&]() {
      if (!value.is_number_integer())
        throw Error(source + ": FIS field '" + key + "' must be an integer");
      return value.get<int>();
    };
    auto need_str = [&]() {
      if (!value.is_string()) throw Error(source + ": FIS field '" + key + "' must be a string");
      return value.get<std::string>();
    };
    if (key == "name")
      c.name = need_str();
    else if (key == "stride")
      c.stride = need_int();
    else if (key == "head")
      c.head = need_int();
    else if (key == "tail")
      c.tail = need_int();
    else if (key == "dense_last_steps")
      c.dense_last_steps = need_int();
    else if (key == "interleave") {
      if (!value.is_boolean()) throw Error(source + ": FIS field 'interleave' must be true/false");
      c.interleave = value.get<bool>();
    } else if (key == "granularity")
      c.granularity = parse_granularity(need_str());
    else if (key == "reconstruct")
      c.reconstruct = parse_reconstruct(need_str());
    else
      throw Error(source + ": unknown FIS field '" + key + "'");
  }
  c.validate();
  return c;
}

FisConfig fis_preset(const std::string& name_or_path) {
  FisConfig c;
  c.name = name_or_path;
  if (name_or_path == "off") return c;
  // FIS.md, Presets (Wan 2.2, 40 blocks, 4 steps).
  if (name_or_path == "balanced" || name_or_path == "fast") {
    c.stride = name_or_path == "balanced" ? 3 : 5;
    c.head = 1;
    c.tail = 1;
    c.dense_last_steps = 1;
    return c;
  }
  std::ifstream in(name_or_path);
  if (!in)
    throw ParamError("fis", ": '" + name_or_path +
                                "' is neither off, balanced, fast nor a readable JSON preset file");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(name_or_path + ": invalid JSON: " + e.what());
  }
  return fis_from_json(j, name_or_path);
}

FisPlan::FisPlan(FisConfig config, int num_blocks, int num_steps, int num_frames)
    : config_(std::move(config)),
      num_blocks_(num_blocks),
      num_steps_(num_steps),
      num_frames_(num_frames) {
  config_.validate();
  if (num_blocks < 1 || num_steps < 1 || num_frames < 1)
    throw Error("FIS plan needs at least one block, step and frame");
}

bool FisPlan::step_open(int step) const { return step < num_steps_ - config_.dense_last_steps; }

bool FisPlan::block_in_range(int block) const {
  return block >= config_.head && block < num_blocks_ - config_.tail;
}

std::vector<int32_t> FisPlan::anchor_frames(int block) const {
  const int s = config_.stride, t = num_frames_;
  const int offset = config_.interleave ? ((block - config_.head) % s + s) % s : 0;
  std::vector<int32_t> anchors;
  for (int f = 0; f < t; ++f)
    if (f % s == offset || f == 0 || f == t - 1) anchors.push_back(f);
  return anchors;
}

BlockPlan FisPlan::plan_for(bool step_open, int block) const {
  BlockPlan plan;
  if (!config_.enabled() || !step_open || !block_in_range(block)) return plan;
  plan.anchors = anchor_frames(block);
  plan.sparse = static_cast<int>(plan.anchors.size()) < num_frames_;
  if (!plan.sparse) plan.anchors.clear();
  return plan;
}

}  // namespace fisdit::accel
