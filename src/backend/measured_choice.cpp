#include "backend/measured_choice.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <optional>

#include "fisdit/error.h"

namespace fisdit {

size_t choose_fastest(TuningCache& cache, const std::string& key,
                      const std::vector<std::string>& candidates, const TimeCandidate& time,
                      int runs) {
  if (candidates.empty()) throw Error("choose_fastest " + key + ": no candidates");
  if (const std::optional<std::string> entry = cache.get(key)) {
    const std::string chosen = entry->substr(0, entry->find(' '));
    const auto it = std::find(candidates.begin(), candidates.end(), chosen);
    if (it != candidates.end()) return static_cast<size_t>(it - candidates.begin());
    // Another build's candidates: measured again below, and replaced.
  }
  runs = std::max(runs, 1);
  std::optional<size_t> best;
  double best_ms = std::numeric_limits<double>::infinity();
  std::string times;
  for (size_t i = 0; i < candidates.size(); ++i) {
    double ms = std::numeric_limits<double>::infinity();
    bool ran = true;
    for (int r = 0; r < runs && ran; ++r) {
      const double t = time(i);
      if (t < 0)
        ran = false;
      else if (r > 0 || runs == 1)
        ms = std::min(ms, t);
    }
    if (!ran) continue;
    char text[64];
    std::snprintf(text, sizeof text, " %s=%.4g", candidates[i].c_str(), ms);
    times += text;
    if (!best || ms < best_ms) {
      best = i;
      best_ms = ms;
    }
  }
  if (!best)
    throw Error(key + ": none of its " + std::to_string(candidates.size()) +
                " candidates can run it");
  cache.put(key, candidates[*best] + times);
  return *best;
}

}  // namespace fisdit
