#pragma once

#include <fmt/format.h>

#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

namespace ferry::log {

enum class level { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

// plain: "ferry: error: message", for people at a terminal (the client).
// key_value: "ts=... level=info msg=\"...\" key=value", one event a line, for logs (the server).
enum class style { plain, key_value };

void set_level(level l) noexcept;
[[nodiscard]] level current_level() noexcept;
[[nodiscard]] bool parse_level(std::string_view text, level& out) noexcept;
void set_style(style s) noexcept;
// The program name that prefixes plain lines, e.g. "ferry".
void set_program(std::string_view name) noexcept;

// One key=value pair of an event.
struct field {
  std::string_view key;
  std::string value;
};

// Writes one line if `l` passes the level filter, or with `force` (output that was asked for,
// such as counters on SIGUSR1) at any level but off. Never throws; lines never interleave.
void write(level l, std::string_view message, std::initializer_list<field> fields = {},
           bool force = false) noexcept;
void write(level l, std::string_view message, std::span<const field> fields,
           bool force = false) noexcept;

// The line write() would print in the key_value style, with its newline, whatever the style
// and level: for logs kept in a file of their own.
[[nodiscard]] std::string key_value_line(level l, std::string_view message,
                                         std::span<const field> fields);

// Quotes a value for key=value output when it needs it: "a b" stays readable, a quote or a
// control byte is escaped, so one event is always one line.
[[nodiscard]] std::string quote(std::string_view value);

template <typename... Args>
void at(level l, fmt::format_string<Args...> f, Args&&... args) noexcept {
  if (l < current_level()) return;
  try {
    write(l, fmt::format(f, std::forward<Args>(args)...));
  } catch (...) {
    // Logging must never take the server down; an unformattable line is dropped.
  }
}

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... a) noexcept {
  at(level::debug, f, std::forward<Args>(a)...);
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... a) noexcept {
  at(level::info, f, std::forward<Args>(a)...);
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... a) noexcept {
  at(level::warn, f, std::forward<Args>(a)...);
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... a) noexcept {
  at(level::error, f, std::forward<Args>(a)...);
}

}  // namespace ferry::log
