#include "models/offload.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "fisdit/error.h"

namespace fisdit::models {

namespace {
constexpr int kSlots = 2;
double gib(int64_t bytes) { return static_cast<double>(bytes) / 1073741824.0; }
}  // namespace

int64_t device_bytes(int64_t bytes) { return (bytes + 255) / 256 * 256; }

int OffloadPlan::streamed_count() const {
  return static_cast<int>(std::count(streamed.begin(), streamed.end(), true));
}

std::string OffloadPlan::describe() const {
  char text[160];
  std::snprintf(text, sizeof text,
                "%d of %zu blocks streamed from host memory through %d slots, %.2f GiB of "
                "weights on the device",
                streamed_count(), streamed.size(), slots, gib(device_bytes));
  return text;
}

OffloadPlan plan_offload(int num_blocks, int64_t block_bytes, int64_t other_bytes, int64_t budget) {
  OffloadPlan plan;
  plan.streamed.assign(static_cast<size_t>(num_blocks), false);
  const int64_t all = other_bytes + int64_t{num_blocks} * block_bytes;
  plan.min_bytes = std::min(all, other_bytes + kSlots * block_bytes);
  plan.device_bytes = all;
  if (budget < 0 || all <= budget) return plan;
  if (budget < plan.min_bytes) {
    plan.fits = false;
    return plan;
  }
  // Resident blocks beside the slots; the rest (more than kSlots, else all would fit) stream.
  const int resident = static_cast<int>((budget - other_bytes) / block_bytes) - kSlots;
  const int streamed = num_blocks - resident;
  for (int i = 0; i < num_blocks; ++i)  // evenly spaced: block i streams when a step is crossed
    plan.streamed[static_cast<size_t>(i)] =
        (int64_t{i + 1} * streamed) / num_blocks > (int64_t{i} * streamed) / num_blocks;
  plan.slots = kSlots;
  plan.device_bytes = other_bytes + int64_t{resident + kSlots} * block_bytes;
  return plan;
}

int64_t weight_budget(const Backend& backend) {
  const Backend::MemoryBudget& b = backend.memory_budget();
  if (b.limit < 0) return -1;
  const int64_t in_use = std::max<int64_t>(backend.memory_in_use(), 0);
  return std::max<int64_t>(b.limit - in_use - b.reserve, 0);
}

int64_t activation_reserve(const ModelInfo& info, const Backend& backend, const LatentGrid& grid,
                           bool fis, bool cache) {
  if (!info.activation_bytes) return 0;
  return info.activation_bytes(grid, static_cast<int>(dtype_size(backend.activation_dtype())), fis,
                               cache);
}

void reserve_activations(Backend& backend, const ModelInfo& info, const LatentGrid& grid, bool fis,
                         bool cache) {
  Backend::MemoryBudget budget = backend.memory_budget();
  if (budget.limit < 0) return;
  budget.reserve = activation_reserve(info, backend, grid, fis, cache);
  backend.set_memory_budget(budget);
}

OffloadPlan plan_for_budget(const Backend& backend, int num_blocks, int64_t block_bytes,
                            int64_t other_bytes, const std::string& model) {
  OffloadPlan plan = plan_offload(num_blocks, block_bytes, other_bytes, weight_budget(backend));
  if (plan.fits) return plan;
  const Backend::MemoryBudget& b = backend.memory_budget();
  const int64_t in_use = std::max<int64_t>(backend.memory_in_use(), 0);
  const double smallest = std::ceil(gib(in_use + b.reserve + plan.min_bytes) * 100.0) / 100.0;
  char text[512];
  std::snprintf(text, sizeof text,
                " %.2f GiB is too small for %s: its weights need at least %.2f GiB on the device "
                "(%.2f GiB outside the blocks and two slots of %.2f GiB for the streamed blocks), "
                "this run's activations about %.2f GiB and %.2f GiB is in use already; the "
                "smallest limit that would work is %.2f GiB",
                gib(b.limit), model.c_str(), gib(plan.min_bytes), gib(other_bytes),
                gib(block_bytes), gib(b.reserve), gib(in_use), smallest);
  throw ParamError("gpu-memory-limit", text);
}

BlockStreamer::BlockStreamer(Backend& backend, OffloadPlan plan)
    : backend_(backend), plan_(std::move(plan)) {
  position_.assign(plan_.streamed.size(), -1);
  for (size_t i = 0; i < plan_.streamed.size(); ++i)
    if (plan_.streamed[i]) {
      position_[i] = static_cast<int>(order_.size());
      order_.push_back(static_cast<int>(i));
    }
  blocks_.resize(order_.size());
}

BlockStreamer::~BlockStreamer() {
  try {  // copies in flight read host buffers that die with this object
    if (!slots_.empty()) backend_.synchronize();
  } catch (...) {
  }
}

void BlockStreamer::point_at(Block& block, const Tensor& storage) {
  auto* base = static_cast<char*>(const_cast<void*>(storage.raw()));
  for (size_t j = 0; j < block.tensors.size(); ++j)
    *block.tensors[j] =
        Tensor::view_of(storage.owner(), base + block.offset[j], block.home[j].shape(),
                        block.home[j].dtype(), storage.device());
}

void BlockStreamer::add_block(int index, const std::vector<Tensor*>& tensors) {
  if (index < 0 || static_cast<size_t>(index) >= position_.size())
    throw Error("BlockStreamer: block " + std::to_string(index) + " is not in the plan");
  const int pos = position_[static_cast<size_t>(index)];
  if (pos >= 0) {
    Block& b = blocks_[static_cast<size_t>(pos)];
    b.tensors = tensors;
    int64_t total = 0;
    for (const Tensor* t : tensors) {
      b.offset.push_back(total);
      total += device_bytes(static_cast<int64_t>(t->nbytes()));
    }
    b.host = backend_.pinned_host({total}, DType::U8);
    for (size_t j = 0; j < tensors.size(); ++j) {
      const Tensor& t = *tensors[j];
      Tensor home = Tensor::view_of(b.host.owner(), b.host.data_as<char>() + b.offset[j], t.shape(),
                                    t.dtype(), Device::CPU);
      backend_.copy(t, home);  // finished when copy returns: the device copy can go
      b.home.push_back(home);
    }
    point_at(b, b.host);  // frees the device copies
    slot_bytes_ = std::max(slot_bytes_, total);
  }
  if (static_cast<size_t>(index) + 1 == position_.size() && !order_.empty()) {
    const Backend::Event allocated = [&] {
      for (int s = 0; s < plan_.slots; ++s)
        slots_.push_back({backend_.empty({slot_bytes_}, DType::U8), -1, {}});
      return backend_.record();
    }();
    for (Slot& slot : slots_) {
      start_copy(slot, next_, allocated);
      next_ = (next_ + 1) % static_cast<int>(order_.size());
    }
  }
}

void BlockStreamer::start_copy(Slot& slot, int position, const Backend::Event& after) {
  const Block& b = blocks_[static_cast<size_t>(position)];
  Tensor dst =
      Tensor::view_of(slot.buffer.owner(), const_cast<void*>(slot.buffer.raw()),
                      {static_cast<int64_t>(b.host.nbytes())}, DType::U8, slot.buffer.device());
  slot.holds = position;
  slot.ready = backend_.copy_async(b.host, dst, after);
  bytes_streamed_ += static_cast<int64_t>(b.host.nbytes());
}

void BlockStreamer::fetch(int index) {
  const int pos = index >= 0 && static_cast<size_t>(index) < position_.size()
                      ? position_[static_cast<size_t>(index)]
                      : -1;
  if (pos < 0) return;
  if (slots_.empty())
    throw Error("BlockStreamer: block " + std::to_string(index) +
                " fetched before the model was loaded");
  if (in_use_ >= 0) {  // a forward that failed mid-block: that block's tensors go home
    Slot& prev = slots_[static_cast<size_t>(in_use_)];
    point_at(blocks_[static_cast<size_t>(prev.holds)],
             blocks_[static_cast<size_t>(prev.holds)].host);
    in_use_ = -1;
  }
  auto held =
      std::find_if(slots_.begin(), slots_.end(), [&](const Slot& s) { return s.holds == pos; });
  if (held == slots_.end()) {  // out of the usual order: start the rotation again from here
    const Backend::Event now = backend_.record();
    next_ = pos;
    for (Slot& slot : slots_) {
      start_copy(slot, next_, now);
      next_ = (next_ + 1) % static_cast<int>(order_.size());
    }
    held = slots_.begin();
  }
  backend_.wait(held->ready);
  point_at(blocks_[static_cast<size_t>(pos)], held->buffer);
  in_use_ = static_cast<int>(held - slots_.begin());
}

void BlockStreamer::release(int index) {
  const int pos = index >= 0 && static_cast<size_t>(index) < position_.size()
                      ? position_[static_cast<size_t>(index)]
                      : -1;
  if (pos < 0 || in_use_ < 0) return;
  Slot& slot = slots_[static_cast<size_t>(in_use_)];
  if (slot.holds != pos) return;
  Block& b = blocks_[static_cast<size_t>(pos)];
  point_at(b, b.host);
  in_use_ = -1;
  // The slot takes the next block in the rotation once this block's ops have run.
  start_copy(slot, next_, backend_.record());
  next_ = (next_ + 1) % static_cast<int>(order_.size());
}

}  // namespace fisdit::models
