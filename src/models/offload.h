#pragma once
// Block offload (--gpu-memory-limit): a model whose weights do not fit the memory budget keeps
// some of its blocks in host memory and streams each one into a device slot just ahead of its
// use, on the backend's copy stream, while the blocks before it compute. Family-agnostic: a model
// hands each block's weight tensors to a BlockStreamer as it loads them and brackets every block
// it runs with fetch() and release().
//
// Which blocks stream: evenly spaced through the stack (plan_offload), so a copy overlaps the
// compute of the resident blocks before it, not only of the one streamed block before it; the
// copies run in block order, cyclically, so the first streamed block of the next forward is on
// its way while the last blocks of this one run.
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "models/model.h"

namespace fisdit::models {

// The bytes a tensor of `bytes` takes on the device: rounded up to 256, where the device allocator
// and a streamed block's packing start each tensor.
int64_t device_bytes(int64_t bytes);

struct OffloadPlan {
  std::vector<bool> streamed;  // per block; all false: every block resident
  int slots = 0;               // device buffers the streamed blocks rotate through
  int64_t device_bytes = 0;    // the model's weights on the device: others, resident, slots
  int64_t min_bytes = 0;       // the least that placement could use (others + two slots)
  bool fits = true;            // false: the budget is below min_bytes
  int streamed_count() const;
  bool active() const { return streamed_count() > 0; }
  std::string describe() const;  // "12 of 40 blocks streamed from host memory, 2 slots"
};

// The placement of `num_blocks` blocks of `block_bytes` each (as the device stores them) and
// `other_bytes` of weights outside the blocks within `budget` bytes of weights on the device
// (-1: unlimited, every block resident). Streamed blocks rotate through two slots.
OffloadPlan plan_offload(int num_blocks, int64_t block_bytes, int64_t other_bytes, int64_t budget);

// What the backend's memory budget leaves a model for its weights: the limit less what the
// backend holds already and the activation reserve (-1 without a limit).
int64_t weight_budget(const Backend& backend);
// The device memory of forwards over `grid` beside the weights on `backend`:
// ModelInfo::activation_bytes in the backend's activation dtype (0 when the family has no
// estimate).
int64_t activation_reserve(const ModelInfo& info, const Backend& backend, const LatentGrid& grid,
                           bool fis, bool cache);
// Under a memory limit, that reserve becomes the backend's (what a model loaded next leaves free
// for the activations); nothing without a limit.
void reserve_activations(Backend& backend, const ModelInfo& info, const LatentGrid& grid, bool fis,
                         bool cache);

// plan_offload within weight_budget(backend); when it does not fit, throws
// ParamError("gpu-memory-limit", ...) naming the smallest limit that would work for `model`.
OffloadPlan plan_for_budget(const Backend& backend, int num_blocks, int64_t block_bytes,
                            int64_t other_bytes, const std::string& model);

class BlockStreamer {
 public:
  BlockStreamer(Backend& backend, OffloadPlan plan);
  ~BlockStreamer();
  BlockStreamer(const BlockStreamer&) = delete;
  BlockStreamer& operator=(const BlockStreamer&) = delete;

  const OffloadPlan& plan() const { return plan_; }
  // Block `index`'s weights, as loaded on the device: a streamed block's move to host memory
  // now (its device memory is freed) and the tensors are left pointing there. Blocks are added
  // in order; after the last one the slots are made and the first copies start.
  void add_block(int index, const std::vector<Tensor*>& tensors);
  // Before block `index` runs: its tensors point at device memory holding its weights (the ops
  // queued from here wait for its copy). Resident blocks: nothing to do.
  void fetch(int index);
  // After block `index`'s ops are queued: its slot takes the next streamed block once they have
  // run, and its tensors point back at host memory (a use outside fetch/release fails).
  void release(int index);
  // Bytes copied to the device since construction (for logs and tests).
  int64_t bytes_streamed() const { return bytes_streamed_; }

 private:
  struct Block {
    std::vector<Tensor*> tensors;
    std::vector<Tensor> home;  // views into `host`
    std::vector<int64_t> offset;
    Tensor host;  // U8, page-locked
  };
  struct Slot {
    Tensor buffer;   // U8 on the device
    int holds = -1;  // position in order_ of the block it holds or is receiving
    Backend::Event ready;
  };
  void start_copy(Slot& slot, int position, const Backend::Event& after);
  void point_at(Block& block, const Tensor& storage);

  Backend& backend_;
  OffloadPlan plan_;
  std::vector<Block> blocks_;  // streamed blocks, in block order
  std::vector<int> order_;     // their block indices
  std::vector<int> position_;  // block index -> position in order_, or -1
  std::vector<Slot> slots_;
  int next_ = 0;     // position in order_ of the next block to copy
  int in_use_ = -1;  // slot fetched and not released
  int64_t slot_bytes_ = 0;
  int64_t bytes_streamed_ = 0;
};

}  // namespace fisdit::models
