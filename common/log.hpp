#pragma once

#include <fmt/format.h>

#include <string_view>

namespace ferry::log {

enum class level { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

void set_level(level l) noexcept;
[[nodiscard]] level current_level() noexcept;
[[nodiscard]] bool parse_level(std::string_view text, level& out) noexcept;
// The program name that prefixes every line, e.g. "ferryd".
void set_program(std::string_view name) noexcept;

void write(level l, std::string_view message) noexcept;

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
