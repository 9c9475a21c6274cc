#include "models/release.h"

namespace fisdit::models {

std::string ReleaseInfo::part(const std::string& role) const {
  for (const auto& [r, path] : parts)
    if (r == role) return path;
  return "";
}

std::pair<int, int> Release::frame_size(int width, int height, int, int) const {
  return {width, height};
}

}  // namespace fisdit::models
