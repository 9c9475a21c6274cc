#include "backend/tuning_cache.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fisdit {

namespace {
constexpr const char* kHeader = "fisdit tuning cache 1";

// Keys and values are single-line text without tabs.
bool clean(const std::string& s) { return s.find_first_of("\t\n\r") == std::string::npos; }

// FNV-1a, 64 bits: the same name for the same key on every build.
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}
}  // namespace

TuningCache::TuningCache(std::string dir, const std::string& name, std::string device_key)
    : device_key_(std::move(device_key)) {
  if (dir.empty() || !clean(device_key_)) return;
  // One file per device key: its hash in the name, the key itself in the header.
  char hash[32];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(fnv1a(device_key_)));
  path_ = (std::filesystem::path(dir) / (name + "-" + hash + ".txt")).string();
  entries_ = read_file();
}

std::map<std::string, std::string> TuningCache::read_file() const {
  std::map<std::string, std::string> out;
  std::ifstream in(path_);
  std::string line;
  if (!in || !std::getline(in, line) || line != std::string(kHeader) + "\t" + device_key_)
    return out;  // none yet, unreadable, or another device's
  while (std::getline(in, line)) {
    const size_t tab = line.find('\t');
    if (tab == std::string::npos || tab == 0) continue;  // a torn or foreign line
    out[line.substr(0, tab)] = line.substr(tab + 1);
  }
  return out;
}

std::optional<std::string> TuningCache::get(const std::string& key) const {
  const auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

void TuningCache::put(const std::string& key, const std::string& value) {
  if (key.empty() || !clean(key) || !clean(value)) return;
  entries_[key] = value;
  if (path_.empty()) return;
  // Merged with what is on disk now (another process may have added entries), ours winning.
  std::map<std::string, std::string> all = read_file();
  for (const auto& [k, v] : entries_) all[k] = v;
  std::error_code ec;
  const std::filesystem::path target(path_);
  std::filesystem::create_directories(target.parent_path(), ec);
  const std::string tmp = path_ + ".tmp" + std::to_string(::getpid());
  bool ok = false;
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (out) {
      out << kHeader << '\t' << device_key_ << '\n';
      for (const auto& [k, v] : all) out << k << '\t' << v << '\n';
      out.flush();
      ok = static_cast<bool>(out);
    }
  }
  if (ok) {
    std::filesystem::rename(tmp, target, ec);
    ok = !ec;
  }
  if (!ok) {
    std::filesystem::remove(tmp, ec);
    if (!write_failed_)
      std::fprintf(stderr,
                   "fisdit: cannot write the tuning cache %s (set FISDIT_CACHE_DIR, or off); "
                   "tuned choices are kept for this process only\n",
                   path_.c_str());
    write_failed_ = true;
  }
}

std::string TuningCache::default_dir() {
  if (const char* d = std::getenv("FISDIT_CACHE_DIR"); d && *d)
    return std::string(d) == "off" ? "" : d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return (std::filesystem::path(x) / "fisdit").string();
  if (const char* h = std::getenv("HOME"); h && *h)
    return (std::filesystem::path(h) / ".cache" / "fisdit").string();
  return "";
}

}  // namespace fisdit
