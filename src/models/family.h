#pragma once
// The model families fisdit runs, and what the family-agnostic code asks of each: its named
// configs, whether a checkpoint holds one of its DiTs, and how to load or fake one. Adding a
// family is a folder under models/ and one entry in families() (models/family.cpp).
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"
#include "models/lora.h"
#include "models/model.h"
#include "models/release.h"

namespace fisdit::models {

struct Family {
  const char* name;  // "wan"
  // The released models' config names (--model-config), e.g. "wan2.2-t2v-a14b".
  std::vector<std::string> (*config_names)();
  // The ModelInfo of a config name or of a config file of this family; throws naming it.
  ModelInfo (*config_info)(const std::string& name_or_path);
  // Whether `checkpoint` holds this family's DiT; if not, why not (one line) in *why_not.
  bool (*recognizes)(const Checkpoint& checkpoint, std::string* why_not);
  // The ModelInfo of the DiT at `path`, from its config and tensor shapes (no weight is read).
  ModelInfo (*probe)(const std::string& path);
  // How this family reads the DiT at `path` (layout, config and its origin) and whether it can
  // load it, as lines for `fisdit inspect`; never throws (problems are lines).
  std::vector<std::string> (*explain)(const std::string& path);
  // The DiT at `path` (a file or a directory) on `backend` with `loras` merged into its weights,
  // its block matrices in `precision` as they load. `report` (optional) gets lines on what was
  // loaded: config, origin of the config, LoRAs.
  std::unique_ptr<VelocityModel> (*load)(const std::string& path, Backend& backend,
                                         const std::vector<LoraSpec>& loras,
                                         std::vector<std::string>* report, Precision precision);
  // A model of a config name (or config file) with random weights of the real shapes, made on
  // `backend` (fisdit bench): matrices N(0, 1/fan_in), so activations stay O(1).
  std::unique_ptr<VelocityModel> (*random)(const std::string& name_or_path, Backend& backend,
                                           Precision precision);
  // The release at `path` (a directory in one of the family's layouts, or a DiT file with the
  // other parts in `options`), opened and checked without reading a weight; nullptr in a build
  // without the pipeline (no tokenizer). Throws ParamError naming the part that is missing.
  std::unique_ptr<Release> (*open_release)(const std::string& path, const ReleaseOptions& options);
  // Whether `path` is laid out as this family's release (its error is then the one to show when
  // it cannot be opened); nullptr: the family claims none.
  bool (*owns_release)(const std::string& path) = nullptr;
};

// inspect's last lines for a DiT whose tensors were checked: "loadable     yes: <yes_text>", or
// "loadable     no: N problem(s)" and the first 50 problems.
void append_loadable_lines(std::vector<std::string>& lines,
                           const std::vector<std::string>& problems, const std::string& yes_text);

// A --model-config argument that is not one of a family's preset names: the config.json it
// names, parsed; nullopt when it cannot be opened and looks like a name rather than a path (no
// '/', no ".json"), so the family can say which names it knows. Throws fisdit::Error naming the
// file when a path cannot be opened or is not JSON.
std::optional<nlohmann::json> read_config_file(const std::string& name_or_path);

const std::vector<Family>& families();
// Every family's config names, for help texts and errors.
std::vector<std::string> all_config_names();
// The family that knows the config name (or reads the config file); throws listing the names.
const Family& family_for_config(const std::string& name_or_path);
// The family of the DiT at `path`; throws with each family's reason when none has it.
const Family& family_for_model(const std::string& path);
// family_for_model(path).probe(path): what the DiT at `path` is, without loading it.
ModelInfo probe_model(const std::string& path);
// The release at `path`, by the family whose DiT it holds.
std::unique_ptr<Release> open_release(const std::string& path, const ReleaseOptions& options);
// family_for_model(path).load(...).
std::unique_ptr<VelocityModel> load_model(const std::string& path, Backend& backend,
                                          const std::vector<LoraSpec>& loras = {},
                                          std::vector<std::string>* report = nullptr,
                                          Precision precision = Precision::Default);

}  // namespace fisdit::models
