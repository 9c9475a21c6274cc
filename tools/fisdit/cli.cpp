#include "cli.h"

#include <iostream>
#include <regex>

#include "fisdit/error.h"

namespace fisdit::cli {

void add_fis_flags(CLI::App* cmd, FisFlags& f) {
  cmd->add_option("--fis", f.preset, "FIS preset: off, balanced, fast, or a preset JSON file")
      ->capture_default_str();
  cmd->add_option("--fis-stride", f.stride, "anchor stride s (1 = dense)");
  cmd->add_option("--fis-head", f.head, "leading blocks kept dense");
  cmd->add_option("--fis-tail", f.tail, "trailing blocks kept dense");
  cmd->add_option("--fis-dense-last-steps", f.dense_last_steps, "final steps kept dense");
  cmd->add_option("--fis-granularity", f.granularity, "module or block");
  cmd->add_option("--fis-reconstruct", f.reconstruct, "linear or delta (block granularity)");
  cmd->add_flag("--fis-no-interleave", f.no_interleave,
                "same anchor offset in every block (ablation)");
}

accel::FisConfig FisFlags::resolve() const {
  accel::FisConfig c = accel::fis_preset(preset);
  const bool overridden =
      stride || head || tail || dense_last_steps || granularity || reconstruct || no_interleave;
  if (stride) c.stride = *stride;
  if (head) c.head = *head;
  if (tail) c.tail = *tail;
  if (dense_last_steps) c.dense_last_steps = *dense_last_steps;
  if (granularity) c.granularity = accel::parse_granularity(*granularity);
  if (reconstruct) c.reconstruct = accel::parse_reconstruct(*reconstruct);
  if (no_interleave) c.interleave = false;
  if (overridden) c.name = "custom";
  c.validate();
  return c;
}

void parse_size(const std::string& text, int& width, int& height) {
  static const std::regex re(R"((\d{1,6})x(\d{1,6}))");
  std::smatch m;
  if (!std::regex_match(text, m, re))
    throw Error("--size must be WIDTHxHEIGHT (e.g. 1280x720), got '" + text + "'");
  width = std::stoi(m[1]);
  height = std::stoi(m[2]);
}

Tensor read_input(const SafetensorsFile& file, const std::string& name, bool required) {
  // Fixture files keep their inputs under "input." (tests/data/wan): accept both.
  const std::string stored =
      file.contains(name) || !file.contains("input." + name) ? name : "input." + name;
  if (!file.contains(stored)) {
    if (required) throw Error(file.path() + ": required input tensor '" + name + "' is missing");
    return {};
  }
  const TensorInfo* info = file.find(stored);
  if (!is_float(info->dtype) && info->dtype != DType::I64 && info->dtype != DType::I32)
    throw Error(file.path() + ": input tensor '" + stored + "' has dtype " +
                std::string(dtype_name(info->dtype)) + ", expected a float type");
  return file.tensor_f32(stored);
}

void status(const std::string& line) { std::cerr << line << std::endl; }

}  // namespace fisdit::cli
