#include "common/log.hpp"

#include <atomic>
#include <cstdio>
#include <string>

namespace ferry::log {
namespace {
std::atomic<level> g_level{level::info};
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
}  // namespace

void set_level(level l) noexcept { g_level.store(l, std::memory_order_relaxed); }
level current_level() noexcept { return g_level.load(std::memory_order_relaxed); }
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

void write(level l, std::string_view message) noexcept {
  // One fprintf per line, so lines from different threads never interleave.
  std::fprintf(stderr, "%s: %.*s: %.*s\n", g_program.c_str(), static_cast<int>(name_of(l).size()),
               name_of(l).data(), static_cast<int>(message.size()), message.data());
}

}  // namespace ferry::log
