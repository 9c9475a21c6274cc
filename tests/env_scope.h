#pragma once
// An environment variable set (or unset) for one scope and restored when it ends, also when a
// failed ASSERT or an exception leaves the scope early: a test's setting never leaks into the
// tests after it.
#include <cstdlib>
#include <optional>
#include <string>

namespace fisdit::test {

class EnvScope {
 public:
  // `value` null: unset for the scope.
  EnvScope(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~EnvScope() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }
  EnvScope(const EnvScope&) = delete;
  EnvScope& operator=(const EnvScope&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace fisdit::test
