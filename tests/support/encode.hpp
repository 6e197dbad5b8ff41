#pragma once

// A request as the codec writes it, for tests that look at or alter the bytes.

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/codec.hpp"

namespace ferry::test {

inline std::vector<std::byte> encode_req(std::uint64_t id, const protocol::request& body) {
  std::vector<std::byte> out(protocol::max_datagram);
  auto n = codec::encode_request(out, id, body);
  REQUIRE(n);
  out.resize(*n);
  return out;
}

}  // namespace ferry::test
