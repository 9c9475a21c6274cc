#include "models/hunyuan15/qwen_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#ifdef FISDIT_WITH_ICU
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>
#endif

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "core/utf8.h"
#include "fisdit/error.h"

namespace fisdit::hunyuan15 {

namespace {

using json = nlohmann::json;

// GPT-2's byte-level alphabet: the printable bytes stand for themselves, the others (controls,
// space, ...) for the code points from 256 on, in byte order.
struct ByteLevel {
  std::string of_byte[256];                       // UTF-8 of each byte's character
  std::unordered_map<char32_t, uint8_t> byte_of;  // code point -> byte
  ByteLevel() {
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t cp = keep ? static_cast<char32_t>(b) : static_cast<char32_t>(next++);
      append_utf8(of_byte[b], cp);
      byte_of[cp] = static_cast<uint8_t>(b);
    }
  }
};

const ByteLevel& byte_level() {
  static const ByteLevel table;
  return table;
}

#ifndef FISDIT_WITH_ICU
// Built without ICU: ASCII text is its own NFC form; anything else is refused rather than
// tokenized unnormalised (which could give other ids than the official tokenizer).
std::string nfc(std::string_view s) {
  for (const char c : s)
    if (static_cast<unsigned char>(c) >= 0x80)
      throw Error(
          "this fisdit was built without ICU, which the Qwen2 tokenizer needs to NFC-normalise "
          "non-ASCII text: use an ASCII prompt, or rebuild with ICU (Debian/Ubuntu: apt-get "
          "install libicu-dev)");
  return std::string(s);
}
#else
std::string nfc(std::string_view s) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) throw Error(std::string("ICU NFC normalizer: ") + u_errorName(status));
  const icu::UnicodeString in =
      icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  if (n->isNormalized(in, status) && U_SUCCESS(status)) return std::string(s);
  status = U_ZERO_ERROR;
  const icu::UnicodeString out = n->normalize(in, status);
  if (U_FAILURE(status)) throw Error(std::string("ICU NFC normalization: ") + u_errorName(status));
  std::string utf8;
  out.toUTF8String(utf8);
  return utf8;
}
#endif

}  // namespace

struct QwenTokenizer::Impl {
  std::string path;
  std::unordered_map<std::string, int32_t> vocab;      // byte-level token -> id
  std::vector<std::string> token_of;                   // id -> token (added ones: content)
  std::vector<bool> is_added;                          // id -> an added token
  std::vector<std::pair<std::string, int32_t>> added;  // content -> id, longest first
  std::map<std::pair<int32_t, int32_t>, std::pair<int32_t, int32_t>> merges;  // -> (rank, id)
  bool normalize_nfc = false, ignore_merges = false;
  pcre2_code* regex = nullptr;
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  ~Impl() {
    if (regex) pcre2_code_free(regex);
  }

  [[noreturn]] void bad(const std::string& what) const {
    throw Error("tokenizer " + path + ": " + what);
  }

