#pragma once

#include <string>
#include <string_view>

namespace ferry::client {

// A name as GNU ls shows it on a terminal (its default "shell-escape" quoting): unchanged if it
// holds nothing a shell or the terminal would take specially, in single quotes if it holds
// spaces or shell metacharacters, and with control characters and bytes that are not UTF-8
// written as $'\n' or $'\033' sequences, so that a name a server sends can neither move the
// cursor, retitle the window nor clear the screen, and can be pasted back into a shell.
[[nodiscard]] std::string quote_for_terminal(std::string_view name);

}  // namespace ferry::client
