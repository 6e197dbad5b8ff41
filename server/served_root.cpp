#include "server/served_root.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "common/log.hpp"

namespace ferry::server {

served_root::served_root(std::string path) : path_{std::move(path)} {
  const int fd = ::open(path_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    throw std::runtime_error{fmt::format("cannot serve '{}': {}", path_, std::strerror(errno))};
  fd_.reset(fd);
}

void served_root::check() noexcept {
  // ferryd serves the directory it opened, not its name: once that directory is deleted, every
  // request is refused until a restart. Clients see not_found; the operator is told once.
  struct stat st {};
  if (gone_ || ::fstat(fd_.get(), &st) != 0 || st.st_nlink != 0) return;
  gone_ = true;
  log::write(log::level::error,
             "the served directory was deleted; restart ferryd to serve it again",
             {{"root", path_}}, true);
}

void served_root::refused(protocol::errc code, std::uint64_t now_ms) noexcept {
  // A client that may not read the root itself is worth one line a minute, not one a request.
  if (code != protocol::errc::permission_denied ||
      (refused_ms_ != 0 && now_ms - refused_ms_ < 60'000))
    return;
  refused_ms_ = now_ms;
  log::write(log::level::warn, "the served directory cannot be read by ferryd's user",
             {{"root", path_}}, true);
}

}  // namespace ferry::server