  void load(const json& j) {
    const json& model = j.value("model", json());
    if (!model.is_object() || model.value("type", "") != "BPE")
      bad("model.type must be \"BPE\" (a Qwen2 byte-level BPE tokenizer.json)");
    if (!model.contains("vocab") || !model["vocab"].is_object()) bad("model.vocab is missing");
    ignore_merges = model.value("ignore_merges", false);
    int32_t top = -1;
    for (const auto& [token, id] : model["vocab"].items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() > std::numeric_limits<int32_t>::max())
        bad("model.vocab[\"" + token + "\"] is not a valid id");
      vocab[token] = id.get<int32_t>();
      top = std::max(top, id.get<int32_t>());
    }
    for (const json& a : j.value("added_tokens", json::array())) {
      const std::string content = a.value("content", "");
      const int64_t id = a.value("id", int64_t{-1});
      if (content.empty() || id < 0 || id > std::numeric_limits<int32_t>::max())
        bad("added_tokens: an entry without content or a valid id");
      added.emplace_back(content, static_cast<int32_t>(id));
      top = std::max(top, static_cast<int32_t>(id));
    }
    std::stable_sort(added.begin(), added.end(),
                     [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
    token_of.assign(static_cast<size_t>(top + 1), std::string());
    is_added.assign(static_cast<size_t>(top + 1), false);
    for (const auto& [token, id] : vocab) token_of[static_cast<size_t>(id)] = token;
    for (const auto& [content, id] : added) {
      token_of[static_cast<size_t>(id)] = content;
      is_added[static_cast<size_t>(id)] = true;
    }
    // Merges: "a b" strings (older files) or [a, b] pairs.
    const json& list = model.value("merges", json::array());
    int32_t rank = 0;
    for (const json& m : list) {
      std::string a, b;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          bad("model.merges[" + std::to_string(rank) + "] \"" + s + "\" is not two tokens");
        a = s.substr(0, sp), b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>(), b = m[1].get<std::string>();
      } else {
        bad("model.merges[" + std::to_string(rank) + "] is neither \"a b\" nor [a, b]");
      }
      const auto ia = vocab.find(a), ib = vocab.find(b), iab = vocab.find(a + b);
      if (ia == vocab.end() || ib == vocab.end() || iab == vocab.end())
        bad("model.merges[" + std::to_string(rank) + "] (" + a + " " + b +
            ") names a token the vocabulary lacks");
      merges.emplace(std::make_pair(ia->second, ib->second), std::make_pair(rank, iab->second));
      ++rank;
    }
    for (int b = 0; b < 256; ++b)
      if (!vocab.count(byte_level().of_byte[b]))
        bad("model.vocab lacks the byte-level character of byte " + std::to_string(b) +
            " (not a byte-level BPE)");

    const json& norm = j.value("normalizer", json());
    if (norm.is_object() && norm.value("type", "") == "NFC")
      normalize_nfc = true;
    else if (!norm.is_null())
      bad("normalizer: only NFC (or none) is supported, got " + norm.dump());

    // Pre-tokenizer: Split(regex, Isolated) then ByteLevel without its own regex, as Qwen2's.
    const json& pre = j.value("pre_tokenizer", json());
    std::string pattern;
    bool byte_level_seen = false;
    const json steps = pre.value("type", "") == "Sequence" ? pre.value("pretokenizers", json())
                                                           : json::array({pre});
    for (const json& step : steps) {
      const std::string type = step.value("type", "");
      if (type == "Split") {
        if (!step.contains("pattern") || !step["pattern"].contains("Regex") ||
            step.value("behavior", "") != "Isolated" || step.value("invert", false))
          bad("pre_tokenizer Split: only a Regex pattern with behavior Isolated is supported");
        pattern = step["pattern"]["Regex"].get<std::string>();
      } else if (type == "ByteLevel") {
        if (step.value("add_prefix_space", false) || step.value("use_regex", true))
          bad("pre_tokenizer ByteLevel: only add_prefix_space false, use_regex false (after a "
              "Split) is supported");
        byte_level_seen = true;
      } else {
        bad("pre_tokenizer: unsupported step " + step.dump());
      }
    }
    if (pattern.empty() || !byte_level_seen)
      bad("pre_tokenizer: expected Split (regex) then ByteLevel, as Qwen2's tokenizer.json");
    int err = 0;
    PCRE2_SIZE offset = 0;
    regex = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
    if (!regex) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      bad("pre_tokenizer regex at offset " + std::to_string(offset) + ": " +
          reinterpret_cast<const char*>(msg));
    }
    pcre2_jit_compile(regex, PCRE2_JIT_COMPLETE);  // a speed-up only: fine when unavailable
  }

  // The regex pieces of one normalized span: matches and the text between them.
  std::vector<std::string_view> split(std::string_view s) const {
    std::vector<std::string_view> pieces;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(regex, nullptr);
    size_t pos = 0, last = 0;
    while (pos <= s.size()) {
      const int rc = pcre2_match(regex, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos,
                                 PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        pcre2_match_data_free(md);
        throw Error("tokenizer " + path + ": regex match failed (PCRE2 error " +
                    std::to_string(rc) + ")");
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t a = ov[0], b = ov[1];
      if (b == a) {  // an empty match: step over one character
        pos = a + 1;
        while (pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) ++pos;
        continue;
      }
      if (a > last) pieces.push_back(s.substr(last, a - last));
      pieces.push_back(s.substr(a, b - a));
      last = pos = b;
    }
    pcre2_match_data_free(md);
    if (last < s.size()) pieces.push_back(s.substr(last));
    return pieces;
  }

  // BPE of one piece: its bytes as byte-level tokens, then the pair of lowest rank merged
  // wherever it occurs (left to right), until no pair has a merge.
  std::vector<int32_t> bpe(std::string_view piece) const {
    std::string word;
    for (const char c : piece) word += byte_level().of_byte[static_cast<unsigned char>(c)];
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      if (const auto it = cache.find(word); it != cache.end()) return it->second;
    }
    std::vector<int32_t> ids;
    if (const auto it = vocab.find(word); ignore_merges && it != vocab.end()) {
      ids.push_back(it->second);
    } else {
      for (const char c : piece)
        ids.push_back(vocab.at(byte_level().of_byte[static_cast<unsigned char>(c)]));
      while (ids.size() > 1) {
        int32_t best = std::numeric_limits<int32_t>::max(), merged = -1;
        for (size_t i = 0; i + 1 < ids.size(); ++i)
          if (const auto m = merges.find({ids[i], ids[i + 1]});
              m != merges.end() && m->second.first < best)
            best = m->second.first, merged = m->second.second;
        if (merged < 0) break;
        std::vector<int32_t> next;
        next.reserve(ids.size());
        for (size_t i = 0; i < ids.size(); ++i) {
          if (i + 1 < ids.size()) {
            const auto m = merges.find({ids[i], ids[i + 1]});
            if (m != merges.end() && m->second.first == best) {
              next.push_back(merged);
              ++i;
              continue;
            }
          }
          next.push_back(ids[i]);
        }
        ids.swap(next);
      }
    }
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() > 100000) cache.clear();
    cache.emplace(word, ids);
    return ids;
  }

  void encode_span(std::string_view span, std::vector<int32_t>& out) const {
    if (span.empty()) return;
    const std::string text = normalize_nfc ? nfc(span) : std::string(span);
    for (const std::string_view piece : split(text)) {
      const std::vector<int32_t> ids = bpe(piece);
      out.insert(out.end(), ids.begin(), ids.end());
    }
  }
};

