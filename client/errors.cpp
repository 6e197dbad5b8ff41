#include "client/errors.hpp"

#include <fmt/format.h>

#include "client/keying.hpp"

#include <string>
#include <string_view>

namespace ferry::client {

exit_code exit_code_for(protocol::errc e) noexcept {
  using protocol::errc;
  switch (e) {
    case errc::ok:
      return exit_code::ok;
    case errc::busy:
      return exit_code::network;
    case errc::authentication_required:
      return exit_code::auth;
    case errc::malformed:
    case errc::bad_request:
      return exit_code::internal;
    default:
      return exit_code::refused;
  }
}

namespace {
// Text from the server, with every byte but printable ASCII shown as '?': it cannot move the
// cursor, retitle the window or clear the screen.
std::string printable(std::string_view text) {
  std::string out{text};
  for (auto& c : out)
    if (c < 0x20 || c > 0x7e) c = '?';
  return out;
}

std::string_view hint_for(protocol::errc e) noexcept {
  using protocol::errc;
  switch (e) {
    case errc::not_found:
      return " ('ferry ls ADDR DIR' shows what is there)";
    case errc::outside_root:
      return " (paths are relative to the server's --root; '..', absolute paths and symlinks "
             "that leave it are refused)";
    case errc::not_regular:
      return " (only regular files can be fetched; 'ferry ls' lists a directory)";
    case errc::not_directory:
      return " ('ferry stat' shows what it is)";
    case errc::permission_denied:
      return " (the server's user may not read it)";
    case errc::symlink_loop:
      return " (a symbolic link on the server points back at itself)";
    case errc::busy:
      return " (the server is overloaded; try again later)";
    case errc::authentication_required:
      return " (the same key file must be given to ferry and ferryd with --key-file)";
    case errc::unsupported_version:
      return " (the server speaks another version of the ferry protocol; 'ferry --version' and "
             "'ferryd --version' say which each speaks: run the same release at both ends)";
    default:
      return "";
  }
}
}  // namespace

void throw_refused(const std::string& path, const protocol::error_reply& e) {
  if (e.code != protocol::errc::authentication_required || e.message.empty())
    throw_refused(path, e.code);
  throw failure{exit_code::auth, fmt::format("{}: {}: {}", path.empty() ? "/" : path,
                                             protocol::to_string(e.code), printable(e.message))};
}

void throw_refused(const std::string& path, protocol::errc e) {
  throw failure{exit_code_for(e), fmt::format("{}: {}{}", path.empty() ? "/" : path,
                                              protocol::to_string(e), hint_for(e))};
}

failure no_answer(std::string_view who, double seconds, std::uint16_t port, bool only_busy,
                  std::string_view then) {
  const auto tail = then.empty() ? std::string{} : fmt::format("; {}", then);
  if (only_busy)
    return failure{exit_code::network,
                   fmt::format("{} answered only \"busy\" for {:g} s; it is overloaded, try again "
                               "later{}",
                               who, seconds, tail)};
  const auto port_text = port != 0 ? fmt::format("UDP port {}", port) : std::string{"the UDP port"};
  // A server with another key drops every request unanswered: nothing in one can be believed.
  const auto* key_text = process_key().key ? " does it have the same --key-file?" : "";
  return failure{exit_code::network,
                 fmt::format("no answer from {} for {:g} s (is ferryd running there? is {} "
                             "open?{}){}",
                             who, seconds, port_text, key_text, tail)};
}

}  // namespace ferry::client
