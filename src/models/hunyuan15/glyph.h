#pragma once
// HunyuanVideo 1.5's glyph text encoder: byT5-small with the Glyph-SDXL-v2 weights, which encodes
// the quoted text of a prompt for the DiT's byT5 input (hyvideo/pipelines/hunyuan_video_pipeline.py
// _process_single_byt5_prompt, hyvideo/models/text_encoders/byT5):
//
//   1. the texts between straight double quotes ("...") or curly ones (“...”), not across a
//      line break, in order; duplicates dropped (keeping the first) when there are several;
//   2. with no such text: no byT5 tokens at all (the pipeline passes zeros and an empty mask);
//   3. otherwise 'Text "<text>". ' for each, concatenated (the pipeline gives every text the
//      style {color: None, font-family: None}), tokenized by byT5's tokenizer with the glyph
//      checkpoint's color and font tokens added, at most byt5_max_length (256) tokens with the
//      closing </s>, and encoded by the T5 encoder (wan::T5Encoder, a T5Stack's names).
//
// The same encoder comes in two layouts: the official download's text_encoder/Glyph-SDXL-v2
// (+ byt5-small/), and a diffusers pipeline's text_encoder_2/ + tokenizer_2/, which diffusers'
// scripts/convert_hunyuan_video1_5_to_diffusers.py (load_byt5) makes from it: the glyph
// checkpoint's tensors under T5EncoderModel's names (shared.weight, encoder.block.N...,
// encoder.final_layer_norm.weight; fp32 as the checkpoint) and byt5-small's tokenizer with the
// same tokens added the same way (official add_special_token, copied by the script). diffusers'
// pipelines (pipeline_hunyuan_video1_5.py extract_glyph_texts, _get_byt5_prompt_embeds) extract,
// format and tokenize as the official pipeline does, so the steps above serve both.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "models/wan/t5.h"

namespace fisdit::hunyuan15 {

// Step 1: the glyph texts of `prompt` (UTF-8).
std::vector<std::string> glyph_texts(const std::string& prompt);
// Step 3's text (MultilingualPromptFormat.format_prompt without styles).
std::string glyph_prompt(const std::vector<std::string>& texts);

// ByT5Tokenizer with added tokens: every UTF-8 byte b is id b + 3; <pad> 0, </s> 1, <unk> 2 (these
// three also take the whitespace around them when found in the text, as their lstrip/rstrip
// say), <extra_id_i> 259 + i (i < 125), then `added` from 384 on, each found in the text
// leftmost-longest first. encode appends </s>, keeping at most max_length ids.
class ByT5Tokenizer {
 public:
  explicit ByT5Tokenizer(std::vector<std::string> added = {});
  std::vector<int64_t> encode(std::string_view text, int64_t max_length) const;
  int64_t vocab_size() const;

 private:
  struct Token {
    std::string text;
    int64_t id;
    bool strip;  // takes the whitespace around it
  };
  std::vector<Token> tokens_;  // every added token, built once
};

// The tokens add_special_token adds from a Glyph-SDXL-v2 folder's assets: <color-i> for each
// entry of color_idx.json, then <{code[:2]}-font-{index}> for each entry of
// multilingual_10-lang_idx.json in file order. Throws naming a missing or malformed file.
std::vector<std::string> glyph_added_tokens(const std::string& glyph_root);

// The same tokens from a diffusers tokenizer_2 folder (ByT5Tokenizer.save_pretrained): the added
// tokens with ids 384 on, in id order, from tokenizer_config.json's added_tokens_decoder, else
// added_tokens.json. They must be what ByT5Tokenizer(added) numbers them: ids 384, 385, ... with
// no gap, byT5's own tokens below 384 (<pad> 0, </s> 1, <unk> 2, <extra_id_i> 259 + i), no
// lstrip/rstrip on an added token, and both files agreeing where both list a token. Throws naming
// the file otherwise, or when tokenizer_config.json is missing.
std::vector<std::string> glyph_added_tokens_diffusers(const std::string& tokenizer_dir);

constexpr int64_t kByt5MaxLength = 256;  // the pipeline's byt5_max_length

class GlyphEncoder {
 public:
  // `dir`: the release's text_encoder folder (holding Glyph-SDXL-v2/ and byt5-small/), or the
  // Glyph-SDXL-v2 folder itself. The weights come from Glyph-SDXL-v2/checkpoints/byt5_model.pt
  // (they replace byt5-small's); byt5-small/config.json, when present, gives the relative
  // position distance and the norm epsilon. Throws naming what is missing.
  GlyphEncoder(const std::string& dir, Backend& backend, int64_t max_length = kByt5MaxLength);
  // diffusers' layout: `text_encoder_dir` a T5EncoderModel folder (config.json + safetensors:
  // text_encoder_2/), `tokenizer_dir` its ByT5Tokenizer folder (tokenizer_2/, the added tokens as
  // glyph_added_tokens_diffusers reads them). The ids and states equal the official layout's for
  // a checkpoint converted by diffusers' script. Throws naming the missing folder or file.
  GlyphEncoder(const std::string& text_encoder_dir, const std::string& tokenizer_dir,
               Backend& backend, int64_t max_length = kByt5MaxLength);
  ~GlyphEncoder();

  // The byT5 states the DiT takes for `prompt`: host F32 [tokens, d_model]; [0, d_model] when the
  // prompt quotes nothing. `ids` (optional) receives the token ids.
  Tensor encode(const std::string& prompt, std::vector<int64_t>* ids = nullptr);
  int64_t dim() const;
  // The weights' file (official) or folder (diffusers).
  const std::string& checkpoint_path() const { return checkpoint_; }

 private:
  // Loads the encoder of `src` after checking its vocabulary against the tokenizer's;
  // `tokens_origin` names where the added tokens came from, for the error.
  void load(const wan::T5Source& src, const std::string& tokens_origin, Backend& backend);

  ByT5Tokenizer tokenizer_;
  std::unique_ptr<wan::T5Encoder> encoder_;
  std::string checkpoint_;
  int64_t max_length_;
};

}  // namespace fisdit::hunyuan15
