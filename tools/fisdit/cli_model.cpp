// The bundled model and fisdit.json defaults, shared by generate, analyze and quality.
#include "cli.h"
#include "pipeline/generate.h"
#include "pipeline/model_defaults.h"

namespace fisdit::cli {

std::string model_or_bundled(const std::string& model) {
  if (!model.empty()) return model;
  std::string dir = pipeline::bundled_model_dir();
  status("model: " + dir + " (the bundled fisdit-shapes; --model DIR for another)");
  return dir;
}

void apply_model_defaults(const pipeline::ModelDefaults& d, std::optional<std::string>& size,
                          std::optional<int>& frames, SamplingFlags& s) {
  if (!size) size = d.size;
  if (!frames) frames = d.frames;
  if (!s.steps) s.steps = d.steps;
  if (!s.shift) s.shift = d.shift;
  if (!s.solver) s.solver = d.solver;
  if (!s.guidance) s.guidance = d.guidance;
}

void set_sampling(pipeline::GenerateOptions& o, const sched::DenoiseOptions& s) {
  o.steps = s.steps;
  o.shift = s.shift;
  o.solver = s.solver;
  o.guidance = s.guidance;
  o.guidance_high = s.guidance_high;
  o.guidance_low = s.guidance_low;
  o.boundary = s.boundary;
}

}  // namespace fisdit::cli
