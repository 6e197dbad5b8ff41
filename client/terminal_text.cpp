#include "client/terminal_text.hpp"

#include <fmt/format.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>

namespace ferry::client {

namespace {

// Length of the valid UTF-8 sequence at the start of `s` (shortest form, no surrogates), or 0.
std::size_t utf8_length(std::string_view s) {
  const auto b = [&](std::size_t i) { return static_cast<std::uint8_t>(s[i]); };
  const auto c0 = b(0);
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if (c0 < 0x80) return 1;
  if (c0 >= 0xc2 && c0 <= 0xdf)
    n = 2, cp = c0 & 0x1fu;
  else if (c0 >= 0xe0 && c0 <= 0xef)
    n = 3, cp = c0 & 0x0fu;
  else if (c0 >= 0xf0 && c0 <= 0xf4)
    n = 4, cp = c0 & 0x07u;
  else
    return 0;
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

// Characters that make GNU ls quote a name anywhere in it (gnulib's quotearg, shell style).
bool is_shell_special(char c) {
  static constexpr std::string_view special = " \t!\"$&'()*;<=>?[\\^`|";
  return special.find(c) != std::string_view::npos;
}

std::string escape_byte(unsigned char c) {
  switch (c) {
    case '\a':
      return "\\a";
    case '\b':
      return "\\b";
    case '\t':
      return "\\t";
    case '\n':
      return "\\n";
    case '\v':
      return "\\v";
    case '\f':
      return "\\f";
    case '\r':
      return "\\r";
    default:
      return fmt::format("\\{:03o}", c);
  }
}

}  // namespace

bool terminal_is_utf8() {
  // The terminal's character set as the locale variables name it, in their order of
  // precedence; ferry itself runs in the C locale and does not change it.
  for (const char* var : {"LC_ALL", "LC_CTYPE", "LANG"}) {
    const char* v = std::getenv(var);
    if (v == nullptr || *v == '\0') continue;
    std::string lower{v};
    for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return lower.find("utf-8") != std::string::npos || lower.find("utf8") != std::string::npos;
  }
  return false;
}

std::string quote_for_terminal(std::string_view name, bool utf8) {
  if (name.empty()) return "''";
  // How long the printable character at `i` is, or 0 if the byte there must be escaped.
  const auto printable = [&](std::size_t i) -> std::size_t {
    const auto c = static_cast<unsigned char>(name[i]);
    if (is_control(c)) return 0;
    if (c < 0x80) return 1;
    return utf8 ? utf8_length(name.substr(i)) : 0;
  };
  bool special = name.front() == '#' || name.front() == '~' || name == "{" || name == "}";
  bool unprintable = false, other_special = false;
  for (std::size_t i = 0; i < name.size();) {
    const auto n = printable(i);
    if (n == 0) {
      unprintable = true;
      ++i;
      continue;
    }
    if (n == 1 && is_shell_special(name[i])) {
      special = true;
      if (name[i] != '\'') other_special = true;
    }
    i += n;
  }
  if (!special && !unprintable) return std::string{name};
  // As GNU ls: a name whose only special character is a single quote goes in double quotes.
  if (!unprintable && !other_special && name.find('\'') != std::string_view::npos &&
      name.front() != '#' && name.front() != '~')
    return fmt::format("\"{}\"", name);
  // Single quotes from the start ('\'' for a quote in it), and what cannot be printed as
  // $'...' escapes between closed quotes: 'a'$'\n''b', ''$'\033''[2J'.
  std::string out = "'";
  bool in_quotes = true, in_escape = false;
  for (std::size_t i = 0; i < name.size();) {
    const auto n = printable(i);
    if (n == 0) {
      if (in_quotes) out += '\'', in_quotes = false;
      if (!in_escape) out += "$'", in_escape = true;
      out += escape_byte(static_cast<unsigned char>(name[i]));
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
