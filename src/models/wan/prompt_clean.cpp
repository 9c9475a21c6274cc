#include "models/wan/prompt_clean.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <unordered_map>

#include "core/utf8.h"
#include "fisdit/error.h"

namespace fisdit::wan {

namespace {

constexpr char32_t kReplacement = 0xFFFD;

// The code point at s[i]; U+FFFD with length 0 where the text is not UTF-8 (callers then step one
// byte; clean_prompt checks its input first).
char32_t code_point_at(std::string_view s, size_t i, size_t& length) {
  char32_t c = 0;
  length = decode_utf8(s, i, c);
  return length == 0 ? kReplacement : c;
}

// HTML 4.01's entities (the lat1, symbol and special sets) with HTML5's code points, plus &apos;
// and the upper-case aliases that HTML5 also defines. `legacy`: HTML5 also accepts the name
// without ';' (the Latin-1 names and amp, lt, gt, quot in both cases, COPY, REG).
struct Entity {
  const char* name;
  char32_t code_point;
  bool legacy;
};

// U+00A0..U+00FF in order.
constexpr std::array<const char*, 96> kLatin1 = {
    "nbsp",   "iexcl",  "cent",   "pound",  "curren", "yen",    "brvbar", "sect",   "uml",
    "copy",   "ordf",   "laquo",  "not",    "shy",    "reg",    "macr",   "deg",    "plusmn",
    "sup2",   "sup3",   "acute",  "micro",  "para",   "middot", "cedil",  "sup1",   "ordm",
    "raquo",  "frac14", "frac12", "frac34", "iquest", "Agrave", "Aacute", "Acirc",  "Atilde",
    "Auml",   "Aring",  "AElig",  "Ccedil", "Egrave", "Eacute", "Ecirc",  "Euml",   "Igrave",
    "Iacute", "Icirc",  "Iuml",   "ETH",    "Ntilde", "Ograve", "Oacute", "Ocirc",  "Otilde",
    "Ouml",   "times",  "Oslash", "Ugrave", "Uacute", "Ucirc",  "Uuml",   "Yacute", "THORN",
    "szlig",  "agrave", "aacute", "acirc",  "atilde", "auml",   "aring",  "aelig",  "ccedil",
    "egrave", "eacute", "ecirc",  "euml",   "igrave", "iacute", "icirc",  "iuml",   "eth",
    "ntilde", "ograve", "oacute", "ocirc",  "otilde", "ouml",   "divide", "oslash", "ugrave",
    "uacute", "ucirc",  "uuml",   "yacute", "thorn",  "yuml"};

constexpr Entity kOtherEntities[] = {
    // HTMLspecial
    {"quot", 0x22, true},
    {"amp", 0x26, true},
    {"lt", 0x3C, true},
    {"gt", 0x3E, true},
    {"OElig", 0x152, false},
    {"oelig", 0x153, false},
    {"Scaron", 0x160, false},
    {"scaron", 0x161, false},
    {"Yuml", 0x178, false},
    {"circ", 0x2C6, false},
    {"tilde", 0x2DC, false},
    {"ensp", 0x2002, false},
    {"emsp", 0x2003, false},
    {"thinsp", 0x2009, false},
    {"zwnj", 0x200C, false},
    {"zwj", 0x200D, false},
    {"lrm", 0x200E, false},
    {"rlm", 0x200F, false},
    {"ndash", 0x2013, false},
    {"mdash", 0x2014, false},
    {"lsquo", 0x2018, false},
    {"rsquo", 0x2019, false},
    {"sbquo", 0x201A, false},
    {"ldquo", 0x201C, false},
    {"rdquo", 0x201D, false},
    {"bdquo", 0x201E, false},
    {"dagger", 0x2020, false},
    {"Dagger", 0x2021, false},
    {"permil", 0x2030, false},
    {"lsaquo", 0x2039, false},
    {"rsaquo", 0x203A, false},
    {"euro", 0x20AC, false},
    // HTMLsymbol: Latin, Greek, punctuation, letter-like, arrows, math, technical, shapes
    {"fnof", 0x192, false},
    {"Alpha", 0x391, false},
    {"Beta", 0x392, false},
    {"Gamma", 0x393, false},
    {"Delta", 0x394, false},
    {"Epsilon", 0x395, false},
    {"Zeta", 0x396, false},
    {"Eta", 0x397, false},
    {"Theta", 0x398, false},
    {"Iota", 0x399, false},
    {"Kappa", 0x39A, false},
    {"Lambda", 0x39B, false},
    {"Mu", 0x39C, false},
    {"Nu", 0x39D, false},
    {"Xi", 0x39E, false},
    {"Omicron", 0x39F, false},
    {"Pi", 0x3A0, false},
    {"Rho", 0x3A1, false},
    {"Sigma", 0x3A3, false},
    {"Tau", 0x3A4, false},
    {"Upsilon", 0x3A5, false},
    {"Phi", 0x3A6, false},
    {"Chi", 0x3A7, false},
    {"Psi", 0x3A8, false},
    {"Omega", 0x3A9, false},
    {"alpha", 0x3B1, false},
    {"beta", 0x3B2, false},
    {"gamma", 0x3B3, false},
    {"delta", 0x3B4, false},
    {"epsilon", 0x3B5, false},
    {"zeta", 0x3B6, false},
    {"eta", 0x3B7, false},
    {"theta", 0x3B8, false},
    {"iota", 0x3B9, false},
    {"kappa", 0x3BA, false},
    {"lambda", 0x3BB, false},
    {"mu", 0x3BC, false},
    {"nu", 0x3BD, false},
    {"xi", 0x3BE, false},
    {"omicron", 0x3BF, false},
    {"pi", 0x3C0, false},
    {"rho", 0x3C1, false},
    {"sigmaf", 0x3C2, false},
    {"sigma", 0x3C3, false},
    {"tau", 0x3C4, false},
    {"upsilon", 0x3C5, false},
    {"phi", 0x3C6, false},
    {"chi", 0x3C7, false},
    {"psi", 0x3C8, false},
    {"omega", 0x3C9, false},
    {"thetasym", 0x3D1, false},
    {"upsih", 0x3D2, false},
    {"piv", 0x3D6, false},
    {"bull", 0x2022, false},
    {"hellip", 0x2026, false},
    {"prime", 0x2032, false},
    {"Prime", 0x2033, false},
    {"oline", 0x203E, false},
    {"frasl", 0x2044, false},
    {"weierp", 0x2118, false},
    {"image", 0x2111, false},
    {"real", 0x211C, false},
    {"trade", 0x2122, false},
    {"alefsym", 0x2135, false},
    {"larr", 0x2190, false},
    {"uarr", 0x2191, false},
    {"rarr", 0x2192, false},
    {"darr", 0x2193, false},
    {"harr", 0x2194, false},
    {"crarr", 0x21B5, false},
    {"lArr", 0x21D0, false},
    {"uArr", 0x21D1, false},
    {"rArr", 0x21D2, false},
    {"dArr", 0x21D3, false},
    {"hArr", 0x21D4, false},
    {"forall", 0x2200, false},
    {"part", 0x2202, false},
    {"exist", 0x2203, false},
    {"empty", 0x2205, false},
    {"nabla", 0x2207, false},
    {"isin", 0x2208, false},
    {"notin", 0x2209, false},
    {"ni", 0x220B, false},
    {"prod", 0x220F, false},
    {"sum", 0x2211, false},
    {"minus", 0x2212, false},
    {"lowast", 0x2217, false},
    {"radic", 0x221A, false},
    {"prop", 0x221D, false},
    {"infin", 0x221E, false},
    {"ang", 0x2220, false},
    {"and", 0x2227, false},
    {"or", 0x2228, false},
    {"cap", 0x2229, false},
    {"cup", 0x222A, false},
    {"int", 0x222B, false},
    {"there4", 0x2234, false},
    {"sim", 0x223C, false},
    {"cong", 0x2245, false},
    {"asymp", 0x2248, false},
    {"ne", 0x2260, false},
    {"equiv", 0x2261, false},
    {"le", 0x2264, false},
    {"ge", 0x2265, false},
    {"sub", 0x2282, false},
    {"sup", 0x2283, false},
    {"nsub", 0x2284, false},
    {"sube", 0x2286, false},
    {"supe", 0x2287, false},
    {"oplus", 0x2295, false},
    {"otimes", 0x2297, false},
    {"perp", 0x22A5, false},
    {"sdot", 0x22C5, false},
    {"lceil", 0x2308, false},
    {"rceil", 0x2309, false},
    {"lfloor", 0x230A, false},
    {"rfloor", 0x230B, false},
    // HTML 4 had U+2329/U+232A; HTML5 (and so Python) maps them to the mathematical brackets.
    {"lang", 0x27E8, false},
    {"rang", 0x27E9, false},
    {"loz", 0x25CA, false},
    {"spades", 0x2660, false},
    {"clubs", 0x2663, false},
    {"hearts", 0x2665, false},
    {"diams", 0x2666, false},
    // Not HTML 4: XML's &apos; and the upper-case aliases (also accepted without ';').
    {"apos", 0x27, false},
    {"AMP", 0x26, true},
    {"LT", 0x3C, true},
    {"GT", 0x3E, true},
    {"QUOT", 0x22, true},
    {"COPY", 0xA9, true},
    {"REG", 0xAE, true}};

const std::unordered_map<std::string_view, Entity>& entities() {
  static const auto table = [] {
    std::unordered_map<std::string_view, Entity> t;
    for (size_t i = 0; i < kLatin1.size(); ++i)
      t.emplace(kLatin1[i], Entity{kLatin1[i], static_cast<char32_t>(0xA0 + i), true});
    for (const Entity& e : kOtherEntities) t.emplace(e.name, e);
    return t;
  }();
  return table;
}

// HTML5's replacements for the C1 range in numeric references (windows-1252); the five bytes that
// windows-1252 leaves undefined map to themselves.
constexpr std::array<char32_t, 32> kWindows1252 = {
    0x20AC, 0x81,   0x201A, 0x192,  0x201E, 0x2026, 0x2020, 0x2021, 0x2C6,  0x2030, 0x160,
    0x2039, 0x152,  0x8D,   0x17D,  0x8F,   0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x2DC,  0x2122, 0x161,  0x203A, 0x153,  0x9D,   0x17E,  0x178};

// What Python's html._replace_charref gives for &#<number>; (appended to `out`).
void append_numeric_reference(std::string& out, uint64_t n) {
  if (n == 0) return append_utf8(out, kReplacement);
  if (n == 0x0D) return append_utf8(out, U'\r');
  if (n >= 0x80 && n <= 0x9F) return append_utf8(out, kWindows1252[n - 0x80]);
  if ((n >= 0xD800 && n <= 0xDFFF) || n > 0x10FFFF) return append_utf8(out, kReplacement);
  const bool dropped = (n >= 0x01 && n <= 0x08) || n == 0x0B || (n >= 0x0E && n <= 0x1F) ||
                       (n >= 0x7F && n <= 0x9F) || (n >= 0xFDD0 && n <= 0xFDEF) ||
                       (n & 0xFFFE) == 0xFFFE;
  if (!dropped) append_utf8(out, static_cast<char32_t>(n));
}

int digit_value(char c, bool hex) {
  if (c >= '0' && c <= '9') return c - '0';
  if (hex && c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (hex && c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A character of an entity name in Python's pattern: [^\t\n\f <&#;].
bool is_name_char(char32_t c) {
  return c != '\t' && c != '\n' && c != '\f' && c != ' ' && c != '<' && c != '&' && c != '#' &&
         c != ';';
}

// Handles the reference starting at text[amp] == '&'; returns the index after what it consumed
// and appends the replacement (or the unchanged text) to `out`.
size_t unescape_reference(std::string_view text, size_t amp, std::string& out) {
  size_t i = amp + 1;
  if (i < text.size() && text[i] == '#') {
    // #[0-9]+;?  |  #[xX][0-9a-fA-F]+;?
    size_t j = i + 1;
    const bool hex = j < text.size() && (text[j] == 'x' || text[j] == 'X');
    if (hex) ++j;
    const size_t first_digit = j;
    uint64_t n = 0;
    for (; j < text.size() && digit_value(text[j], hex) >= 0; ++j)
      n = std::min<uint64_t>(n * (hex ? 16 : 10) + digit_value(text[j], hex), 0x110000);
    if (j == first_digit) {  // no digits: not a reference ('#' is no name character either)
      out += '&';
      return amp + 1;
    }
    if (j < text.size() && text[j] == ';') ++j;
    append_numeric_reference(out, n);
    return j;
  }
  // [^\t\n\f <&#;]{1,32};?  (32 code points)
  size_t j = i;
  for (int count = 0; count < 32 && j < text.size(); ++count) {
    size_t len = 0;
    if (!is_name_char(code_point_at(text, j, len))) break;
    j += len == 0 ? 1 : len;
  }
  if (j == i) {
    out += '&';
    return amp + 1;
  }
  const std::string_view name = text.substr(i, j - i);
  const bool semicolon = j < text.size() && text[j] == ';';
  const size_t end = semicolon ? j + 1 : j;
  const auto& table = entities();
  if (const auto it = table.find(name); it != table.end() && (semicolon || it->second.legacy)) {
    append_utf8(out, it->second.code_point);
    return end;
  }
  // The longest prefix (of at least 2 characters, shorter than the whole match) that is a name
  // HTML5 accepts without ';', followed by the rest unchanged.
  const std::string_view matched = text.substr(i, end - i);
  for (size_t x = matched.size() - 1; x >= 2; --x) {
    const auto it = table.find(matched.substr(0, x));
    if (it != table.end() && it->second.legacy) {
      append_utf8(out, it->second.code_point);
      out += matched.substr(x);
      return end;
    }
  }
  out += '&';
  out += matched;
  return end;
}

}  // namespace

std::string html_unescape(std::string_view text) {
  if (text.find('&') == std::string_view::npos) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const size_t amp = text.find('&', i);
    if (amp == std::string_view::npos) {
      out += text.substr(i);
      break;
    }
    out += text.substr(i, amp - i);
    i = unescape_reference(text, amp, out);
  }
  return out;
}

bool is_regex_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

bool is_python_space(char32_t c) { return is_regex_space(c) || (c >= 0x1C && c <= 0x1F); }

std::string strip_python_space(std::string_view text) {
  size_t begin = text.size(), end = 0;
  for (size_t i = 0; i < text.size();) {
    size_t len = 0;
    const char32_t c = code_point_at(text, i, len);
    if (len == 0) len = 1;  // not UTF-8: keep the byte (clean_prompt checks before)
    if (!is_python_space(c)) {
      begin = std::min(begin, i);
      end = i + len;
    }
    i += len;
  }
  return begin < end ? std::string(text.substr(begin, end - begin)) : std::string();
}

std::string collapse_whitespace(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool in_space = false;
  for (size_t i = 0; i < text.size();) {
    size_t len = 0;
    const char32_t c = code_point_at(text, i, len);
    if (len == 0) len = 1;
    if (is_regex_space(c)) {
      if (!in_space) out += ' ';
      in_space = true;
    } else {
      out += text.substr(i, len);
      in_space = false;
    }
    i += len;
  }
  return strip_python_space(out);
}

std::string clean_prompt(std::string_view text) {
  check_utf8(text, "the prompt");
  return collapse_whitespace(strip_python_space(html_unescape(html_unescape(text))));
}

}  // namespace fisdit::wan
