#pragma once

// Evidence that nothing outside the served root is read: a marker only the outside file holds,
// the code a reply carries, paths made printable for failure messages, and an inotify watch on
// the outside directory.

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/protocol.hpp"
#include "common/unique_fd.hpp"
#include "support/running_server.hpp"

namespace ferry::test {

// A string that no file but the one outside the root holds.
inline std::string make_marker() {
  std::random_device rd;
  return fmt::format("ferry-outside-marker-{:08x}{:08x}", rd(), rd());
}

inline bool holds(const std::vector<std::byte>& wire, std::string_view needle) {
  const std::string_view text{reinterpret_cast<const char*>(wire.data()), wire.size()};
  return text.find(needle) != std::string_view::npos;
}

// The code a reply carries: the error's, or errc::ok for any answer that is not an error.
inline protocol::errc code_of(const owned_reply& r) {
  if (const auto* e = std::get_if<protocol::error_reply>(&r.decoded.body)) return e->code;
  return protocol::errc::ok;
}

// The path with NUL and other control bytes made visible, for failure messages.
inline std::string shown(std::string_view path) {
  std::string out;
  for (const char c : path) {
    if (static_cast<unsigned char>(c) < 0x20)
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    else
      out += c;
  }
  return out.size() > 80 ? fmt::format("{}... ({} bytes)", out.substr(0, 80), path.size()) : out;
}

// Opens and reads of a directory and of anything directly in it, as inotify reports them
// (IN_OPEN, IN_ACCESS). O_PATH opens and stat(2) do not count, and neither does atime.
class open_watch {
 public:
  explicit open_watch(const std::filesystem::path& dir)
      : fd_{::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)} {
    REQUIRE(fd_);
    REQUIRE(::inotify_add_watch(fd_.get(), dir.c_str(), IN_OPEN | IN_ACCESS) >= 0);
  }

  // The names opened or read since the last call, "" for the directory itself.
  std::vector<std::string> drain() {
    std::vector<std::string> names;
    alignas(inotify_event) char buf[16384];
    for (;;) {
      const ssize_t n = ::read(fd_.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      for (ssize_t at = 0; at < n;) {
        inotify_event ev;
        std::memcpy(&ev, buf + at, sizeof ev);
        const char* name = buf + at + sizeof ev;
        names.emplace_back(ev.len > 0 ? std::string{name, ::strnlen(name, ev.len)} : "");
        at += static_cast<ssize_t>(sizeof ev + ev.len);
      }
    }
    return names;
  }

 private:
  unique_fd fd_;
};

// A request of the protocol's own grammar that ferry::codec refuses to encode: a path one byte
// over the 4096-byte limit. Built from a GET, STAT or LIST of a 4096-byte path by growing the

}  // namespace ferry::test
