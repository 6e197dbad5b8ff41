#include "client/terminal_text.hpp"

#include <fmt/format.h>

#include <cstdint>

namespace ferry::client {

namespace {

// Length of the valid UTF-8 sequence at the start of `s` (shortest form, no surrogates), or 0.
std::size_t utf8_length(std::string_view s) {
  const auto b = [&](std::size_t i) { return static_cast<std::uint8_t>(s[i]); };
  const auto c0 = b(0);
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if (c0 < 0x80) return 1;
  if (c0 >= 0xc2 && c0 <= 0xdf) n = 2, cp = c0 & 0x1fu;
  else if (c0 >= 0xe0 && c0 <= 0xef) n = 3, cp = c0 & 0x0fu;
  else if (c0 >= 0xf0 && c0 <= 0xf4) n = 4, cp = c0 & 0x07u;
  else return 0;
  if (s.size() < n) return 0;
  for (std::size_t i = 1; i < n; ++i) {
    if ((b(i) & 0xc0) != 0x80) return 0;
    cp = cp << 6 | (b(i) & 0x3fu);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  // C1 controls (U+0080..U+009F) act like ESC sequences on some terminals.
  if (cp >= 0x80 && cp <= 0x9f) return 0;
  return n;
}

bool is_control(unsigned char c) { return c < 0x20 || c == 0x7f; }

bool is_shell_special(char c) {
  static constexpr std::string_view special = " \t!\"$&'()*;<>?[\\]^`{|}";
  return special.find(c) != std::string_view::npos;
}

std::string escape_byte(unsigned char c) {
  switch (c) {
    case '\a': return "\\a";
    case '\b': return "\\b";
    case '\t': return "\\t";
    case '\n': return "\\n";
    case '\v': return "\\v";
    case '\f': return "\\f";
    case '\r': return "\\r";
    default: return fmt::format("\\{:03o}", c);
  }
}

}  // namespace

std::string quote_for_terminal(std::string_view name) {
  bool special = !name.empty() && (name.front() == '#' || name.front() == '~');
  bool unprintable = false;
  for (std::size_t i = 0; i < name.size();) {
    const auto c = static_cast<unsigned char>(name[i]);
    const auto n = utf8_length(name.substr(i));
    if (n == 0 || is_control(c)) {
      unprintable = true;
      ++i;
      continue;
    }
    if (n == 1 && is_shell_special(name[i])) special = true;
    i += n;
  }
  if (!special && !unprintable) return std::string{name};
  if (!unprintable) {
    // As GNU ls: double quotes when that avoids escaping a single quote, and is safe.
    if (name.find('\'') != std::string_view::npos &&
        name.find_first_of("\"$`\\!") == std::string_view::npos)
      return fmt::format("\"{}\"", name);
  }
  // Printable runs in single quotes ('\'' for a quote), the rest as $'...' escapes.
  std::string out;
  bool in_quotes = false, in_escape = false;
  for (std::size_t i = 0; i < name.size();) {
    const auto c = static_cast<unsigned char>(name[i]);
    const auto n = utf8_length(name.substr(i));
    if (n == 0 || is_control(c)) {
      if (in_quotes) out += '\'', in_quotes = false;
      if (!in_escape) out += "$'", in_escape = true;
      out += escape_byte(c);
      ++i;
      continue;
    }
    if (in_escape) out += '\'', in_escape = false;
    if (name[i] == '\'') {
      if (in_quotes) out += '\'', in_quotes = false;
      out += "\\'";
      ++i;
      continue;
    }
    if (!in_quotes) out += '\'', in_quotes = true;
    out.append(name.substr(i, n));
    i += n;
  }
  if (in_quotes || in_escape) out += '\'';
  return out;
}

}  // namespace ferry::client
