#pragma once
// The byte-level BPE tokenizer of Qwen2 / Qwen2.5 (HunyuanVideo 1.5's text encoder is
// Qwen2.5-VL-7B-Instruct), read from the released tokenizer.json (Hugging Face `tokenizers`
// format), as Qwen2TokenizerFast runs it:
//
//   1. added tokens (<|endoftext|>, <|im_start|>, <|im_end|>, ...) are found in the raw text,
//      leftmost first and the longest at a position, and become their own ids;
//   2. every other piece is normalized (NFC, where the file says so; ICU);
//   3. split by the pre-tokenizer's regex (PCRE2 with Unicode properties), matches and the text
//      between them kept as pieces;
//   4. each piece's UTF-8 bytes mapped to GPT-2's byte-level characters and merged by BPE, the
//      pair of lowest merge rank first.
//
// Parity: tests/data/qwen_tokenizer (a small tokenizer trained with Hugging Face `tokenizers` on
// this pipeline, tools/fixtures/gen_qwen_tokenizer_fixture.py) gives the same ids on prompts with
// other scripts, quotes, digits, whitespace runs, combining marks and special tokens.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace fisdit::hunyuan15 {

class QwenTokenizer {
 public:
  // `path`: a tokenizer.json, or a directory holding one. Throws fisdit::Error naming the file
  // and the field when it cannot be read or is not a byte-level BPE of this kind (another model
  // type, a normalizer or pre-tokenizer other than NFC / Split + ByteLevel, a merge naming an
  // unknown token, a bad regex).
  explicit QwenTokenizer(const std::string& path);
  ~QwenTokenizer();
  QwenTokenizer(QwenTokenizer&&) noexcept;
  QwenTokenizer& operator=(QwenTokenizer&&) noexcept;

  // The ids of `text` (UTF-8; no special tokens added around it). Invalid UTF-8 is an error.
  std::vector<int32_t> encode(std::string_view text) const;
  // The text of `ids`: added tokens as written, the others' bytes concatenated. Throws on an id
  // outside the vocabulary.
  std::string decode(const std::vector<int32_t>& ids) const;
  // The id of a token (an added token's content, or a vocabulary entry in byte-level
  // characters); -1 when there is none.
  int32_t token_id(std::string_view token) const;
  // Largest id + 1.
  int64_t vocab_size() const;
  const std::string& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fisdit::hunyuan15
