// The fetcher's output to a stream (get -o -): what has arrived in order is written out as it
// comes, and a transfer that would have to start over after that fails instead.

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "client/errors.hpp"
#include "client/fetch.hpp"

namespace ferry::client {

// $TMPDIR, or /tmp, as given: part_file says clearly if it is not there, where
// std::filesystem::temp_directory_path() would throw a bare "not a directory".
std::filesystem::path fetcher::stream_temp_dir() {
  const char* t = std::getenv("TMPDIR");
  return t != nullptr && *t != '\0' ? t : "/tmp";
}

void fetcher::restart_part(part_file& part, const protocol::file_version& version,
                           std::uint32_t block, bool data_bad) {
  // Whatever the reason, the digest of a new start covers only what is fetched again, not the
  // bytes already written out.
  if (opt_.stream_fd >= 0 && streamed_ > 0)
    throw failure{exit_code::integrity,
                  fmt::format("{}: {} after {} bytes of it were written to standard output, "
                              "which cannot be taken back; run the command again",
                              path_,
                              data_bad                    ? "the digest did not match"
                              : version != part.version() ? "the file changed on the server"
                                                          : "the transfer had to start over",
                              streamed_)};
  part.restart(version, block);
}

void fetcher::stream_out() {
  const auto started = clock::now();
  // A reader that pauses holds this up; that time is not the server's silence.
  struct credit {
    clock::time_point& progress;
    clock::time_point since;
    ~credit() {
      const auto spent = clock::now() - since;
      if (spent > std::chrono::milliseconds{10}) progress += spent;
    }
  } waited{last_progress_, started};
  const auto ready = part_->in_order_bytes();
  while (streamed_ < ready) {
    stream_buf_.resize(
        static_cast<std::size_t>(std::min<std::uint64_t>(ready - streamed_, 1 << 20)));
    part_->read(streamed_, stream_buf_);
    std::size_t at = 0;
    while (at < stream_buf_.size()) {
      const auto n = ::write(opt_.stream_fd, stream_buf_.data() + at, stream_buf_.size() - at);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        // Standard output may be non-blocking (a shell's choice): wait for room.
        pollfd p{opt_.stream_fd, POLLOUT, 0};
        (void)::poll(&p, 1, -1);
        continue;
      }
      if (n <= 0)
        throw failure{exit_code::local_io, fmt::format("cannot write to standard output: {}",
                                                       std::strerror(n < 0 ? errno : EIO))};
      at += static_cast<std::size_t>(n);
    }
    streamed_ += stream_buf_.size();
  }
  part_->discard_before(streamed_);
}

}  // namespace ferry::client
