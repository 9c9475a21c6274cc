#include "core/env.h"

#include <cstdlib>
#include <string>

#include "fisdit/error.h"

namespace fisdit {

bool env_switch(const char* name, bool fallback) {
  const char* env = std::getenv(name);
  if (!env || !*env) return fallback;
  if (std::string(env) == "0") return false;
  if (std::string(env) == "1") return true;
  throw Error(std::string(name) + ": must be 0 (off) or 1 (on), got '" + env + "'");
}

}  // namespace fisdit
