#pragma once
// UTF-8 code points, as the tokenizers and the prompt cleaning read and write them.
#include <cstddef>
#include <string>
#include <string_view>

namespace fisdit {

// Appends the UTF-8 bytes of code point `c` (at most U+10FFFF) to `out`.
void append_utf8(std::string& out, char32_t c);
// Length of the well-formed UTF-8 sequence at s[i] (i < s.size()) and, in `c`, its code point;
// 0 when it is malformed (overlong forms, surrogates, above U+10FFFF, cut short).
size_t decode_utf8(std::string_view s, size_t i, char32_t& c);
// Throws fisdit::Error "<what> is not valid UTF-8 (byte N)" unless `text` is well-formed UTF-8.
void check_utf8(std::string_view text, const std::string& what);

}  // namespace fisdit
