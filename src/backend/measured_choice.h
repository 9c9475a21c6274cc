#pragma once
// The fastest of a few interchangeable ways to run one call shape (say the bf16 and the fp8
// attention of 1,280 tokens x 24 heads), measured the first time the shape comes and remembered
// in a TuningCache: a later call of the shape, and a later process on the same device and library
// versions, read the choice instead of measuring again.
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "backend/tuning_cache.h"

namespace fisdit {

// Runs candidate `index` once and returns its milliseconds; negative: it cannot run this shape.
using TimeCandidate = std::function<double(size_t index)>;

// Returns the index in `candidates` (names without spaces, tabs or '=') of the fastest for `key`.
// An entry of `cache` for the key that names a candidate is used without measuring. Otherwise
// each candidate runs `runs` times (the first warms it up and is not counted when runs > 1), the
// best time counts, and the choice goes into the cache as "<chosen> <name>=<ms> ...", with the
// times of all that ran. A candidate that cannot run is never chosen; when none can, the Error
// names the key.
size_t choose_fastest(TuningCache& cache, const std::string& key,
                      const std::vector<std::string>& candidates, const TimeCandidate& time,
                      int runs = 2);

}  // namespace fisdit
