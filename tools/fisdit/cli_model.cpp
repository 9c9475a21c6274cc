// The bundled model and fisdit.json defaults, shared by generate, analyze and quality.
#include "cli.h"
#include "pipeline/model_defaults.h"

namespace fisdit::cli {

std::string model_or_bundled(const std::string& model) {
  if (!model.empty()) return model;
  std::string dir = pipeline::bundled_model_dir();
  status("model: " + dir + " (the bundled fisdit-shapes; --model DIR for another)");
  return dir;
}

void apply_model_defaults(const CLI::App& cmd, const pipeline::ModelDefaults& d,
                          const GenerationFlags& f) {
  const auto unset = [&](const char* flag) { return cmd.count(flag) == 0; };
  if (d.size && unset("--size")) f.size = *d.size;
  if (d.frames && unset("--frames")) f.frames = *d.frames;
  if (d.steps && unset("--steps")) f.steps = *d.steps;
  if (d.shift && unset("--shift")) f.shift = *d.shift;
  if (d.solver && unset("--solver")) f.solver = *d.solver;
  if (d.guidance && unset("--guidance")) f.guidance = *d.guidance;
}

}  // namespace fisdit::cli
