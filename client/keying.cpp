#include "client/keying.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "client/errors.hpp"
#include "common/unique_fd.hpp"

namespace ferry::client {

namespace {
key_use& the_key() noexcept {
  static key_use k;
  return k;
}
}  // namespace

void use_key(key_use k) { the_key() = std::move(k); }

const key_use& process_key() noexcept { return the_key(); }

void use_key_file(std::string path, bool encrypt) {
  if (path.empty()) {
    const char* env = std::getenv("FERRY_KEY_FILE");
    if (env != nullptr) path = env;
  }
  if (path.empty()) {
    if (encrypt) throw failure{exit_code::usage, "--encrypt needs a key: --key-file FILE"};
    use_key({});
    return;
  }
  try {
    use_key({envelope::key::load(path), encrypt ? envelope::mode::aead : envelope::mode::mac});
  } catch (const std::runtime_error& e) {
    throw failure{exit_code::usage, e.what()};
  }
}

void write_new_key(const std::string& path) {
  unique_fd fd{::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600)};
  if (!fd)
    throw failure{errno == EEXIST ? exit_code::usage : exit_code::local_io,
                  fmt::format("{}: {}{}", path, std::strerror(errno),
                              errno == EEXIST ? " (ferry keygen never replaces a key)" : "")};
  const auto text = envelope::new_key_text();
  errno = 0;
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
      ::fsync(fd.get()) != 0) {
    const int err = errno != 0 ? errno : EIO;  // a short write sets none
    (void)::unlink(path.c_str());
    throw failure{exit_code::local_io, fmt::format("{}: {}", path, std::strerror(err))};
  }
}

}  // namespace ferry::client
