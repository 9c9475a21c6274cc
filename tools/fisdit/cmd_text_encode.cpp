// fisdit text-encode: the umT5 text encoder (--device cpu or cuda) on a prompt (with the umT5
// tokenizer) or on token ids from a safetensors file.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>

#include "cli.h"
#include "core/dtype.h"
#include "core/utf8.h"
#include "fisdit/error.h"
#include "models/wan/t5.h"
#include "models/wan/t5_tokenizer.h"

namespace fisdit::cli {

namespace {
// `name` (or "input.<name>") of `file` as integers: [1, L] or [L], any integer dtype, or a float
// dtype holding whole numbers. Errors name the file and the tensor.
std::vector<int64_t> read_integers(const SafetensorsFile& file, const std::string& name) {
  const std::string stored =
      file.contains(name) || !file.contains("input." + name) ? name : "input." + name;
  const TensorInfo* info = file.find(stored);
  if (!info) throw Error(file.path() + ": required input tensor '" + name + "' is missing");
  const std::string where = file.path() + ": '" + stored + "'";
  const Shape& s = info->shape;
  if (!(s.size() == 1 || (s.size() == 2 && s[0] == 1)))
    throw Error(where + " must be [1, L] or [L] (one prompt), got " + shape_str(s));
  std::vector<int64_t> out(static_cast<size_t>(info->numel()));
  const Tensor t = file.tensor(stored);
  switch (info->dtype) {
    case DType::I64:
      for (size_t i = 0; i < out.size(); ++i) out[i] = t.data_as<int64_t>()[i];
      break;
    case DType::I32:
      for (size_t i = 0; i < out.size(); ++i) out[i] = t.data_as<int32_t>()[i];
      break;
    case DType::I16:
      for (size_t i = 0; i < out.size(); ++i) out[i] = t.data_as<int16_t>()[i];
      break;
    case DType::I8:
      for (size_t i = 0; i < out.size(); ++i) out[i] = t.data_as<int8_t>()[i];
      break;
    case DType::U8:
    case DType::Bool:
      for (size_t i = 0; i < out.size(); ++i) out[i] = t.data_as<uint8_t>()[i];
      break;
    default: {
      if (!is_float(info->dtype))
        throw Error(where + " has dtype " + std::string(dtype_name(info->dtype)) +
                    ", expected an integer or float type");
      const std::vector<float> v = t.to_vector();
      for (size_t i = 0; i < out.size(); ++i) {
        if (!(std::isfinite(v[i]) && v[i] == std::floor(v[i]) && std::fabs(v[i]) < 16777216.0f))
          throw Error(where + " value " + std::to_string(v[i]) + " at position " +
                      std::to_string(i) + " is not a whole number");
        out[i] = static_cast<int64_t>(v[i]);
      }
    }
  }
  return out;
}
struct TextEncodeArgs {
  std::string text_encoder, inputs, output, tokenizer;
  std::optional<std::string> prompt;
  DeviceFlags device;
  int text_len = wan::kT5TextLen;
  int repeats = 1;
  bool resident = false;
};

void check_args(const TextEncodeArgs& a) {
  if (a.prompt && !a.inputs.empty())
    throw Error("--prompt and --inputs exclude each other: give the text or the token ids");
  if (!a.prompt && a.inputs.empty())
    throw Error("give --prompt (with --tokenizer) or --inputs (token 'ids' and 'mask')");
  if (a.prompt && a.tokenizer.empty())
    throw Error("--prompt needs --tokenizer (the umT5 spiece.model or its directory)");
  if (!a.prompt && !a.tokenizer.empty()) throw Error("--tokenizer is only used with --prompt");
  if (a.text_len < 1)
    throw Error("--text-len must be at least 1, got " + std::to_string(a.text_len));
  if (a.repeats < 1 || a.repeats > 1000)
    throw Error("--repeats must be in [1, 1000], got " + std::to_string(a.repeats));
}

// --inputs: the token 'ids' and their 'mask', checked against each other.
struct TokenIds {
  std::vector<int64_t> ids, mask;
};
TokenIds read_token_ids(const std::string& path) {
  const auto in = SafetensorsFile::open(path);
  TokenIds t{read_integers(*in, "ids"), read_integers(*in, "mask")};
  if (t.ids.size() != t.mask.size())
    throw Error(path + ": 'ids' has " + std::to_string(t.ids.size()) + " tokens but 'mask' has " +
                std::to_string(t.mask.size()));
  if (t.ids.empty()) throw Error(path + ": 'ids' is empty");
  int64_t valid = 0;
  for (size_t i = 0; i < t.mask.size(); ++i) {
    if (t.mask[i] != 0 && t.mask[i] != 1)
      throw Error(path + ": 'mask' value " + std::to_string(t.mask[i]) + " at position " +
                  std::to_string(i) + " is not 0 or 1");
    valid += t.mask[i];
  }
  if (valid == 0) throw Error(path + ": 'mask' selects no token");
  return t;
}

#ifdef FISDIT_WITH_PIPELINE
// --prompt: the umT5 tokenizer, its errors under --tokenizer.
std::unique_ptr<wan::T5Tokenizer> open_tokenizer(const TextEncodeArgs& a) {
  check_utf8(*a.prompt, "--prompt");
  try {
    return std::make_unique<wan::T5Tokenizer>(a.tokenizer);
  } catch (const Error& e) {
    throw Error(std::string("--tokenizer: ") + e.what());
  }
}
#endif

void run_text_encode(const TextEncodeArgs& a) {
  check_args(a);
#ifdef FISDIT_WITH_PIPELINE
  const std::unique_ptr<wan::T5Tokenizer> tokenizer = a.prompt ? open_tokenizer(a) : nullptr;
#else
  if (a.prompt) {
    check_utf8(*a.prompt, "--prompt");
    throw Error(
        "--prompt: this fisdit was built without the tokenizer (FISDIT_PIPELINE=OFF); "
        "rebuild with libsentencepiece-dev installed, or pass token ids with --inputs");
  }
#endif
  const TokenIds tokens = a.prompt ? TokenIds{} : read_token_ids(a.inputs);
  auto start = std::chrono::steady_clock::now();
  const wan::T5Source src = wan::open_t5(a.text_encoder);
  const wan::T5Config& c = src.config;
#ifdef FISDIT_WITH_PIPELINE
  if (tokenizer) {
    try {
      wan::check_tokenizer_fits(*tokenizer, c, a.text_encoder);
    } catch (const Error& e) {
      throw Error(std::string("--tokenizer: ") + e.what());
    }
  }
#endif
  for (size_t i = 0; i < tokens.ids.size(); ++i)
    if (tokens.ids[i] < 0 || tokens.ids[i] >= c.vocab)
      throw Error(a.inputs + ": 'ids' value " + std::to_string(tokens.ids[i]) + " at position " +
                  std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(c.vocab) +
                  ") of " + a.text_encoder);
  auto backend = a.device.backend();
  auto encoder = wan::load_t5(src, *backend);
  char line[512];
  std::snprintf(line, sizeof line,
                "loaded text encoder %s: dim %d, %d layers, %d heads, vocab %d (config from %s) "
                "in %.2f s",
                a.text_encoder.c_str(), c.dim, c.num_layers, c.num_heads, c.vocab,
                src.config_origin.c_str(), seconds_since(start));
  status(line);
  encoder->set_resident(a.resident);
  NamedTensors out;
  // Each pass timed on its own (--repeats): with --resident the first uploads the weights and
  // keeps them, the later ones are the encoder's compute alone.
  for (int pass = 1; pass <= a.repeats; ++pass) {
    start = std::chrono::steady_clock::now();
    const std::string which =
        a.repeats > 1 ? " (pass " + std::to_string(pass) + " of " + std::to_string(a.repeats) + ")"
                      : "";
#ifdef FISDIT_WITH_PIPELINE
    if (tokenizer) {
      const wan::PromptContext encoded =
          wan::encode_prompt(*tokenizer, *encoder, *a.prompt, a.text_len);
      std::snprintf(line, sizeof line, "encoded the prompt: %lld of %d tokens in %.3f s%s",
                    static_cast<long long>(encoded.tokens.length), a.text_len, seconds_since(start),
                    which.c_str());
      out = {{"context", encoded.context},
             {"ids", encoded.tokens.ids_tensor()},
             {"mask", encoded.tokens.mask_tensor()}};
    } else
#endif
    {
      const Tensor context = encoder->encode(tokens.ids, tokens.mask);
      std::snprintf(line, sizeof line, "encoded %lld of %zu tokens in %.3f s%s",
                    static_cast<long long>(context.dim(0)), tokens.ids.size(), seconds_since(start),
                    which.c_str());
      out = {{"context", context}};
    }
    status(line);
  }
  if (a.resident)
    status("resident weights: " + std::to_string(encoder->resident_bytes() / 1048576) + " MiB");
  write_safetensors(a.output, out, {{"producer", "fisdit"}});
  status("wrote " + a.output + " ('context' " + shape_str(out[0].second.shape()) + ")");
}

}  // namespace

void register_text_encode(CLI::App& app) {
  auto args = std::make_shared<TextEncodeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "text-encode",
      "umT5 text encoder (--device cpu: fp32; cuda: bf16): prompt or token ids -> DiT context");
  cmd->add_option("--text-encoder", args->text_encoder,
                  "umT5 encoder .safetensors or torch.save .pth (official T5Encoder or Hugging "
                  "Face UMT5 keys, any prefix) or checkpoint directory")
      ->required();
  cmd->add_option("--prompt", args->prompt,
                  "text to encode as Wan does (HTML entities decoded twice, whitespace collapsed, "
                  "umT5 SentencePiece, </s>, padded to --text-len); needs --tokenizer");
  cmd->add_option("--tokenizer", args->tokenizer,
                  "umT5 SentencePiece model: spiece.model, or a directory holding it (also in "
                  "tokenizer/ or google/umt5-xxl/)");
  cmd->add_option("--text-len", args->text_len,
                  "tokenizer max length with --prompt (Wan's text_len; longer prompts are "
                  "truncated, </s> kept)")
      ->default_val(wan::kT5TextLen);
  cmd->add_option("--repeats", args->repeats, "encode this many times, each pass timed")
      ->capture_default_str();
  cmd->add_flag("--resident", args->resident,
                "keep the weights on the device after the first pass (as a kept-loaded generator "
                "does on a GPU)");
  add_device_flags(cmd, args->device, "cpu",
                   "cpu (fp32 reference) or cuda (bf16 weights streamed one block at a time)");
  cmd->add_option("--inputs", args->inputs,
                  "instead of --prompt: safetensors with 'ids' and 'mask' [1, L] (or "
                  "'input.ids'/'input.mask'), integer or float");
  cmd->add_option("--output", args->output,
                  "safetensors to write 'context' [sum(mask), dim] F32 to (the encoder output "
                  "trimmed as T5EncoderModel returns it); with --prompt also 'ids' and 'mask' "
                  "[1, text_len] I64")
      ->required();
  cmd->callback([args] { run_text_encode(*args); });
}

}  // namespace fisdit::cli
