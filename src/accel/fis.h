#pragma once
// Frame Interleaved Sparsity: the plan that says, per (step, block), whether a block runs dense or
// sparse and on which anchor frames. Semantics: docs/FIS.md (the contract).
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace fisdit::accel {

enum class Granularity { Module, Block };
enum class Reconstruct { Linear, Delta };

struct FisConfig {
  std::string name = "off";  // preset name, "custom" once overridden
  int stride = 1;            // s; 1 = dense
  int head = 0;              // leading dense blocks
  int tail = 0;              // trailing dense blocks
  int dense_last_steps = 0;  // final dense steps
  bool interleave = true;    // rotate anchor offsets over blocks
  Granularity granularity = Granularity::Module;
  Reconstruct reconstruct = Reconstruct::Linear;

  bool enabled() const { return stride > 1; }
  // Throws fisdit::Error on an inconsistent setting (stride < 1, delta with module granularity...).
  void validate() const;
  std::string describe() const;  // "balanced (s=3, head=1, tail=1, dense_last_steps=1, ...)"
  nlohmann::json to_json() const;
};

// off | balanced | fast, or a path to a JSON preset file (fields as to_json writes them).
FisConfig fis_preset(const std::string& name_or_path);
FisConfig fis_from_json(const nlohmann::json& j, const std::string& source);
std::string granularity_name(Granularity g);
std::string reconstruct_name(Reconstruct r);
Granularity parse_granularity(const std::string& s);  // module | block
Reconstruct parse_reconstruct(const std::string& s);  // linear | delta

struct BlockPlan {
  bool sparse = false;
  std::vector<int32_t> anchors;  // sorted frame indices; filled only when sparse
};

class FisPlan {
 public:
  FisPlan(FisConfig config, int num_blocks, int num_steps, int num_frames);

  const FisConfig& config() const { return config_; }
  int num_blocks() const { return num_blocks_; }
  int num_steps() const { return num_steps_; }
  int num_frames() const { return num_frames_; }

  // Sparse steps: k < N - dense_last_steps.
  bool step_open(int step) const;
  bool block_in_range(int block) const;  // head <= l < L - tail
  // A_l (FIS.md, Anchors) for block l, whether or not it is sparse.
  std::vector<int32_t> anchor_frames(int block) const;
  // The plan of one block on a step whose gate is `step_open`. Dense whenever the anchors
  // cover every frame (s = 1, T <= 2), so those cases run exactly the dense code.
  BlockPlan plan_for(bool step_open, int block) const;
  BlockPlan at(int step, int block) const { return plan_for(step_open(step), block); }

 private:
  FisConfig config_;
  int num_blocks_, num_steps_, num_frames_;
};

}  // namespace fisdit::accel
