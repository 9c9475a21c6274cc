// fisdit text-encode: a text encoder (--device cpu or cuda) on a prompt (with its tokenizer) or
// on token ids from a safetensors file: Wan's umT5, or HunyuanVideo 1.5's Qwen2.5-VL language
// model (found by its tensor names).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "cli.h"
#include "core/dtype.h"
#include "core/utf8.h"
#include "fisdit/error.h"
#include "models/hunyuan15/glyph.h"
#include "models/hunyuan15/text_encoder.h"
#include "models/wan/t5.h"
#include "models/wan/t5_tokenizer.h"
#ifdef FISDIT_WITH_QWEN_TOKENIZER
#include "models/hunyuan15/text_prompt.h"
#endif

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
  std::string text_encoder, inputs, output, tokenizer, glyph;
  std::optional<std::string> prompt;
  DeviceFlags device;
  std::optional<int> text_len;  // default: the model's (umT5 512, HunyuanVideo 1.5 1000)
  int repeats = 1;
  bool resident = false;
};

void check_args(const TextEncodeArgs& a) {
  if (a.prompt && !a.inputs.empty())
    throw Error("--prompt and --inputs exclude each other: give the text or the token ids");
  if (!a.prompt && a.inputs.empty())
    throw Error("give --prompt (with --tokenizer) or --inputs (token 'ids' and 'mask')");
  if (!a.prompt && !a.tokenizer.empty()) throw Error("--tokenizer is only used with --prompt");
  if (a.text_len && *a.text_len < 1)
    throw Error("--text-len must be at least 1, got " + std::to_string(*a.text_len));
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

// HunyuanVideo 1.5's text encoder: the prompt in the official chat template, its prefix cropped
// after encoding (text_prompt.h); or token ids (those with mask 1) encoded as they are.
void run_qwen_text_encode(const TextEncodeArgs& a, const hunyuan15::QwenTextSource& src) {
  const hunyuan15::QwenTextConfig& c = src.config;
  if (!a.glyph.empty() && !a.prompt)
    throw Error("--glyph encodes the prompt's quoted text: give --prompt");
#ifdef FISDIT_WITH_QWEN_TOKENIZER
  std::unique_ptr<hunyuan15::QwenTokenizer> tokenizer;
  hunyuan15::PromptTokens prompt;
  if (a.prompt) {
    check_utf8(*a.prompt, "--prompt");
    // The released text_encoder/llm folder holds its tokenizer.json: the default.
    std::string tok_path = a.tokenizer;
    if (tok_path.empty() && std::filesystem::is_directory(a.text_encoder) &&
        std::filesystem::exists(std::filesystem::path(a.text_encoder) / "tokenizer.json"))
      tok_path = a.text_encoder;
    if (tok_path.empty())
      throw Error("--prompt needs --tokenizer (Qwen2.5's tokenizer.json or its directory): " +
                  a.text_encoder + " holds no tokenizer.json");
    try {
      tokenizer = std::make_unique<hunyuan15::QwenTokenizer>(tok_path);
      prompt = hunyuan15::prompt_tokens(*tokenizer, *a.prompt,
                                        a.text_len.value_or(hunyuan15::kTextMaxLength));
    } catch (const Error& e) {
      throw Error(std::string("--tokenizer: ") + e.what());
    }
    if (tokenizer->vocab_size() > c.vocab)
      throw Error("--tokenizer: " + tokenizer->path() + " has " +
                  std::to_string(tokenizer->vocab_size()) + " tokens, more than the " +
                  std::to_string(c.vocab) + " embeddings of " + a.text_encoder);
    if (prompt.dropped > 0)
      std::fprintf(stderr,
                   "warning: the prompt is %lld tokens long; the text encoder takes %lld: the "
                   "last %lld are dropped\n",
                   static_cast<long long>(prompt.prompt_tokens() + prompt.dropped),
                   static_cast<long long>(prompt.prompt_tokens()),
                   static_cast<long long>(prompt.dropped));
  }
#else
  if (a.prompt) {
    check_utf8(*a.prompt, "--prompt");
    throw Error(
        "--prompt: this fisdit was built without the Qwen2 tokenizer (Debian: apt-get install "
        "libpcre2-dev libicu-dev, then rebuild); pass token ids with --inputs");
  }
#endif
  std::vector<int32_t> ids;
  int64_t crop = 0;
  if (a.prompt) {
#ifdef FISDIT_WITH_QWEN_TOKENIZER
    ids = prompt.ids;
    crop = prompt.crop_start;
#endif
  } else {
    const TokenIds tokens = read_token_ids(a.inputs);
    for (size_t i = 0; i < tokens.ids.size(); ++i) {
      if (!tokens.mask[i]) continue;
      if (tokens.ids[i] < 0 || tokens.ids[i] >= c.vocab)
        throw Error(a.inputs + ": 'ids' value " + std::to_string(tokens.ids[i]) + " at position " +
                    std::to_string(i) + " is outside the vocabulary [0, " +
                    std::to_string(c.vocab) + ") of " + a.text_encoder);
      ids.push_back(static_cast<int32_t>(tokens.ids[i]));
    }
  }
  auto start = std::chrono::steady_clock::now();
  auto backend = a.device.backend();
  auto encoder = hunyuan15::load_qwen_text(src, *backend);
  char line[512];
  std::snprintf(line, sizeof line,
                "loaded text encoder %s: Qwen2.5-VL language model, hidden %lld, %d of %d layers "
                "(hidden_states[-%d]), %d heads (%d key/value), vocab %lld (config from %s) in "
                "%.2f s",
                a.text_encoder.c_str(), static_cast<long long>(c.hidden), c.layers_run(), c.layers,
                c.skip_layers + 1, c.heads, c.kv_heads, static_cast<long long>(c.vocab),
                src.config_origin.c_str(), seconds_since(start));
  status(line);
  encoder->set_resident(a.resident);
  Tensor context;
  for (int pass = 1; pass <= a.repeats; ++pass) {
    start = std::chrono::steady_clock::now();
    const Tensor all = encoder->encode(ids);
    context = all.slice_rows(crop, all.dim(0)).clone();
    const std::string kept =
        crop ? " (" + std::to_string(context.dim(0)) + " after the template's prefix)" : "";
    std::snprintf(
        line, sizeof line, "encoded %zu tokens%s in %.3f s%s", ids.size(), kept.c_str(),
        seconds_since(start),
        a.repeats > 1
            ? (" (pass " + std::to_string(pass) + " of " + std::to_string(a.repeats) + ")").c_str()
            : "");
    status(line);
  }
  if (backend->memory_peak() > 0) {
    std::snprintf(line, sizeof line, "peak device memory %.2f GiB",
                  static_cast<double>(backend->memory_peak()) / (1 << 30));
    status(line);
  }
  Tensor ids_t = Tensor::zeros({1, static_cast<int64_t>(ids.size())}, DType::I64);
  for (size_t i = 0; i < ids.size(); ++i) ids_t.data_as<int64_t>()[i] = ids[i];
  NamedTensors out = {{"context", context}, {"ids", ids_t}};
  if (!a.glyph.empty()) {
    // The quoted text of the prompt through byT5 (Glyph-SDXL-v2): 'byt5' for the DiT.
    start = std::chrono::steady_clock::now();
    hunyuan15::GlyphEncoder glyph(a.glyph, *backend);
    const Tensor byt5 = glyph.encode(*a.prompt);
    if (byt5.dim(0) == 0) {
      status("the prompt quotes no text: no byt5 tokens (the DiT gets none)");
    } else {
      std::snprintf(line, sizeof line, "encoded the quoted text: %lld byT5 tokens in %.3f s",
                    static_cast<long long>(byt5.dim(0)), seconds_since(start));
      status(line);
      out.emplace_back("byt5", byt5);
    }
  }
  write_safetensors(a.output, out, {{"producer", "fisdit"}, {"crop_start", std::to_string(crop)}});
  status("wrote " + a.output + " ('context' " + shape_str(context.shape()) + ")");
}

void run_text_encode(const TextEncodeArgs& a) {
  check_args(a);
  if (auto qwen = hunyuan15::find_qwen_text(a.text_encoder)) {
    run_qwen_text_encode(a, *qwen);
    return;
  }
  if (!a.glyph.empty())
    throw Error("--glyph belongs to HunyuanVideo 1.5's text encoder; " + a.text_encoder +
                " is a umT5 encoder");
  const int text_len = a.text_len.value_or(wan::kT5TextLen);
  if (a.prompt && a.tokenizer.empty())
    throw Error("--prompt needs --tokenizer (the umT5 spiece.model or its directory)");
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
          wan::encode_prompt(*tokenizer, *encoder, *a.prompt, text_len);
      std::snprintf(line, sizeof line, "encoded the prompt: %lld of %d tokens in %.3f s%s",
                    static_cast<long long>(encoded.tokens.length), text_len, seconds_since(start),
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
      "text encoder (--device cpu: fp32; cuda: bf16): prompt or token ids -> DiT context");
  cmd->add_option("--text-encoder", args->text_encoder,
                  "umT5 encoder .safetensors or torch.save .pth (official T5Encoder or Hugging "
                  "Face UMT5 keys, any prefix) or checkpoint directory; or HunyuanVideo 1.5's "
                  "Qwen2.5-VL (text_encoder/llm: its language model is used)")
      ->required();
  cmd->add_option("--prompt", args->prompt,
                  "text to encode as the model's pipeline does (Wan: HTML entities decoded twice, "
                  "whitespace collapsed, umT5 SentencePiece, </s>, padded to --text-len; "
                  "HunyuanVideo 1.5: the official video chat template, its prefix cropped); "
                  "needs --tokenizer");
  cmd->add_option("--tokenizer", args->tokenizer,
                  "umT5 SentencePiece model: spiece.model, or a directory holding it (also in "
                  "tokenizer/ or google/umt5-xxl/); HunyuanVideo 1.5: tokenizer.json or its "
                  "directory");
  cmd->add_option("--text-len", args->text_len,
                  "tokenizer max length with --prompt (default: the model's; umT5: Wan's "
                  "text_len 512, longer prompts truncated with </s> kept; HunyuanVideo 1.5: 1000 "
                  "tokens after the template's prefix, longer prompts cut with a warning)");
  cmd->add_option("--glyph", args->glyph,
                  "HunyuanVideo 1.5: also encode the prompt's quoted text with byT5 "
                  "(Glyph-SDXL-v2) into 'byt5': the release's text_encoder folder or its "
                  "Glyph-SDXL-v2 folder");
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
