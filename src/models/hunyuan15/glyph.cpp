#include "models/hunyuan15/glyph.h"

#include <filesystem>
#include <fstream>
#include <map>
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

nlohmann::ordered_json read_json(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open (" + what + ")");
  nlohmann::ordered_json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    throw Error(path + ": not JSON: " + e.what());
  }
  return j;
}

// The token byT5's own vocabulary has at `id` (< 384): <pad>, </s>, <unk>, <extra_id_i>; "" for
// a byte.
std::string byt5_base_token(int64_t id) {
  if (id < 3) return id == 0 ? "<pad>" : id == 1 ? "</s>" : "<unk>";
  if (id >= 259) return "<extra_id_" + std::to_string(id - 259) + ">";
  return {};
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
    nlohmann::ordered_json j = read_json(path, "the Glyph-SDXL-v2 folder's assets");
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

std::vector<std::string> glyph_added_tokens_diffusers(const std::string& tokenizer_dir) {
  namespace fs = std::filesystem;
  constexpr int64_t kFirst = 384;  // 256 bytes + 3 special tokens + 125 extra ids
  const std::string config_path = (fs::path(tokenizer_dir) / "tokenizer_config.json").string();
  if (!fs::is_regular_file(config_path))
    throw Error(config_path +
                ": missing (the glyph encoder's ByT5Tokenizer folder, diffusers' "
                "tokenizer_2/, keeps its added tokens there)");
  const nlohmann::ordered_json config = read_json(config_path, "diffusers' tokenizer_2");
  if (!config.is_object()) throw Error(config_path + ": expected a JSON object");
  const nlohmann::ordered_json cls =
      config.value("tokenizer_class", nlohmann::ordered_json("ByT5Tokenizer"));
  if (cls != "ByT5Tokenizer")
    throw Error(config_path + ": tokenizer_class is " + cls.dump() +
                ", the glyph encoder's is ByT5Tokenizer");

  // id -> (token, file) and token -> (id, file), from both files (file: the one that says so).
  std::map<int64_t, std::pair<std::string, std::string>> by_id;
  std::map<std::string, std::pair<int64_t, std::string>> by_token;
  auto add = [&](int64_t id, const std::string& token, const std::string& file) {
    if (id < 0)
      throw Error(file + ": token '" + token + "' has the negative id " + std::to_string(id));
    const auto [it, fresh] = by_id.try_emplace(id, token, file);
    if (!fresh && it->second.first != token)
      throw Error(file + " gives id " + std::to_string(id) + " to '" + token + "', but " +
                  it->second.second + " to '" + it->second.first + "'");
    const auto [tok, new_token] = by_token.try_emplace(token, id, file);
    if (!new_token && tok->second.first != id)
      throw Error(file + " gives '" + token + "' id " + std::to_string(id) + ", but " +
                  tok->second.second + " gives it id " + std::to_string(tok->second.first));
  };
  if (const auto decoder = config.find("added_tokens_decoder"); decoder != config.end()) {
    if (!decoder->is_object())
      throw Error(config_path + ": added_tokens_decoder is not an object of id -> token");
    for (const auto& [key, entry] : decoder->items()) {
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(key, &used);
        if (used != key.size()) id = -1;
      } catch (const std::exception&) {
      }
      if (id < 0 || !entry.is_object() || !entry.contains("content") ||
          !entry["content"].is_string())
        throw Error(config_path + ": added_tokens_decoder entry '" + key +
                    "' is not an id with a {\"content\": ...} token");
      const std::string token = entry["content"].get<std::string>();
      // ByT5Tokenizer gives its added tokens no stripping (add_tokens' AddedToken defaults).
      if (id >= kFirst && (entry.value("lstrip", nlohmann::ordered_json(false)) == true ||
                           entry.value("rstrip", nlohmann::ordered_json(false)) == true))
        throw Error(config_path + ": the added token '" + token +
                    "' strips whitespace (lstrip/rstrip), which the glyph tokens never do");
      add(id, token, config_path);
    }
  }
  const std::string added_path = (fs::path(tokenizer_dir) / "added_tokens.json").string();
  if (fs::is_regular_file(added_path)) {
    const nlohmann::ordered_json added = read_json(added_path, "diffusers' tokenizer_2");
    if (!added.is_object()) throw Error(added_path + ": expected a JSON object of token -> id");
    for (const auto& [token, id] : added.items()) {
      if (!id.is_number_integer())
        throw Error(added_path + ": the id of '" + token + "' is not an integer");
      add(id.get<int64_t>(), token, added_path);
    }
  } else if (!config.contains("added_tokens_decoder")) {
    throw Error(tokenizer_dir +
                ": neither tokenizer_config.json's added_tokens_decoder nor "
                "added_tokens.json lists the glyph tokens");
  }

  std::vector<std::string> out;
  for (const auto& [id, entry] : by_id) {
    const auto& [token, file] = entry;
    if (id < kFirst) {
      const std::string base = byt5_base_token(id);
      if (base != token)
        throw Error(file + ": id " + std::to_string(id) + " is '" + token + "', byT5's is " +
                    (base.empty() ? "a byte" : "'" + base + "'") +
                    " (the added tokens' ids would not be byT5's)");
      continue;
    }
    const int64_t want = kFirst + static_cast<int64_t>(out.size());
    if (id != want)
      throw Error(file + ": the added token '" + token + "' has id " + std::to_string(id) +
                  ", but ByT5Tokenizer numbers its added tokens from 384 without a gap (expected " +
                  std::to_string(want) + ")");
    out.push_back(token);
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
  load(src, root.string() + "/assets", backend);
}

GlyphEncoder::GlyphEncoder(const std::string& text_encoder_dir, const std::string& tokenizer_dir,
                           Backend& backend, int64_t max_length)
    : checkpoint_(text_encoder_dir), max_length_(max_length) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(tokenizer_dir))
    throw Error(tokenizer_dir +
                ": no such folder (the glyph encoder's ByT5Tokenizer, diffusers' "
                "tokenizer_2/)");
  if (!fs::is_directory(text_encoder_dir))
    throw Error(text_encoder_dir +
                ": no such folder (the glyph encoder's T5EncoderModel, "
                "diffusers' text_encoder_2/)");
  tokenizer_ = ByT5Tokenizer(glyph_added_tokens_diffusers(tokenizer_dir));
  // A T5EncoderModel folder: config.json (distance, epsilon, gated-gelu) + safetensors under the
  // encoder's names, which open_t5 reads as it reads Wan's UMT5EncoderModel folders.
  load(wan::open_t5(text_encoder_dir), tokenizer_dir, backend);
}

void GlyphEncoder::load(const wan::T5Source& src, const std::string& tokens_origin,
                        Backend& backend) {
  if (src.config.vocab != tokenizer_.vocab_size())
    throw Error(checkpoint_ + ": its embedding has " + std::to_string(src.config.vocab) +
                " rows, but byT5's vocabulary with the " +
                std::to_string(tokenizer_.vocab_size() - 384) + " color and font tokens of " +
                tokens_origin + " has " + std::to_string(tokenizer_.vocab_size()));
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
