#include "pipeline/model_defaults.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "fisdit/error.h"

namespace fisdit::pipeline {

std::string bundled_model_dir() {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (const char* env = std::getenv("FISDIT_MODEL"); env && *env) {
    if (!fs::is_directory(env, ec))
      throw Error(std::string("FISDIT_MODEL=") + env + ": not a directory (it names the model " +
                  "used when no --model is given)");
    return env;
  }
  std::vector<fs::path> candidates;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path dir = exe.parent_path();
    candidates.push_back(dir / "models" / "fisdit-shapes");
    candidates.push_back(dir.parent_path() / "models" / "fisdit-shapes");
    candidates.push_back(dir.parent_path() / "share" / "fisdit" / "models" / "fisdit-shapes");
  }
#ifdef FISDIT_DATA_DIR
  candidates.push_back(fs::path(FISDIT_DATA_DIR) / "models" / "fisdit-shapes");
#endif
  std::string looked;
  for (const fs::path& c : candidates) {
    if (fs::is_regular_file(c / "config.json", ec)) return c.lexically_normal().string();
    looked += (looked.empty() ? "" : ", ") + c.lexically_normal().string();
  }
  throw Error(
      "no --model given and the bundled model (models/fisdit-shapes) was not found (looked in " +
      looked + "); pass --model DIR or set FISDIT_MODEL");
}

ModelDefaults read_model_defaults(const std::string& model) {
  ModelDefaults d;
  std::error_code ec;
  const std::filesystem::path file = std::filesystem::path(model) / "fisdit.json";
  if (model.empty() || !std::filesystem::is_directory(model, ec) ||
      !std::filesystem::is_regular_file(file, ec))
    return d;
  d.path = file.string();
  std::ifstream in(file);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(d.path + ": not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object()) throw Error(d.path + ": must hold a JSON object");
  const auto wrong = [&](const char* key, const char* type) {
    return Error(d.path + ": '" + key + "' must be " + type);
  };
  const auto text = [&](const char* key) -> std::optional<std::string> {
    if (!j.contains(key)) return std::nullopt;
    if (!j[key].is_string()) throw wrong(key, "a string");
    return j[key].get<std::string>();
  };
  const auto integer = [&](const char* key) -> std::optional<int> {
    if (!j.contains(key)) return std::nullopt;
    if (!j[key].is_number_integer()) throw wrong(key, "an integer");
    return j[key].get<int>();
  };
  const auto number = [&](const char* key) -> std::optional<double> {
    if (!j.contains(key)) return std::nullopt;
    if (!j[key].is_number()) throw wrong(key, "a number");
    return j[key].get<double>();
  };
  d.name = text("name").value_or("");
  d.size = text("size");
  d.frames = integer("frames");
  d.steps = integer("steps");
  d.shift = number("shift");
  if (const auto g = number("guidance")) d.guidance = static_cast<float>(*g);
  d.solver = text("solver");
  if (j.contains("held_out_prompts")) {
    const nlohmann::json& p = j["held_out_prompts"];
    if (!p.is_array()) throw wrong("held_out_prompts", "an array of strings");
    for (const nlohmann::json& s : p) {
      if (!s.is_string()) throw wrong("held_out_prompts", "an array of strings");
      d.held_out_prompts.push_back(s.get<std::string>());
    }
  }
  return d;
}

}  // namespace fisdit::pipeline
