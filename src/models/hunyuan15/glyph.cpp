#include "models/hunyuan15/glyph.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fisdit/error.h"

namespace fisdit::hunyuan15 {

namespace {
constexpr std::string_view kOpenCurly = "\xe2\x80\x9c";   // “
constexpr std::string_view kCloseCurly = "\xe2\x80\x9d";  // ”
constexpr int64_t kExtraIds = 125;

// The end of the text opened at `from` (the index of the closing delimiter), or npos when a line
// break or the end comes first (the pattern's '.' does not match '\n').
size_t closing(const std::string& s, size_t from, std::string_view close) {
  for (size_t j = from; j < s.size(); ++j) {
    if (s[j] == '\n') return std::string::npos;
    if (s.compare(j, close.size(), close) == 0) return j;
  }
  return std::string::npos;
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
}  // namespace

std::vector<std::string> glyph_texts(const std::string& s) {
  // re.findall(r'\"(.*?)\"|“(.*?)”', prompt): at each position the first alternative, then the
  // second; on a match the scan goes on after it. The delimiters' bytes never occur inside
  // another UTF-8 character, so a byte scan finds what the code-point scan finds.
  std::vector<std::string> found;
  size_t i = 0;
  while (i < s.size()) {
    std::string_view open = s[i] == '"' ? std::string_view("\"")
                            : s.compare(i, kOpenCurly.size(), kOpenCurly) == 0 ? kOpenCurly
                                                                               : std::string_view();
    if (!open.empty()) {
      const size_t end = closing(s, i + open.size(), open == "\"" ? "\"" : kCloseCurly);
      if (end != std::string::npos) {
        found.push_back(s.substr(i + open.size(), end - i - open.size()));
        i = end + (open == "\"" ? 1 : kCloseCurly.size());
        continue;
      }
    }
    ++i;
  }
  if (found.size() > 1) {  // dict.fromkeys: the first of each
    std::vector<std::string> unique;
    for (const std::string& t : found)
      if (std::find(unique.begin(), unique.end(), t) == unique.end()) unique.push_back(t);
    return unique;
  }
  return found;
}

std::string glyph_prompt(const std::vector<std::string>& texts) {
  std::string out;
  for (const std::string& t : texts) out += "Text \"" + t + "\". ";
  return out;
}

ByT5Tokenizer::ByT5Tokenizer(std::vector<std::string> added)
    : tokens_{{"<pad>", 0, true}, {"</s>", 1, true}, {"<unk>", 2, true}} {
  for (int64_t i = 0; i < kExtraIds; ++i)
    tokens_.push_back({"<extra_id_" + std::to_string(i) + ">", 259 + i, false});
  for (size_t i = 0; i < added.size(); ++i)
    tokens_.push_back({std::move(added[i]), 384 + static_cast<int64_t>(i), false});
}

// 256 bytes, the 3 special tokens and the 125 extra ids, then the added tokens.
int64_t ByT5Tokenizer::vocab_size() const { return 256 + static_cast<int64_t>(tokens_.size()); }

std::vector<int64_t> ByT5Tokenizer::encode(std::string_view text, int64_t max_length) const {
  if (max_length < 1) throw Error("byT5 tokenizer: max_length must be at least 1");
  std::vector<int64_t> ids;
  std::string pending;  // text bytes not yet emitted (a strip token may trim its end)
  auto flush = [&] {
    for (unsigned char c : pending) ids.push_back(int64_t{c} + 3);
    pending.clear();
  };
  size_t i = 0;
  while (i < text.size()) {
    const Token* best = nullptr;
    if (text[i] == '<')
      for (const Token& t : tokens_)
        if (text.compare(i, t.text.size(), t.text) == 0 &&
            (!best || t.text.size() > best->text.size()))
          best = &t;
    if (!best) {
      pending.push_back(text[i++]);
      continue;
    }
    if (best->strip)
      while (!pending.empty() && is_space(pending.back())) pending.pop_back();
    flush();
    ids.push_back(best->id);
    i += best->text.size();
    if (best->strip)
      while (i < text.size() && is_space(text[i])) ++i;
  }
  flush();
  if (static_cast<int64_t>(ids.size()) > max_length - 1)
    ids.resize(static_cast<size_t>(max_length - 1));
  ids.push_back(1);  // </s>
  return ids;
}

std::vector<std::string> glyph_added_tokens(const std::string& root) {
  namespace fs = std::filesystem;
  auto read = [&](const char* name) {
    const std::string path = (fs::path(root) / "assets" / name).string();
    std::ifstream in(path);
    if (!in) throw Error(path + ": cannot open (the Glyph-SDXL-v2 folder's assets)");
    nlohmann::ordered_json j;
    try {
      in >> j;
    } catch (const std::exception& e) {
      throw Error(path + ": not JSON: " + e.what());
    }
    if (!j.is_object()) throw Error(path + ": expected a JSON object of name -> index");
    return std::make_pair(path, j);
  };
  const auto [color_path, colors] = read("color_idx.json");
  const auto [font_path, fonts] = read("multilingual_10-lang_idx.json");
  std::vector<std::string> out;
  for (size_t i = 0; i < colors.size(); ++i) out.push_back("<color-" + std::to_string(i) + ">");
  for (const auto& [code, index] : fonts.items()) {
    if (!index.is_number_integer())
      throw Error(font_path + ": the index of '" + code + "' is not an integer");
    // code[:2]: the first two characters.
    size_t end = 0;
    for (int chars = 0; chars < 2 && end < code.size(); ++chars) {
      ++end;
      while (end < code.size() && (static_cast<unsigned char>(code[end]) & 0xC0) == 0x80) ++end;
    }
    std::string token = "<";
    token.append(code, 0, end);
    token += "-font-" + std::to_string(index.get<int64_t>()) + ">";
    out.push_back(std::move(token));
  }
  return out;
}

GlyphEncoder::GlyphEncoder(const std::string& dir, Backend& backend, int64_t max_length)
    : max_length_(max_length) {
  namespace fs = std::filesystem;
  const fs::path given(dir);
  const fs::path root = fs::is_directory(given / "Glyph-SDXL-v2") ? given / "Glyph-SDXL-v2" : given;
  const fs::path ckpt = root / "checkpoints" / "byt5_model.pt";
  if (!fs::exists(ckpt))
    throw Error(dir + ": no Glyph-SDXL-v2 checkpoint (looked for " + ckpt.string() +
                "; the release keeps it in text_encoder/Glyph-SDXL-v2/checkpoints/)");
  checkpoint_ = ckpt.string();
  tokenizer_ = ByT5Tokenizer(glyph_added_tokens(root.string()));
  wan::T5Source src = wan::open_t5(checkpoint_);
  const fs::path config = root.parent_path() / "byt5-small" / "config.json";
  if (fs::exists(config)) {
    std::ifstream in(config);
    nlohmann::json j;
    try {
      in >> j;
    } catch (const std::exception& e) {
      throw Error(config.string() + ": not JSON: " + e.what());
    }
    src.config.max_dist = j.value("relative_attention_max_distance", src.config.max_dist);
    src.config.eps = j.value("layer_norm_epsilon", src.config.eps);
    if (j.value("feed_forward_proj", std::string("gated-gelu")) != "gated-gelu")
      throw Error(config.string() + ": feed_forward_proj must be gated-gelu (byT5)");
  }
  if (src.config.vocab != tokenizer_.vocab_size())
    throw Error(checkpoint_ + ": its embedding has " + std::to_string(src.config.vocab) +
                " rows, but byT5's vocabulary with the " +
                std::to_string(tokenizer_.vocab_size() - 384) + " color and font tokens of " +
                root.string() + "/assets has " + std::to_string(tokenizer_.vocab_size()));
  encoder_ = wan::load_t5(src, backend);
}

GlyphEncoder::~GlyphEncoder() = default;

int64_t GlyphEncoder::dim() const { return encoder_->config().dim; }

Tensor GlyphEncoder::encode(const std::string& prompt, std::vector<int64_t>* ids_out) {
  const std::vector<std::string> texts = glyph_texts(prompt);
  if (texts.empty()) {
    if (ids_out) ids_out->clear();
    return Tensor::zeros({0, dim()});
  }
  const std::vector<int64_t> ids = tokenizer_.encode(glyph_prompt(texts), max_length_);
  if (ids_out) *ids_out = ids;
  return encoder_->encode(ids, std::vector<int64_t>(ids.size(), 1));
}

}  // namespace fisdit::hunyuan15
