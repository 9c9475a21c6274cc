#pragma once
// Choices a backend tunes by measuring (the cuDNN convolution algorithm and layout of each VAE
// shape), kept in a small file per device and library version, so that a later process reads
// them instead of measuring again: the first decode of a new process then pays no search.
//
// The file: a header line "fisdit tuning cache 1<TAB><device key>", then one "key<TAB>value"
// line per entry. A file whose header names another device key, or that cannot be read, is
// ignored (and replaced on the next put); writes go to a temporary file renamed over the old one,
// merged with what another process may have written meanwhile.
#include <map>
#include <optional>
#include <string>

namespace fisdit {

class TuningCache {
 public:
  // `dir`: the cache directory ("" disables the cache); `name`: the file's name stem (say
  // "cudnn-conv"); `device_key`: what the entries are valid for (GPU, driver, library versions).
  TuningCache(std::string dir, const std::string& name, std::string device_key);

  bool enabled() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  std::optional<std::string> get(const std::string& key) const;
  // Records an entry and writes the file; a file that cannot be written is reported once on
  // stderr and the entry is kept in memory only.
  void put(const std::string& key, const std::string& value);
  size_t size() const { return entries_.size(); }

  // $FISDIT_CACHE_DIR ("off" disables), else $XDG_CACHE_HOME/fisdit, else $HOME/.cache/fisdit,
  // else "" (no cache).
  static std::string default_dir();

 private:
  std::map<std::string, std::string> read_file() const;

  std::string path_, device_key_;
  std::map<std::string, std::string> entries_;
  bool write_failed_ = false;
};

}  // namespace fisdit
