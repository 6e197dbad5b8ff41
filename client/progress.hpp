#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

namespace ferry::client {

// "1.5 MiB" style sizes.
[[nodiscard]] std::string human_bytes(double bytes);

// A one-line progress bar with bytes, rate and ETA, redrawn in place on a terminal.
class progress_bar {
 public:
  progress_bar(std::string label, std::uint64_t already_done);
  void update(std::uint64_t done, std::uint64_t total);
  // What the next update() shows before the bar.
  void set_label(std::string label) { label_ = std::move(label); }
  void finish();  // ends the line
  void clear();   // erases the line, so that other output can take it; the next update() redraws

 private:
  std::string label_;
  std::uint64_t start_done_;
  std::chrono::steady_clock::time_point start_;
  bool drawn_ = false;
};

}  // namespace ferry::client
