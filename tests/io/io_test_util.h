#pragma once
// Shared helpers of the io tests: a self-deleting temp directory, raw safetensors images, and
// checks on error messages.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "fisdit/error.h"

namespace fisdit::iotest {

#ifdef FISDIT_CLI_PATH
// Runs the fisdit binary with `args` (2 OpenMP threads, stdout discarded); `err` gets its stderr,
// kept in the file `stderr_path`. Returns the exit status, -1 when it did not exit normally.
inline int run_fisdit(const std::string& args, const std::string& stderr_path, std::string& err) {
  const std::string cmd = "OMP_NUM_THREADS=2 " + std::string(FISDIT_CLI_PATH) + " " + args + " 2>" +
                          stderr_path + " >/dev/null";
  const int status = std::system(cmd.c_str());
  std::ifstream e(stderr_path);
  err.assign(std::istreambuf_iterator<char>(e), std::istreambuf_iterator<char>());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
#endif

// A fresh directory under the system temp directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    std::random_device rd;
    const std::string name = "fisdit-io-test-" + std::to_string(::getpid()) + "-" +
                             std::to_string(counter++) + "-" + std::to_string(rd());
    path_ = std::filesystem::temp_directory_path() / name;
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

// A safetensors image: the 8-byte length (`header_len`, or the header's size), header, data.
inline std::string raw_safetensors(std::string_view header, std::string_view data = {},
                                   std::optional<uint64_t> header_len = std::nullopt) {
  const uint64_t n = header_len.value_or(header.size());
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  out.append(header);
  out.append(data);
  return out;
}

// The message of the fisdit::Error `fn` throws, or a marker saying what happened instead.
template <class F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<not a fisdit::Error: ") + e.what() + ">";
  }
  return "<no exception>";
}

// The parameter the fisdit::ParamError `fn` throws names; "<...>" for another error or none.
template <class F>
std::string param_of(F&& fn) {
  try {
    fn();
  } catch (const ParamError& e) {
    return e.param();
  } catch (const Error& e) {
    return std::string("<not a ParamError: ") + e.what() + ">";
  }
  return "<no exception>";
}

inline ::testing::AssertionResult contains(const std::string& message, std::string_view needle) {
  if (message.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "message \"" << message << "\" lacks \"" << needle << "\"";
}

}  // namespace fisdit::iotest
