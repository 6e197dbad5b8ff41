#include "client/errors.hpp"

namespace ferry::client {

exit_code exit_code_for(protocol::errc e) noexcept {
  using protocol::errc;
  switch (e) {
    case errc::ok:
      return exit_code::ok;
    case errc::busy:
      return exit_code::network;
    case errc::malformed:
    case errc::bad_request:
      return exit_code::internal;
    default:
      return exit_code::refused;
  }
}

}  // namespace ferry::client
