// Seeded random datagrams and mutations of valid encodings, with or without a valid checksum,
// never crash the decoders, and whatever decodes re-encodes to the same bytes.

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "support/codec_wire.hpp"

using namespace ferry::test;  // proto, bytes, errc, wire_builder, corpus and the codec's calls

namespace {

// Property of the fuzz tests: decoding never throws (decode_* are noexcept, so a throw would
// terminate the run), and whatever decodes re-encodes to the same bytes apart from the reserved
// flags, which the codec ignores (and, since the checksum covers them, the checksum), so nothing
// the encoder would refuse survives decoding.
struct fuzz_checker {
  std::size_t decoded = 0;
  std::size_t bad_reencode = 0;
  std::size_t malformed = 0;  // structural rejections, by either decoder
  std::size_t corrupt = 0;    // checksum rejections, by either decoder

  // Returns true if either decoder accepted `wire`.
  bool check(std::span<const std::byte> wire) {
    bool ok = false;
    if (auto r = decode_request(wire)) {
      ok = true;
      if (!reencodes_same(*r, wire)) ++bad_reencode;
    } else {
      count(r.error());
    }
    if (auto r = decode_reply(wire)) {
      ok = true;
      if (!reencodes_same(*r, wire)) ++bad_reencode;
    } else {
      count(r.error());
    }
    if (ok) ++decoded;
    return ok;
  }

 private:
  void count(errc e) {
    if (e == errc::malformed || e == errc::bad_request) ++malformed;
    if (e == errc::corrupt) ++corrupt;
  }
};

// Applies one to four random edits to `wire`: bit flips, overwritten bytes, truncation,
// extension, and small values in the body, where length tags, enums and bools live.
void mutate(bytes& wire, std::mt19937_64& rng) {
  auto byte_of = [&] { return std::byte(rng() & 0xff); };
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 5) {
      case 0:  // flip bits in one byte
        if (!wire.empty()) wire[rng() % wire.size()] ^= std::byte(1 + rng() % 255);
        break;
      case 1:  // overwrite one byte
        if (!wire.empty()) wire[rng() % wire.size()] = byte_of();
        break;
      case 2:  // truncate
        wire.resize(wire.empty() ? 0 : rng() % wire.size());
        break;
      case 3:  // extend
        for (auto n = rng() % 16 + 1; n > 0; --n) wire.push_back(byte_of());
        break;
      default:  // a small value in the body
        if (wire.size() > proto::header_size + 1)
          wire[proto::header_size + 1 + rng() % (wire.size() - proto::header_size - 1)] =
              std::byte(rng() % 4);
        break;
    }
  }
}

std::vector<const bytes*> seeds_of(const corpus& c) {
  std::vector<const bytes*> seeds;
  for (const auto& w : c.requests) seeds.push_back(&w);
  for (const auto& w : c.replies) seeds.push_back(&w);
  return seeds;
}

}  // namespace

TEST_SUITE_BEGIN("codec");

TEST_CASE("200,000 seeded random datagrams never crash the decoders") {
  std::mt19937_64 rng{0x5eed'f0e1'2024'0001ULL};
  const msg_type types[] = {msg_type::list_request, msg_type::stat_request, msg_type::get_request,
                            msg_type::list_reply,   msg_type::stat_reply,   msg_type::data_reply,
                            msg_type::error_reply};
  fuzz_checker fuzz;
  std::size_t sealed = 0;
  bytes wire;
  for (int i = 0; i < 200'000; ++i) {
    wire.resize(static_cast<std::size_t>(rng() % 2001));
    for (std::size_t k = 0; k < wire.size(); k += 8) {  // eight random bytes per draw
      auto word = rng();
      for (std::size_t j = k; j < std::min(k + 8, wire.size()); ++j, word >>= 8)
        wire[j] = std::byte(word & 0xff);
    }
    // Two in three get a valid header and endianness byte, so the body parsers are reached
    // rather than every datagram stopping at the magic check; half of those also get a valid
    // checksum, since random bytes almost never match one and the structural checks behind it
    // would otherwise go untested.
    if (i % 3 != 0 && wire.size() > proto::header_size) {
      for (std::size_t k = 0; k < proto::magic.size(); ++k) wire[k] = std::byte{proto::magic[k]};
      wire[4] = std::byte{proto::version};
      wire[5] = std::byte{static_cast<std::uint8_t>(types[rng() % std::size(types)])};
      wire[proto::header_size] = std::byte{1};
      if (i % 2 == 0 && reseal(wire)) ++sealed;
    }
    fuzz.check(wire);
  }
  CHECK(fuzz.bad_reencode == 0);
  CHECK(sealed > 50'000);
  CHECK(fuzz.corrupt > 0);
  CHECK(fuzz.malformed > 0);
}

TEST_CASE("50,000 seeded mutations of valid encodings never crash the decoders") {
  // Mutated and sent as they are: the checksum must catch every change, so a mutant that
  // decodes is one whose edits happened to leave every byte as it was.
  std::mt19937_64 rng{0x5eed'f0e1'2024'0002ULL};
  const corpus c;
  const auto seeds = seeds_of(c);
  fuzz_checker fuzz;
  std::size_t changed = 0;
  std::size_t changed_but_decoded = 0;
  for (int i = 0; i < 50'000; ++i) {
    const bytes& seed = *seeds[rng() % seeds.size()];
    bytes wire = seed;
    mutate(wire, rng);
    const bool ok = fuzz.check(wire);
    if (wire != seed) {
      ++changed;
      if (ok) ++changed_but_decoded;
    }
  }
  CHECK(fuzz.bad_reencode == 0);
  CHECK(changed > 45'000);
  CHECK(changed_but_decoded == 0);
  CHECK(fuzz.corrupt > 0);
}

TEST_CASE("50,000 seeded mutations, resealed with a valid checksum, never crash the decoders") {
  // The same mutations, then the checksum recomputed as an encoder would, so the structural
  // decoder behind the checksum sees every mutant.
  std::mt19937_64 rng{0x5eed'f0e1'2024'0003ULL};
  const corpus c;
  const auto seeds = seeds_of(c);
  fuzz_checker fuzz, too_short;
  std::size_t sealed = 0;
  std::size_t changed_and_decoded = 0;
  for (int i = 0; i < 50'000; ++i) {
    const bytes& seed = *seeds[rng() % seeds.size()];
    bytes wire = seed;
    mutate(wire, rng);
    // A mutant too short to hold a checksum cannot be resealed; it is checked apart.
    const bool sealed_now = reseal(wire);
    if (sealed_now) ++sealed;
    if ((sealed_now ? fuzz : too_short).check(wire) && wire != seed) ++changed_and_decoded;
  }
  CHECK(too_short.bad_reencode == 0);
  CHECK(fuzz.bad_reencode == 0);
  CHECK(sealed > 35'000);
  // Every resealed mutant that fails, fails a structural check: nothing is reported corrupt.
  CHECK(fuzz.corrupt == 0);
  CHECK(fuzz.malformed > 0);
  // Some mutants (a changed request id or payload byte, say) must decode, or the re-encode
  // check above checked nothing.
  CHECK(changed_and_decoded > 1000);
}

TEST_SUITE_END();
