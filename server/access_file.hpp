#pragma once

#include <uv.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "common/log.hpp"
#include "common/unique_fd.hpp"
#include "server/access_log.hpp"
#include "server/stats.hpp"

namespace ferry::server {

// The access log's lines appended to a file of their own (ferryd --access-log FILE), in the
// key_value style of ferryd's log. They are written off the loop, through libuv's thread pool,
// so that a slow disk delays the log rather than the loop; at most `max_pending` bytes wait,
// and lines beyond are dropped and counted. One write is under way at a time per worker, so a
// stalled disk holds at most one of libuv's pool threads per worker. The file is opened with
// O_APPEND, so the workers of one process, each with its own access_file, append whole lines to it
// side by side.
class access_file final : public access_sink {
 public:
  // Bytes of lines held at most (per worker), and the amount that starts a write before the
  // once-a-second flush.
  static constexpr std::size_t max_pending = 1u << 20;
  static constexpr std::size_t flush_at = 64u << 10;

  // Throws std::runtime_error, with a message for the user, if the file cannot be opened.
  access_file(uv_loop_t* loop, const std::string& path, stats& counters);
  // Writes what still waits, on the calling thread: the loop must have ended, with no write
  // under way.
  ~access_file();
  access_file(const access_file&) = delete;
  access_file& operator=(const access_file&) = delete;

  void write(std::span<const log::field> fields) noexcept override;
  // Starts writing what waits, unless a write is already under way.
  void flush() noexcept override;

 private:
  static void on_written(uv_fs_t* req) noexcept;
  // Counts the lines of the write that failed as dropped.
  void drop_writing() noexcept;

  uv_loop_t* loop_;  // unowned
  unique_fd fd_;
  stats& stats_;  // unowned
  std::string pending_;
  std::string writing_;  // the bytes of the write under way
  uv_fs_t req_{};
  bool in_flight_ = false;
};

// The sink ferryd's settings ask for: the file `path` if one is named, else the log if it
// shows info; null if neither. Throws as access_file does.
[[nodiscard]] std::unique_ptr<access_sink> make_access_sink(uv_loop_t* loop,
                                                            const std::string& path,
                                                            stats& counters);

}  // namespace ferry::server
