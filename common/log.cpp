#include "common/log.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

namespace ferry::log {
namespace {
std::atomic<level> g_level{level::info};
std::atomic<style> g_style{style::plain};
std::string g_program = "ferry";

std::string_view name_of(level l) {
  switch (l) {
    case level::debug:
      return "debug";
    case level::info:
      return "info";
    case level::warn:
      return "warn";
    case level::error:
      return "error";
    case level::off:
      return "off";
  }
  return "?";
}

std::string timestamp() {
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch());
  const std::time_t secs = static_cast<std::time_t>(ms.count() / 1000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", buf, ms.count() % 1000);
}
}  // namespace

void set_level(level l) noexcept { g_level.store(l, std::memory_order_relaxed); }
level current_level() noexcept { return g_level.load(std::memory_order_relaxed); }
void set_style(style s) noexcept { g_style.store(s, std::memory_order_relaxed); }
void set_program(std::string_view name) noexcept {
  try {
    g_program = name;
  } catch (...) {
  }
}

bool parse_level(std::string_view text, level& out) noexcept {
  for (auto l : {level::debug, level::info, level::warn, level::error, level::off}) {
    if (text == name_of(l)) {
      out = l;
      return true;
    }
  }
  return false;
}

std::string quote(std::string_view value) {
  bool plain = !value.empty();
  for (const char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f) plain = false;
  }
  if (plain) return std::string{value};
  std::string out = "\"";
  for (const char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < ' ' || c == 0x7f)
          out += fmt::format("\\x{:02x}", c);
        else
          out += static_cast<char>(c);
    }
  }
  out += '"';
  return out;
}

std::string key_value_line(level l, std::string_view message, std::span<const field> fields) {
  auto line = fmt::format("ts={} level={} msg={}", timestamp(), name_of(l), quote(message));
  for (const auto& f : fields) line += fmt::format(" {}={}", f.key, quote(f.value));
  line += '\n';
  return line;
}

void write(level l, std::string_view message, std::initializer_list<field> fields,
           bool force) noexcept {
  write(l, message, std::span<const field>{fields.begin(), fields.size()}, force);
}

void write(level l, std::string_view message, std::span<const field> fields, bool force) noexcept {
  // "off" silences everything; `force` only lifts the level filter.
  if (current_level() == level::off || (!force && l < current_level())) return;
  try {
    std::string line;
    if (g_style.load(std::memory_order_relaxed) == style::key_value) {
      line = key_value_line(l, message, fields);
    } else {
      line = fmt::format("{}: {}: {}", g_program, name_of(l), message);
      for (const auto& f : fields) line += fmt::format(" {}={}", f.key, quote(f.value));
      line += '\n';
    }
    // One write per line, so lines from different threads never interleave.
    std::fwrite(line.data(), 1, line.size(), stderr);
  } catch (...) {
    // Out of memory while logging: drop the line rather than the process.
  }
}

}  // namespace ferry::log
