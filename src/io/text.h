#pragma once
// Helpers for quoting untrusted names (tensor names, JSON keys) in one-line error messages.
#include <cstdio>
#include <string>
#include <string_view>

namespace fisdit {

// `s` with control bytes escaped as \xNN, cut to `max_len` bytes with "..." appended.
inline std::string printable(std::string_view s, size_t max_len = 200) {
  std::string out;
  const bool cut = s.size() > max_len;
  if (cut) s = s.substr(0, max_len);
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (cut) out += "...";
  return out;
}

// 'name', escaped as by printable().
inline std::string squoted(std::string_view s) {
  std::string out(1, '\'');
  out += printable(s);
  out += '\'';
  return out;
}

}  // namespace fisdit
