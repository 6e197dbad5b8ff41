#pragma once

#include "common/address.hpp"
#include "common/unique_fd.hpp"
#include "server/config.hpp"

namespace ferry::server {

// A non-blocking UDP socket bound as `cfg` says (address, port, port sharing), with UDP GRO on,
// IP fragmentation off and the socket buffers cfg.socket_buffer asks for. Throws on any setup
// error, with a message for the user.
[[nodiscard]] unique_fd open_server_socket(const config& cfg);

// The address and port `fd` is bound to, or an empty endpoint.
[[nodiscard]] endpoint bound_endpoint(int fd) noexcept;

}  // namespace ferry::server
