#include "backend/graph_cache.h"

#include <utility>

#include "fisdit/error.h"

namespace fisdit {

GraphCache::GraphCache(size_t capacity) : capacity_(capacity > 0 ? capacity : 1) {}

GraphCache::Step GraphCache::next(const std::string& key) {
  if (!known_.count(key) && known_.size() >= 16 * capacity_) {  // forget the stalest unrecorded
    auto stalest = known_.end();
    for (auto it = known_.begin(); it != known_.end(); ++it)
      if (!entries_.count(it->first) &&
          (stalest == known_.end() || it->second.used < stalest->second.used))
        stalest = it;
    if (stalest != known_.end()) known_.erase(stalest);
  }
  Known& k = known_[key];
  k.used = ++clock_;
  if (entries_.count(key)) {
    ++stats_.replayed;
    return Step::Replay;
  }
  if (k.failed || k.seen++ == 0) {
    ++stats_.runs;
    return Step::Run;
  }
  ++stats_.recorded;
  return Step::Record;
}

void GraphCache::store(const std::string& key, Entry entry) {
  if (!entry.graph) throw Error("GraphCache: storing an entry without a graph");
  while (entries_.size() >= capacity_) {
    auto oldest = entries_.begin();
    for (auto it = entries_.begin(); it != entries_.end(); ++it)
      if (known_[it->first].used < known_[oldest->first].used) oldest = it;
    // Its key starts over: seen again, it runs once and is recorded again.
    known_.erase(oldest->first);
    entries_.erase(oldest);
  }
  entries_[key] = std::move(entry);
}

GraphCache::Entry& GraphCache::entry(const std::string& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) throw Error("GraphCache: no recorded graph for this forward");
  return it->second;
}

bool GraphCache::failed(const std::string& key, const std::string& why) {
  known_[key].failed = true;
  entries_.erase(key);
  ++stats_.failed;
  --stats_.recorded;
  ++stats_.runs;
  const bool first = last_failure_.empty();
  last_failure_ = why.empty() ? "unknown" : why;
  return first;
}

void GraphCache::clear() {
  entries_.clear();
  known_.clear();
}

}  // namespace fisdit
