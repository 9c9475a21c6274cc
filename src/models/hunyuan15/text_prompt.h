#pragma once
// The prompt as HunyuanVideo 1.5's text encoder sees it (hyvideo/models/text_encoders TextEncoder
// with the pipeline's settings): the user's prompt (a space when empty) in the official chat
// template (system message PROMPT_TEMPLATE_ENCODE_VIDEO_JSON, or the image one), rendered as
// Qwen2.5's chat template renders it with the generation prompt,
//
//   <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n
//
// then tokenized, cut to max_length + crop_start tokens (right truncation, as the tokenizer's
// truncation=True), encoded, and the first crop_start rows dropped. crop_start is the index after
// the tokens of "<|im_start|>user\n" in the template holding "a photo of a cat" (the official code
// computes it once, from that text, and uses it for every prompt).
#include <cstdint>
#include <string>
#include <vector>

#include "models/hunyuan15/qwen_tokenizer.h"

namespace fisdit::hunyuan15 {

enum class PromptKind : uint8_t { Video, Image };

// The system message of the official template (with the runs of spaces its source's line
// continuations leave).
const std::string& system_prompt(PromptKind kind);
// The chat text of one system and one user message with the generation prompt.
std::string chat_text(const std::string& system, const std::string& user);

struct PromptTokens {
  std::vector<int32_t> ids;  // the template's tokens, truncated: what the text encoder runs
  int64_t crop_start = 0;    // rows before this are the template's prefix, dropped after encoding
  int64_t dropped = 0;       // tokens cut by the length limit (0: the prompt fit)
  int64_t prompt_tokens() const { return static_cast<int64_t>(ids.size()) - crop_start; }
};

// The pipeline's text encoder limit (TextEncoder max_length=1000: tokens after the crop).
constexpr int64_t kTextMaxLength = 1000;

// Throws fisdit::Error when the tokenizer lacks the chat tokens or max_length < 1.
PromptTokens prompt_tokens(const QwenTokenizer& tokenizer, const std::string& prompt,
                           int64_t max_length = kTextMaxLength,
                           PromptKind kind = PromptKind::Video);

}  // namespace fisdit::hunyuan15
