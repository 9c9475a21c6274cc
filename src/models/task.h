#pragma once
// What a video model is conditioned on, as its release names it.
#include <cstdint>
#include <optional>
#include <string_view>

namespace fisdit::models {

enum class Task : uint8_t {
  T2V,   // text to video
  I2V,   // text and a first frame, given as conditioning channels (Wan 2.2 I2V-A14B)
  TI2V,  // text, or text and a first frame that replaces latent frame 0 (Wan 2.2 TI2V-5B)
};

// "t2v", "i2v", "ti2v": the names the official configs use.
const char* task_name(Task task);
std::optional<Task> parse_task(std::string_view name);

}  // namespace fisdit::models