QwenTokenizer::QwenTokenizer(const std::string& path) : impl_(std::make_unique<Impl>()) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path file = path;
  if (fs::is_directory(file, ec)) file /= "tokenizer.json";
  impl_->path = file.string();
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error("tokenizer " + impl_->path + ": cannot open the file");
  std::stringstream text;
  text << in.rdbuf();
  json j;
  try {
    j = json::parse(text.str());
  } catch (const json::exception& e) {
    throw Error("tokenizer " + impl_->path + ": not valid JSON (" + e.what() + ")");
  }
  try {
    impl_->load(j);
  } catch (const json::exception& e) {
    throw Error("tokenizer " + impl_->path + ": unexpected content (" + e.what() + ")");
  }
}

QwenTokenizer::~QwenTokenizer() = default;
QwenTokenizer::QwenTokenizer(QwenTokenizer&&) noexcept = default;
QwenTokenizer& QwenTokenizer::operator=(QwenTokenizer&&) noexcept = default;

std::vector<int32_t> QwenTokenizer::encode(std::string_view text) const {
  check_utf8(text, "tokenizer: the text");
  const Impl& t = *impl_;
  std::vector<int32_t> out;
  size_t start = 0, pos = 0;
  while (pos < text.size()) {
    const auto hit = std::find_if(t.added.begin(), t.added.end(), [&](const auto& a) {
      return text.compare(pos, a.first.size(), a.first) == 0;
    });
    if (hit == t.added.end()) {
      ++pos;
      continue;
    }
    t.encode_span(text.substr(start, pos - start), out);
    out.push_back(hit->second);
    pos += hit->first.size();
    start = pos;
  }
  t.encode_span(text.substr(start), out);
  return out;
}

std::string QwenTokenizer::decode(const std::vector<int32_t>& ids) const {
  const Impl& t = *impl_;
  std::string out;
  for (const int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= t.token_of.size() ||
        (t.token_of[static_cast<size_t>(id)].empty() && !t.is_added[static_cast<size_t>(id)]))
      throw Error("tokenizer " + t.path + ": id " + std::to_string(id) +
                  " is not in the vocabulary");
    const std::string& token = t.token_of[static_cast<size_t>(id)];
    if (t.is_added[static_cast<size_t>(id)]) {
      out += token;
      continue;
    }
    for (size_t i = 0, n = 0; i < token.size(); i += n) {
      char32_t cp = 0;
      n = decode_utf8(token, i, cp);
      const auto b = byte_level().byte_of.find(cp);
      if (n == 0 || b == byte_level().byte_of.end())
        throw Error("tokenizer " + t.path + ": token " + token + " is not byte-level");
      out += static_cast<char>(b->second);
    }
  }
  return out;
}

int32_t QwenTokenizer::token_id(std::string_view token) const {
  for (const auto& [content, id] : impl_->added)
    if (content == token) return id;
  const auto it = impl_->vocab.find(std::string(token));
  return it == impl_->vocab.end() ? -1 : it->second;
}

int64_t QwenTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->token_of.size()); }
const std::string& QwenTokenizer::path() const { return impl_->path; }

}  // namespace fisdit::hunyuan15
