#include "client/progress.hpp"

#include <fmt/format.h>

#include <cstdio>

namespace ferry::client {

std::string human_bytes(double bytes) {
  static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} {}", bytes, units[u])
                : fmt::format("{:.1f} {}", bytes, units[u]);
}

progress_bar::progress_bar(std::string label, std::uint64_t already_done)
    : label_{std::move(label)},
      start_done_{already_done},
      start_{std::chrono::steady_clock::now()} {}

void progress_bar::update(std::uint64_t done, std::uint64_t total) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate =
      elapsed > 0 ? static_cast<double>(done - std::min(done, start_done_)) / elapsed : 0;
  const double frac = total == 0 ? 1.0 : static_cast<double>(done) / static_cast<double>(total);
  constexpr int width = 24;
  const int filled = static_cast<int>(frac * width);
  std::string bar(static_cast<std::size_t>(filled), '=');
  if (filled < width) bar += '>';
  bar.resize(width, ' ');
  std::string eta = "--:--";
  if (rate > 0 && done < total) {
    const auto secs = static_cast<long>(static_cast<double>(total - done) / rate);
    eta = fmt::format("{}:{:02}", secs / 60, secs % 60);
  } else if (done >= total) {
    eta = "0:00";
  }
  const auto line = fmt::format("\r{} {:3.0f}% [{}] {} / {}  {}/s  ETA {}\033[K", label_,
                                frac * 100, bar, human_bytes(static_cast<double>(done)),
                                human_bytes(static_cast<double>(total)), human_bytes(rate), eta);
  std::fputs(line.c_str(), stderr);
  std::fflush(stderr);
  drawn_ = true;
}

void progress_bar::finish() {
  if (drawn_) std::fputs("\n", stderr);
  drawn_ = false;
}

void progress_bar::clear() {
  if (drawn_) std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
  drawn_ = false;
}

}  // namespace ferry::client
