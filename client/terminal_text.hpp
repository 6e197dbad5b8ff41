#pragma once

#include <string>
#include <string_view>

namespace ferry::client {

// Whether LC_ALL, LC_CTYPE or LANG (the first that is set) names UTF-8.
[[nodiscard]] bool terminal_is_utf8();

// A name as GNU ls shows it on a terminal (its default "shell-escape" quoting): unchanged if it
// holds nothing a shell or the terminal would take specially, in single quotes if it holds
// spaces or shell metacharacters, and with control characters and bytes that are not UTF-8
// written as $'\n' or $'\033' sequences, so that a name a server sends can neither move the
// cursor, retitle the window nor clear the screen, and can be pasted back into a shell.
// `utf8`: the terminal takes UTF-8, so valid multi-byte characters are shown as they are;
// otherwise every byte above 0x7f is escaped too (an 8-bit terminal reads 0x9b as CSI).
[[nodiscard]] std::string quote_for_terminal(std::string_view name, bool utf8);
[[nodiscard]] inline std::string quote_for_terminal(std::string_view name) {
  return quote_for_terminal(name, terminal_is_utf8());
}

}  // namespace ferry::client
