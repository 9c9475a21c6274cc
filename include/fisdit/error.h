#pragma once
// The one exception type fisdit throws at API boundaries. Messages are complete sentences that
// name the file, tensor, flag or op involved; the CLI prints them as one line on stderr.
#include <stdexcept>
#include <string>

namespace fisdit {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace fisdit
