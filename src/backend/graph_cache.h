#pragma once
// A model's recorded forwards (Backend::capture), one per kind of forward: its key names what a
// recording fixes (shapes, the blocks' FIS plans, which tensors it reads). A key's first forward
// runs op by op, which fills the lazily built caches (GEMM algorithms, attention plans and their
// workspaces, tables); its second is recorded and replayed; later ones are replayed. Each entry
// keeps the tensors its graph reads and writes (`buffers`: the model refills the inputs before a
// replay and copies the outputs after it). At most `capacity` entries are kept, the least
// recently used going first. A key whose recording failed runs op by op from then on.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace fisdit {

class GraphCache {
 public:
  struct Entry {
    Backend::Graph graph;
    std::vector<Tensor> buffers;
    std::shared_ptr<void> keep;  // anything else the graph reads, kept alive with it
  };
  enum class Step { Run, Record, Replay };
  struct Stats {
    int64_t runs = 0, recorded = 0, replayed = 0, failed = 0;
  };

  explicit GraphCache(size_t capacity = 16);

  // What the forward of `key` does now (and counts it): Run, Record (then store() and replay),
  // or Replay (entry() holds its graph).
  Step next(const std::string& key);
  // The recording of `key` (after next() said Record); evicts the least recently used entry when
  // full.
  void store(const std::string& key, Entry entry);
  // The entry of a key that next() said Replay for, or that was just stored; throws otherwise.
  Entry& entry(const std::string& key);
  // The recording of `key` failed (`why`): it runs op by op from now on. Returns true the first
  // time any key fails, for a one-time notice.
  bool failed(const std::string& key, const std::string& why);
  // Drops every entry and what is known of every key (the weights the graphs read changed).
  void clear();

  const Stats& stats() const { return stats_; }
  size_t size() const { return entries_.size(); }
  const std::string& last_failure() const { return last_failure_; }

 private:
  struct Known {
    int seen = 0;
    bool failed = false;
    uint64_t used = 0;  // the clock at its last forward
  };
  size_t capacity_;
  uint64_t clock_ = 0;
  std::map<std::string, Known> known_;
  std::map<std::string, Entry> entries_;
  Stats stats_;
  std::string last_failure_;
};

}  // namespace fisdit
