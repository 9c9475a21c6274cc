#pragma once
// The PNG figures of an analysis JSON (analysis/analyze.h), through analysis/plot.h.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace fisdit::analysis {

// Writes into `dir`: cv_heatmap.png (CV over block and step), rel_change.png (R_f over the frame
// pairs for up to six blocks, averaged over steps) and, per measured FIS setting i,
// frame_error_<i>.png (per-frame error on the sparse steps: the final block's output, and the last
// sparse block's output with anchor and interpolated frames marked apart). Returns the paths.
std::vector<std::string> write_analysis_figures(const nlohmann::json& analysis,
                                                const std::string& dir);

}  // namespace fisdit::analysis
