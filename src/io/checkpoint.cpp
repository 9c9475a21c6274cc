#include "io/checkpoint.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>

#include "fisdit/error.h"
#include "io/text.h"

namespace fisdit {

namespace fs = std::filesystem;

struct Checkpoint::State {
  std::string path;
  std::vector<std::shared_ptr<SafetensorsFile>> files;
  struct Entry {
    size_t file = 0;
    const TensorInfo* info = nullptr;
  };
  std::map<std::string, Entry, std::less<>> tensors;
  std::optional<std::string> config;
};

namespace {

constexpr std::string_view kIndexSuffix = ".safetensors.index.json";
constexpr std::string_view kSafetensorsSuffix = ".safetensors";

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(path + ": " + what);
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// JSON side files (index, config) are small; a huge one is a wrong path, not a checkpoint.
constexpr uintmax_t kMaxJsonFileBytes = 64u << 20;

std::string read_text(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) fail(path, "is not a regular file");
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) fail(path, "cannot read: " + ec.message());
  if (size > kMaxJsonFileBytes)
    fail(path, "is " + std::to_string(size) + " bytes, too large for a JSON index or config");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open for reading");
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) fail(path, "read failed");
  return buf.str();
}

nlohmann::json read_json(const std::string& path) {
  const std::string text = read_text(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("not valid JSON: ") + e.what());
  }
}

bool is_regular(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);  // follows symlinks (Hugging Face caches use them)
}

std::optional<std::string> config_beside(const fs::path& dir) {
  const fs::path config = dir / "config.json";
  if (is_regular(config)) return config.string();
  return std::nullopt;
}

void add_file(Checkpoint::State& s, std::shared_ptr<SafetensorsFile> file) {
  const size_t index = s.files.size();
  for (const TensorInfo& info : file->tensors()) {
    const auto [it, inserted] =
        s.tensors.emplace(info.name, Checkpoint::State::Entry{index, &info});
    if (!inserted)
      fail(s.path, "tensor " + squoted(info.name) + " is in both " +
                       s.files[it->second.file]->path() + " and " + file->path());
  }
  s.files.push_back(std::move(file));
}

void open_index(Checkpoint::State& s, const std::string& index_path) {
  const nlohmann::json index = read_json(index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail(index_path, "not a safetensors index: expected an object with a \"weight_map\" object");
  const auto& weight_map = index["weight_map"];
  if (weight_map.empty()) fail(index_path, "the weight_map lists no tensors");
  const fs::path dir = fs::path(index_path).parent_path();

  std::map<std::string, size_t> shard_file;  // shard name -> index in s.files
  for (const auto& [name, shard_json] : weight_map.items()) {
    if (!shard_json.is_string() || shard_json.get<std::string>().empty())
      fail(index_path,
           "weight_map entry for tensor " + squoted(name) + " is not a shard file name");
    const std::string shard = shard_json.get<std::string>();
    auto it = shard_file.find(shard);
    if (it == shard_file.end()) {
      const fs::path shard_path = dir / shard;
      std::error_code ec;
      if (!fs::exists(shard_path, ec))
        fail(index_path, "shard " + squoted(shard) + " (listed for tensor " + squoted(name) +
                             ") does not exist: " + shard_path.string());
      it = shard_file.emplace(shard, s.files.size()).first;
      s.files.push_back(SafetensorsFile::open(shard_path.string()));
    }
    const SafetensorsFile& file = *s.files[it->second];
    const TensorInfo* info = file.find(name);
    if (!info)
      fail(index_path, "tensor " + squoted(name) + " is listed in shard " + squoted(shard) +
                           " but absent from " + file.path());
    s.tensors.emplace(name, Checkpoint::State::Entry{it->second, info});
  }
}

void open_directory(Checkpoint::State& s, const fs::path& dir) {
  std::vector<std::string> indexes, files;
  try {
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (!is_regular(entry.path())) continue;
      if (ends_with(name, kIndexSuffix))
        indexes.push_back(entry.path().string());
      else if (ends_with(name, kSafetensorsSuffix))
        files.push_back(entry.path().string());
    }
  } catch (const fs::filesystem_error& e) {
    fail(s.path, std::string("cannot list the directory: ") + e.code().message());
  }
  std::sort(indexes.begin(), indexes.end());
  std::sort(files.begin(), files.end());
  s.config = config_beside(dir);
  if (indexes.size() > 1) {
    std::string list;
    for (const auto& p : indexes)
      list += (list.empty() ? "" : ", ") + fs::path(p).filename().string();
    fail(s.path,
         "directory has several safetensors index files (" + list + "); pass the one to use");
  }
  if (indexes.size() == 1) {
    open_index(s, indexes[0]);
    return;
  }
  if (files.empty())
    fail(s.path, "directory has no *.safetensors files and no *.safetensors.index.json");
  for (const auto& f : files) add_file(s, SafetensorsFile::open(f));
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& path) {
  auto s = std::make_shared<State>();
  s->path = path;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    if (!ec || ec == std::errc::no_such_file_or_directory) fail(path, "no such file or directory");
    fail(path, "cannot access: " + ec.message());
  }
  if (fs::is_directory(status)) {
    open_directory(*s, fs::path(path));
  } else if (ends_with(path, kIndexSuffix)) {
    s->config = config_beside(fs::path(path).parent_path());
    open_index(*s, path);
  } else {
    const std::string ext = lower(fs::path(path).extension().string());
    if (ext == ".pkl")
      fail(path,
           "looks like a plain pickle; fisdit reads safetensors and torch.save zip checkpoints "
           "(.pth, .pt, .bin, .ckpt)");
    if (ext == ".gguf") fail(path, "GGUF checkpoints are not supported; use safetensors");
    if (ext == ".pt" || ext == ".pth" || ext == ".bin" || ext == ".ckpt")
      add_file(*s, SafetensorsFile::open_pth(path));
    else
      add_file(*s, SafetensorsFile::open(path));
  }
  return Checkpoint(std::move(s));
}

