#include "server/access_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace ferry::server {

access_file::access_file(uv_loop_t* loop, const std::string& path, stats& counters)
    : loop_{loop}, stats_{counters} {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0)
    throw std::runtime_error{
        fmt::format("cannot open the access log '{}': {}", path, std::strerror(errno))};
  fd_.reset(fd);
  req_.data = this;
}

access_file::~access_file() {
  // The loop has ended, so no write is under way (a loop ends only when its requests have).
  assert(!in_flight_);
  pending_.insert(0, writing_);
  for (std::size_t at = 0; at < pending_.size();) {
    const auto n = ::write(fd_.get(), pending_.data() + at, pending_.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    at += static_cast<std::size_t>(n);
  }
}

void access_file::write(std::span<const log::field> fields) noexcept {
  try {
    auto line = log::key_value_line(log::level::info, "access", fields);
    if (pending_.size() + writing_.size() + line.size() > max_pending) {
      ++stats_.access_lines_dropped;
      return;
    }
    pending_ += line;
    if (pending_.size() >= flush_at) flush();
  } catch (...) {
    ++stats_.access_lines_dropped;
  }
}

void access_file::flush() noexcept {
  if (in_flight_ || pending_.empty()) return;
  writing_.swap(pending_);
  pending_.clear();
  const auto buf = uv_buf_init(writing_.data(), static_cast<unsigned>(writing_.size()));
  if (uv_fs_write(loop_, &req_, fd_.get(), &buf, 1, -1, on_written) == 0) {
    in_flight_ = true;
  } else {
    drop_writing();
  }
}

void access_file::drop_writing() noexcept {
  stats_.access_lines_dropped +=
      static_cast<std::uint64_t>(std::count(writing_.begin(), writing_.end(), '\n'));
  writing_.clear();
}

void access_file::on_written(uv_fs_t* req) noexcept {
  auto& self = *static_cast<access_file*>(req->data);
  const auto written = req->result;
  uv_fs_req_cleanup(req);
  self.in_flight_ = false;
  try {
    // A short write leaves the rest for the next flush, in front of what came since.
    if (written > 0 && static_cast<std::size_t>(written) < self.writing_.size())
      self.pending_.insert(0, self.writing_.substr(static_cast<std::size_t>(written)));
  } catch (...) {
    ++self.stats_.access_lines_dropped;
  }
  if (written < 0)
    self.stats_.access_lines_dropped +=
        static_cast<std::uint64_t>(std::count(self.writing_.begin(), self.writing_.end(), '\n'));
  self.writing_.clear();
}

std::unique_ptr<access_sink> make_access_sink(uv_loop_t* loop, const std::string& path,
                                              stats& counters) {
  if (!path.empty()) return std::make_unique<access_file>(loop, path, counters);
  if (log::current_level() <= log::level::info) return std::make_unique<access_to_log>();
  return nullptr;
}

}  // namespace ferry::server
