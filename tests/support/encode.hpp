#pragma once

// A request as the codec writes it, and a string as bytes, for tests that look at or alter them.

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
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

inline std::vector<std::byte> as_bytes(const std::string& s) {
  std::vector<std::byte> b(s.size());
  if (!s.empty()) std::memcpy(b.data(), s.data(), s.size());
  return b;
}

}  // namespace ferry::test
