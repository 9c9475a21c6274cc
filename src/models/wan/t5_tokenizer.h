#pragma once
// The umT5 tokenizer of Wan (wan/modules/t5.py T5EncoderModel, wan/modules/tokenizers.py
// HuggingfaceTokenizer('google/umt5-xxl', seq_len=text_len, clean='whitespace')) on top of the
// SentencePiece library (Debian: libsentencepiece-dev), and the prompt -> context path.
//
// The pipeline: clean the prompt (prompt_clean.h: html.unescape twice, whitespace collapse; ftfy
// is not reproduced), encode it with the umT5 SentencePiece model, append `</s>` (id 1),
// truncate to max_length (text_len = 512) keeping `</s>` as the last token, pad with `<pad>`
// (id 0); mask 1 on the real tokens. The encoder then runs on the padded ids and its output is
// trimmed to sum(mask) rows.
//
// Known differences from the official tokenizer (transformers' T5TokenizerFast built from
// tokenizer.json, which the official release ships next to spiece.model):
//   * text that spells a special token ("</s>", "<pad>", "<unk>", "<extra_id_7>") is split into
//     ordinary pieces here; transformers matches it as that single token. The extra ids
//     (256000 and up, beyond the SentencePiece vocabulary) are never produced here.
//   * characters outside the vocabulary are encoded as the model says (unknown piece, or bytes
//     when the model was trained with byte fallback); a fast tokenizer converted without byte
//     fallback gives `<unk>` instead.
//   * ftfy (see prompt_clean.h).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "models/wan/t5.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace fisdit::wan {

// Wan's text_len: the tokenizer's max_length and the DiT's context length.
inline constexpr int kT5TextLen = 512;

// One tokenized prompt, padded to max_length.
struct T5Tokens {
  std::vector<int64_t> ids;   // [max_length]: pieces, </s>, then <pad>
  std::vector<int64_t> mask;  // [max_length]: 1 on the first `length` positions, then 0
  int64_t length = 0;         // real tokens, </s> included (= sum(mask))

  Tensor ids_tensor() const;   // [1, max_length] I64, as the official tokenizer returns
  Tensor mask_tensor() const;  // [1, max_length] I64
};

class T5Tokenizer {
 public:
  // `path`: a SentencePiece model file (spiece.model), or a directory holding one directly or in
  // tokenizer/ (diffusers) or google/umt5-xxl/ (the official Wan release). Throws fisdit::Error
  // naming the path when there is none (a directory with only tokenizer.json included), when the
  // file is not a SentencePiece model, or when it has no `</s>` or `<pad>` piece.
  explicit T5Tokenizer(const std::string& path);
  ~T5Tokenizer();
  T5Tokenizer(const T5Tokenizer&) = delete;
  T5Tokenizer& operator=(const T5Tokenizer&) = delete;

  // The model file actually read.
  const std::string& model_path() const { return model_path_; }
  // Number of pieces (ids are in [0, vocab_size)); umt5-xxl: 256000.
  int vocab_size() const;
  int64_t pad_id() const { return pad_id_; }
  int64_t eos_id() const { return eos_id_; }

  // SentencePiece ids of already cleaned text, without `</s>`.
  std::vector<int64_t> encode_cleaned(std::string_view text) const;
  // The whole recipe: clean_prompt, encode, `</s>`, truncate, pad. Throws when the prompt is not
  // UTF-8 or max_length < 1.
  T5Tokens tokenize(std::string_view prompt, int max_length = kT5TextLen) const;

 private:
  std::string model_path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  int64_t pad_id_ = 0;
  int64_t eos_id_ = 1;
};

// Throws fisdit::Error naming the tokenizer's model file and `encoder_name` (may be empty) when
// the tokenizer can produce ids outside the encoder's vocabulary (more pieces than embedding
// rows). umt5-xxl: 256000 pieces, 256384 embedding rows.
void check_tokenizer_fits(const T5Tokenizer& tokenizer, const T5Config& encoder_config,
                          const std::string& encoder_name);

// A prompt through the tokenizer and the encoder, as T5EncoderModel.__call__ does for one text.
struct PromptContext {
  T5Tokens tokens;
  Tensor context;  // [tokens.length, dim] F32: the encoder output trimmed to the real tokens
};
PromptContext encode_prompt(const T5Tokenizer& tokenizer, T5Encoder& encoder,
                            std::string_view prompt, int max_length = kT5TextLen);
// Several prompts with one pass over the encoder's weights (T5Encoder::encode_many): the same
// contexts as encode_prompt of each.
std::vector<PromptContext> encode_prompts(const T5Tokenizer& tokenizer, T5Encoder& encoder,
                                          const std::vector<std::string>& prompts,
                                          int max_length = kT5TextLen);

}  // namespace fisdit::wan
