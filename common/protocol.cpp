#include "common/protocol.hpp"

namespace ferry::protocol {

bool valid_entry_name(std::string_view name) noexcept {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of(std::string_view{"/\0", 2}) == std::string_view::npos;
}

std::string_view to_string(errc e) noexcept {
  switch (e) {
    case errc::ok:
      return "ok";
    case errc::malformed:
      return "malformed datagram";
    case errc::unsupported_version:
      return "unsupported protocol version";
    case errc::bad_path:
      return "invalid path";
    case errc::outside_root:
      return "path leaves the served directory";
    case errc::not_found:
      return "no such file or directory";
    case errc::not_regular:
      return "not a regular file";
    case errc::not_directory:
      return "not a directory";
    case errc::permission_denied:
      return "permission denied";
    case errc::io_error:
      return "I/O error on the server";
    case errc::busy:
      return "server busy";
    case errc::symlink_loop:
      return "too many levels of symbolic links";
    case errc::bad_request:
      return "bad request";
    case errc::corrupt:
      return "datagram failed its checksum";
    case errc::authentication_required:
      return "authentication required";
  }
  return "unknown error";
}

std::string_view code_name(errc e) noexcept {
  static constexpr std::string_view names[] = {
      "ok",          "malformed",     "unsupported_version",
      "bad_path",    "outside_root",  "not_found",
      "not_regular", "not_directory", "permission_denied",
      "io_error",    "busy",          "symlink_loop",
      "bad_request", "corrupt",       "authentication_required"};
  const auto i = static_cast<std::size_t>(e);
  return i < std::size(names) ? names[i] : "unknown";
}

std::string_view to_string(msg_type t) noexcept {
  switch (t) {
    case msg_type::list_request:
      return "LIST";
    case msg_type::stat_request:
      return "STAT";
    case msg_type::get_request:
      return "GET";
    case msg_type::get_run_request:
      return "GET-RUN";
    case msg_type::list_reply:
      return "LIST-REPLY";
    case msg_type::stat_reply:
      return "STAT-REPLY";
    case msg_type::data_reply:
      return "DATA";
    case msg_type::error_reply:
      return "ERROR";
    case msg_type::token_reply:
      return "TOKEN";
  }
  return "unknown";
}

std::string_view to_string(entry_type t) noexcept {
  switch (t) {
    case entry_type::file:
      return "file";
    case entry_type::dir:
      return "dir";
    case entry_type::symlink:
      return "symlink";
    case entry_type::other:
      return "other";
  }
  return "other";
}

}  // namespace ferry::protocol
