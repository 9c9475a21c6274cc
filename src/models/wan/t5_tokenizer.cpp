#include "models/wan/t5_tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>
#include <system_error>

#include "fisdit/error.h"
#include "io/text.h"
#include "models/wan/prompt_clean.h"

namespace fisdit::wan {

namespace {

namespace fs = std::filesystem;

// The spiece.model that `path` names, or throws naming `path`.
std::string find_model_file(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw Error(path + ": no such file or directory");
  if (!fs::is_directory(st)) return path;
  // The official release keeps the tokenizer in google/umt5-xxl/, diffusers in tokenizer/.
  for (const char* sub : {"", "tokenizer", "google/umt5-xxl"}) {
    const fs::path candidate = fs::path(path) / sub / "spiece.model";
    if (fs::is_regular_file(candidate, ec)) return candidate.string();
  }
  for (const char* sub : {"", "tokenizer", "google/umt5-xxl"})
    if (fs::exists(fs::path(path) / sub / "tokenizer.json", ec))
      throw Error(path +
                  ": has tokenizer.json but no spiece.model; fisdit reads the SentencePiece "
                  "model (spiece.model, shipped beside tokenizer.json in google/umt5-xxl "
                  "and in diffusers' tokenizer/ folder)");
  throw Error(path + ": no spiece.model in this directory (nor in tokenizer/ or google/umt5-xxl/)");
}

// A status message on one line.
std::string one_line(const std::string& s) {
  std::string out = printable(s, 300);
  for (char& c : out)
    if (c == '\n') c = ' ';
  return out;
}

// The id of the control piece `piece`, or throws naming the model file.
int64_t special_id(const sentencepiece::SentencePieceProcessor& sp, const std::string& piece,
                   const std::string& file) {
  const int id = sp.PieceToId(piece);
  if (id < 0 || sp.IdToPiece(id) != piece)
    throw Error(file + ": the SentencePiece model has no '" + piece +
                "' piece, so it is not a T5 tokenizer");
  return id;
}

}  // namespace

Tensor T5Tokens::ids_tensor() const {
  Tensor t = Tensor::zeros({1, static_cast<int64_t>(ids.size())}, DType::I64);
  std::copy(ids.begin(), ids.end(), t.data_as<int64_t>());
  return t;
}

Tensor T5Tokens::mask_tensor() const {
  Tensor t = Tensor::zeros({1, static_cast<int64_t>(mask.size())}, DType::I64);
  std::copy(mask.begin(), mask.end(), t.data_as<int64_t>());
  return t;
}

T5Tokenizer::T5Tokenizer(const std::string& path)
    : model_path_(find_model_file(path)),
      sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  const auto status = sp_->Load(model_path_);
  if (!status.ok()) {
    // A file that is no model protobuf at all gets a plain message, anything else the library's.
    const std::string why = status.ToString().find("ParseFromArray") != std::string::npos
                                ? "it does not parse as one"
                                : "sentencepiece: " + one_line(status.ToString());
    std::string hint;
    if (fs::path(model_path_).extension() == ".json")
      hint = "; tokenizer.json is not read, pass spiece.model (beside it in the same release)";
    throw Error(model_path_ + ": not a valid SentencePiece model (" + why + ")" + hint);
  }
  pad_id_ = special_id(*sp_, "<pad>", model_path_);
  eos_id_ = special_id(*sp_, "</s>", model_path_);
}

T5Tokenizer::~T5Tokenizer() = default;

int T5Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }

std::vector<int64_t> T5Tokenizer::encode_cleaned(std::string_view text) const {
  std::vector<int> pieces;
  const auto status = sp_->Encode(text, &pieces);
  if (!status.ok())
    throw Error(model_path_ + ": SentencePiece could not encode the prompt (" +
                one_line(status.ToString()) + ")");
  return {pieces.begin(), pieces.end()};
}

T5Tokens T5Tokenizer::tokenize(std::string_view prompt, int max_length) const {
  if (max_length < 1)
    throw Error("tokenizer max length must be at least 1 (room for </s>), got " +
                std::to_string(max_length));
  std::vector<int64_t> ids = encode_cleaned(clean_prompt(prompt));
  // transformers' truncation with add_special_tokens: the text loses its tail, </s> stays.
  if (ids.size() > static_cast<size_t>(max_length - 1)) ids.resize(max_length - 1);
  ids.push_back(eos_id_);
  T5Tokens out;
  out.length = static_cast<int64_t>(ids.size());
  out.ids = std::move(ids);
  out.ids.resize(max_length, pad_id_);
  out.mask.assign(max_length, 0);
  std::fill(out.mask.begin(), out.mask.begin() + out.length, 1);
  return out;
}

void check_tokenizer_fits(const T5Tokenizer& tokenizer, const T5Config& encoder_config,
                          const std::string& encoder_name) {
  if (tokenizer.vocab_size() > encoder_config.vocab)
    throw Error(tokenizer.model_path() + " has " + std::to_string(tokenizer.vocab_size()) +
                " pieces but the text encoder" + (encoder_name.empty() ? "" : " " + encoder_name) +
                " has a vocabulary of " + std::to_string(encoder_config.vocab) +
                " ids: the tokenizer does not belong to this encoder");
}

PromptContext encode_prompt(const T5Tokenizer& tokenizer, T5Encoder& encoder,
                            std::string_view prompt, int max_length) {
  check_tokenizer_fits(tokenizer, encoder.config(), "");
  PromptContext out;
  out.tokens = tokenizer.tokenize(prompt, max_length);
  // The mask is a prefix, so encode() computes only the real tokens: the same rows as the
  // official forward over all max_length positions followed by the trim.
  out.context = encoder.encode(out.tokens.ids, out.tokens.mask);
  return out;
}

std::vector<PromptContext> encode_prompts(const T5Tokenizer& tokenizer, T5Encoder& encoder,
                                          const std::vector<std::string>& prompts, int max_length) {
  check_tokenizer_fits(tokenizer, encoder.config(), "");
  std::vector<PromptContext> out(prompts.size());
  std::vector<T5Input> inputs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    out[i].tokens = tokenizer.tokenize(prompts[i], max_length);
    inputs.push_back({out[i].tokens.ids, out[i].tokens.mask});
  }
  std::vector<Tensor> contexts = encoder.encode_many(inputs);
  for (size_t i = 0; i < prompts.size(); ++i) out[i].context = std::move(contexts[i]);
  return out;
}

}  // namespace fisdit::wan
