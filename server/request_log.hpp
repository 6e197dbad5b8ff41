#pragma once

#include <cstdint>

#include "common/address.hpp"
#include "common/protocol.hpp"

namespace ferry::server {

// A debug line for a validated request: its client, id, type and what it asks for. For
// debugging only: a busy server takes a hundred thousand requests a second.
void log_request(const endpoint& peer, std::uint64_t id, const protocol::request& req) noexcept;
// A debug line for a request refused with `code`.
void log_refusal(const endpoint& peer, std::uint64_t id, protocol::errc code) noexcept;

}  // namespace ferry::server
