#include "models/family.h"

#include <algorithm>
#include <fstream>

#include "fisdit/error.h"
#include "models/hunyuan15/family.h"
#include "models/wan/family.h"

namespace fisdit::models {

void append_loadable_lines(std::vector<std::string>& lines,
                           const std::vector<std::string>& problems, const std::string& yes_text) {
  if (problems.empty()) {
    lines.push_back("loadable     yes: " + yes_text);
    return;
  }
  lines.push_back("loadable     no: " + std::to_string(problems.size()) + " problem(s)");
  for (size_t i = 0; i < problems.size() && i < 50; ++i) lines.push_back("  " + problems[i]);
  if (problems.size() > 50)
    lines.push_back("  ... and " + std::to_string(problems.size() - 50) + " more");
}

std::optional<nlohmann::json> read_config_file(const std::string& name_or_path) {
  std::ifstream in(name_or_path);
  if (!in) {
    if (name_or_path.find('/') == std::string::npos &&
        name_or_path.find(".json") == std::string::npos)
      return std::nullopt;
    throw Error("cannot open model config '" + name_or_path + "'");
  }
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(name_or_path + ": invalid JSON: " + e.what());
  }
}

const std::vector<Family>& families() {
  static const std::vector<Family> all = {wan::family(), hunyuan15::family()};
  return all;
}

std::vector<std::string> all_config_names() {
  std::vector<std::string> names;
  for (const Family& f : families())
    for (std::string& n : f.config_names()) names.push_back(std::move(n));
  return names;
}

const Family& family_for_config(const std::string& name_or_path) {
  for (const Family& f : families()) {
    const std::vector<std::string> names = f.config_names();
    if (std::find(names.begin(), names.end(), name_or_path) != names.end()) return f;
  }
  // A config file: the family that reads it (a single family's error says why it does not).
  std::string why;
  for (const Family& f : families()) {
    try {
      f.config_info(name_or_path);
      return f;
    } catch (const Error& e) {  // each family's reason once (a missing file reads the same)
      if (why.find(e.what()) == std::string::npos)
        why += (why.empty() ? "" : "; ") + std::string(e.what());
    }
  }
  if (families().size() == 1) throw Error(why);
  std::string names;
  for (const std::string& n : all_config_names()) names += (names.empty() ? "" : ", ") + n;
  // A name no family knows: every family's reason would repeat its own list of names.
  const bool looks_like_path =
      name_or_path.find('/') != std::string::npos || name_or_path.ends_with(".json");
  throw Error("unknown model config '" + name_or_path + "' (known: " + names +
              ", or a path to a config.json)" + (looks_like_path ? ": " + why : ""));
}

const Family& family_for_model(const std::string& path) {
  const Checkpoint ckpt = Checkpoint::open(path);
  std::string why;
  for (const Family& f : families()) {
    std::string why_not;
    if (f.recognizes(ckpt, &why_not)) return f;
    why += (why.empty() ? "" : "; ") + why_not;
  }
  throw Error(families().size() == 1 ? why : path + ": not a DiT of a family fisdit runs: " + why);
}

ModelInfo probe_model(const std::string& path) { return family_for_model(path).probe(path); }

std::unique_ptr<Release> open_release(const std::string& path, const ReleaseOptions& options) {
  // A release is a directory in a family's layout (or a DiT file): each family tries to open it.
  // With one family its error says what is missing; with several, the reasons of each.
  std::string why;
  int tried = 0;
  for (const Family& f : families())
    if (f.open_release && f.owns_release && f.owns_release(path))
      return f.open_release(path, options);
  for (const Family& f : families()) {
    if (!f.open_release) continue;
    ++tried;
    if (families().size() == 1) return f.open_release(path, options);
    try {
      return f.open_release(path, options);
    } catch (const Error& e) {
      why += (why.empty() ? "" : "; ") + std::string(f.name) + ": " + e.what();
    }
  }
  if (tried == 0)
    throw Error(
        "this fisdit was built without the pipeline (-DFISDIT_PIPELINE=OFF): it has no "
        "tokenizer to run a release");
  throw ParamError("model", " " + path + ": not a release fisdit can run: " + why);
}

std::unique_ptr<VelocityModel> load_model(const std::string& path, Backend& backend,
                                          const std::vector<LoraSpec>& loras,
                                          std::vector<std::string>* report, Precision precision) {
  return family_for_model(path).load(path, backend, loras, report, precision);
}

}  // namespace fisdit::models