Checkpoint Checkpoint::from_file(std::shared_ptr<SafetensorsFile> file) {
  if (!file) throw Error("Checkpoint::from_file: no file");
  auto s = std::make_shared<State>();
  s->path = file->path();
  add_file(*s, std::move(file));
  return Checkpoint(std::move(s));
}

const std::string& Checkpoint::path() const { return state_->path; }

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(state_->tensors.size());
  for (const auto& [name, entry] : state_->tensors) out.push_back(name);
  return out;
}

size_t Checkpoint::size() const { return state_->tensors.size(); }

const TensorInfo* Checkpoint::find(std::string_view name) const {
  const auto it = state_->tensors.find(name);
  return it == state_->tensors.end() ? nullptr : it->second.info;
}

namespace {
const Checkpoint::State::Entry& require(const Checkpoint::State& s, std::string_view name) {
  const auto it = s.tensors.find(name);
  if (it == s.tensors.end())
    fail(s.path, "tensor " + squoted(name) + " not found in the checkpoint");
  return it->second;
}
}  // namespace

Tensor Checkpoint::tensor(std::string_view name) const {
  const auto& e = require(*state_, name);
  return state_->files[e.file]->tensor(name);
}

Tensor Checkpoint::tensor_f32(std::string_view name) const {
  const auto& e = require(*state_, name);
  return state_->files[e.file]->tensor_f32(name);
}

const std::string& Checkpoint::file_of(std::string_view name) const {
  return state_->files[require(*state_, name).file]->path();
}

const std::vector<std::shared_ptr<SafetensorsFile>>& Checkpoint::files() const {
  return state_->files;
}

const std::optional<std::string>& Checkpoint::config_path() const { return state_->config; }

std::optional<nlohmann::json> Checkpoint::config_json() const {
  if (!state_->config) return std::nullopt;
  return read_json(*state_->config);
}

std::optional<std::string> shortest_prefix(const std::vector<std::string>& names,
                                           std::string_view anchor) {
  std::optional<std::string> best;
  for (const std::string& name : names) {
    if (!std::string_view(name).ends_with(anchor)) continue;
    const std::string p = name.substr(0, name.size() - anchor.size());
    if (!p.empty() && p.back() != '.') continue;
    if (!best || p.size() < best->size()) best = p;
  }
  return best;
}

std::optional<nlohmann::json> metadata_config(const Checkpoint& ck) {
  for (const auto& f : ck.files()) {
    const auto it = f->metadata().find("config");
    if (it == f->metadata().end()) continue;
    nlohmann::json j = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("constructor")) return j;
  }
  return std::nullopt;
}

}  // namespace fisdit
