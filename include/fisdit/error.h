#pragma once
// The exceptions fisdit throws at API boundaries. Messages are complete sentences that name the
// file, tensor, parameter or op involved; the CLI prints them as one line on stderr.
#include <stdexcept>
#include <string>
#include <utility>

namespace fisdit {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// An error in one named parameter of a request or setting. The message is the parameter's name
// followed by `rest` ("frames" + " 82: must be 4k+1 ..."); the command line reports it under the
// flag that sets the parameter ("--frames 82: must be 4k+1 ..."), a library user under its name.
// Names are the option fields' names (frames, size, lora_high, magcache_ratios, ...).
class ParamError : public Error {
 public:
  ParamError(std::string param, std::string rest)
      : Error(param + rest), param_(std::move(param)), rest_(std::move(rest)) {}
  const std::string& param() const { return param_; }
  const std::string& rest() const { return rest_; }

 private:
  std::string param_, rest_;
};

}  // namespace fisdit
