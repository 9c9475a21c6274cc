#include "models/hunyuan15/text_prompt.h"

#include <algorithm>

#include "fisdit/error.h"

namespace fisdit::hunyuan15 {

namespace {
// The official source writes each system message over several lines joined by backslash
// continuations inside the string: every continuation leaves the space before the backslash and
// the next line's 8 spaces of indentation.
std::string join_items(const std::vector<std::string>& parts) {
  std::string s = parts.front();
  for (size_t i = 1; i < parts.size(); ++i) s += std::string(9, ' ') + parts[i];
  return s;
}
}  // namespace

const std::string& system_prompt(PromptKind kind) {
  static const std::string video = join_items({
      "You are a helpful assistant. Describe the video by detailing the following aspects:",
      "1. The main content and theme of the video.",
      "2. The color, shape, size, texture, quantity, text, and spatial relationships of the "
      "objects.",
      "3. Actions, events, behaviors temporal relationships, physical movement changes of the "
      "objects.",
      "4. background environment, light, style and atmosphere.",
      "5. camera angles, movements, and transitions used in the video.",
  });
  static const std::string image = join_items({
      "You are a helpful assistant. Describe the image by detailing the following aspects:",
      "1. The main content and theme of the image.",
      "2. The color, shape, size, texture, quantity, text, and spatial relationships of the "
      "objects.",
      "3. The background environment, light, style and atmosphere.",
  });
  return kind == PromptKind::Video ? video : image;
}

std::string chat_text(const std::string& system, const std::string& user) {
  return "<|im_start|>system\n" + system + "<|im_end|>\n<|im_start|>user\n" + user +
         "<|im_end|>\n<|im_start|>assistant\n";
}

PromptTokens prompt_tokens(const QwenTokenizer& tokenizer, const std::string& prompt,
                           int64_t max_length, PromptKind kind) {
  if (max_length < 1) throw Error("text encoder: the prompt length limit must be at least 1");
  for (const char* t : {"<|im_start|>", "<|im_end|>"})
    if (tokenizer.token_id(t) < 0)
      throw Error(tokenizer.path() + ": the tokenizer has no '" + t +
                  "' token (not a Qwen2.5 chat tokenizer)");
  const std::string& system = system_prompt(kind);
  // crop_start as TextEncoder.calculate_crop_start finds it: after the first occurrence of the
  // marker's tokens in the template holding "a photo of a cat".
  const std::vector<int32_t> probe = tokenizer.encode(chat_text(system, "a photo of a cat"));
  const std::vector<int32_t> marker = tokenizer.encode("<|im_start|>user\n");
  const auto at = std::search(probe.begin(), probe.end(), marker.begin(), marker.end());
  PromptTokens out;
  out.crop_start =
      at == probe.end() ? 0 : (at - probe.begin()) + static_cast<int64_t>(marker.size());
  // apply_text_to_template's prevent_empty_text: an empty prompt becomes one space.
  out.ids = tokenizer.encode(chat_text(system, prompt.empty() ? " " : prompt));
  const int64_t limit = max_length + out.crop_start;
  if (static_cast<int64_t>(out.ids.size()) > limit) {
    out.dropped = static_cast<int64_t>(out.ids.size()) - limit;
    out.ids.resize(static_cast<size_t>(limit));
  }
  return out;
}

}  // namespace fisdit::hunyuan15
