// The pre-shared key's envelope: sealing and opening, what a forger can and cannot do, and the
// key file.

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>

#include "common/envelope.hpp"
#include "support/codec_wire.hpp"
#include "support/keys.hpp"

using namespace ferry;
using namespace ferry::test;
using envelope::mode;
using envelope::refusal;

namespace {

// A data reply of `n` payload bytes, as the server writes it before sealing.
bytes data_datagram(std::size_t n) {
  bytes payload(n);
  for (std::size_t i = 0; i < n; ++i) payload[i] = std::byte(i * 7 + 1);
  proto::file_version v{1, 2, n, 3, 4};
  return encode_rep(42, make_data(0, true, v, payload));
}

// `plain` sealed in mode `m`, with room for the trailer.
bytes sealed(envelope::sealer& s, const bytes& plain, mode m) {
  bytes out = plain;
  out.resize(plain.size() + envelope::trailer_size(m));
  out.resize(s.seal(out, plain.size(), m));
  return out;
}

// A directory of its own, removed at the end.
struct scratch_dir {
  scratch_dir() {
    std::string name = (std::filesystem::temp_directory_path() / "ferry-key.XXXXXX").string();
    REQUIRE(::mkdtemp(name.data()) != nullptr);
    path_ = name;
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

std::string write_key_file(const scratch_dir& dir, const std::string& text, mode_t perms) {
  const auto path = dir.path() / "key";
  std::remove(path.c_str());
  std::ofstream{path} << text;
  REQUIRE(::chmod(path.c_str(), perms) == 0);
  return path.string();
}

}  // namespace

TEST_CASE("a sealed datagram opens to the datagram that was sealed, in either mode") {
  envelope::sealer s{key_of(1)};
  const auto plain = data_datagram(1390);
  for (auto m : {mode::mac, mode::aead}) {
    CAPTURE(envelope::to_string(m));
    auto wire = sealed(s, plain, m);
    CHECK(wire.size() == plain.size() + envelope::trailer_size(m));
    CHECK(envelope::mode_of(wire) == m);
    auto o = s.open(wire);
    REQUIRE(o.why == refusal::none);
    CHECK(o.sealed_as == m);
    CHECK(bytes{o.plain.begin(), o.plain.end()} == plain);
    // The codec reads it as if it had never been sealed.
    auto decoded = ferry::codec::decode_reply(o.plain);
    REQUIRE(decoded);
    CHECK(decoded->hdr.request_id == 42);
  }
}

TEST_CASE("encryption hides the body, and no two datagrams share a nonce") {
  envelope::sealer s{key_of(1)};
  const auto plain = data_datagram(600);
  auto a = sealed(s, plain, mode::aead);
  auto b = sealed(s, plain, mode::aead);
  // The header stays readable; the rest differs from the plain bytes and between two seals.
  CHECK(std::equal(a.begin(), a.begin() + 6, plain.begin()));
  CHECK(!std::equal(a.begin() + 16, a.begin() + 600, plain.begin() + 16));
  CHECK(a != b);
  // Two sealers of one key draw different nonces from their first datagram on.
  envelope::sealer t{key_of(1)};
  auto c = sealed(t, plain, mode::aead);
  CHECK(!std::equal(a.end() - envelope::max_trailer, a.end() - envelope::tag_size,
                    c.end() - envelope::max_trailer));
  // A MAC only appends: the datagram itself is readable on the wire.
  auto m = sealed(s, plain, mode::mac);
  CHECK(std::equal(m.begin() + 8, m.begin() + static_cast<std::ptrdiff_t>(plain.size()),
                   plain.begin() + 8));
}

TEST_CASE("any altered byte, another key or a cut trailer is refused") {
  envelope::sealer s{key_of(1)};
  envelope::sealer other{key_of(2)};
  const auto plain = data_datagram(300);
  for (auto m : {mode::mac, mode::aead}) {
    CAPTURE(envelope::to_string(m));
    const auto wire = sealed(s, plain, m);
    for (std::size_t i = 0; i < wire.size(); ++i) {
      auto bad = wire;
      bad[i] ^= std::byte{0x01};
      CHECK_MESSAGE(s.open(bad).why != refusal::none, "byte ", i);
    }
    // The seal flags themselves: another mode, both, or none is never believed.
    for (auto flip : {std::byte{0x02}, std::byte{0x04}, std::byte{0x06}}) {
      auto bad = wire;
      bad[7] ^= flip;
      CHECK(s.open(bad).why != refusal::none);
    }
    auto copy = wire;
    CHECK(other.open(copy).why == refusal::forged);
    copy = wire;
    copy.resize(envelope::trailer_size(m) + 10);
    CHECK(s.open(copy).why == refusal::too_short);
  }
  auto untouched = plain;
  CHECK(s.open(untouched).why == refusal::plain);
}

TEST_CASE("a block altered with its checksum made to match is still refused") {
  // The checksum is no MAC: an on-path forger can recompute it; the tag it cannot.
  envelope::sealer s{key_of(1)};
  const auto plain = data_datagram(512);
  auto wire = sealed(s, plain, mode::mac);
  const auto trailer = static_cast<std::ptrdiff_t>(envelope::trailer_size(mode::mac));
  bytes forged{wire.begin(), wire.end() - trailer};
  forged[forged.size() - 1] ^= std::byte{0xff};  // the last payload byte
  // Cleared flags, so the checksum is what an encoder would write; then the flag back on.
  forged[7] &= std::byte{0xf9};
  REQUIRE(reseal(forged));
  REQUIRE(ferry::codec::decode_reply(forged));  // a block the codec alone would take
  forged[7] |= std::byte{envelope::flag_mac};
  forged.insert(forged.end(), wire.end() - trailer, wire.end());
  CHECK(s.open(forged).why == refusal::forged);
}

TEST_CASE("the token flag survives sealing; the seal flags do not reach the codec") {
  envelope::sealer s{key_of(3)};
  proto::address_token token{};
  token.fill(std::byte{9});
  bytes plain(proto::max_request_size);
  auto n = ferry::codec::encode_request(plain, 5, proto::stat_request{"a/b"}, &token);
  REQUIRE(n);
  plain.resize(*n);
  for (auto m : {mode::mac, mode::aead}) {
    auto wire = sealed(s, plain, m);
    auto o = s.open(wire);
    REQUIRE(o.why == refusal::none);
    auto decoded = ferry::codec::decode_request(o.plain);
    REQUIRE(decoded);
    CHECK(decoded->hdr.flags == proto::flag_token);
    CHECK(decoded->hdr.token == token);
  }
}

TEST_CASE("key files: 64 hex digits, kept from others") {
  scratch_dir dir;
  const std::string hex(64, 'a');
  CHECK(envelope::key::load(write_key_file(dir, hex + "\n", 0600)));
  CHECK(envelope::key::load(write_key_file(dir, "  " + hex + " \n\n", 0640)));
  CHECK(envelope::key::load(write_key_file(dir, envelope::new_key_text(), 0600)));
  // Written out rather than built with + or insert(): GCC 12 takes those for out-of-bounds
  // copies (-Warray-bounds, -Wstringop-overflow) once the test headers are precompiled.
  const std::string bad_texts[] = {
      std::string(63, 'a'), std::string(65, 'a'),
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaag",   // not hex
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",  // a blank inside
      std::string{}};
  for (const auto& bad : bad_texts) {
    CAPTURE(bad);
    CHECK_THROWS_AS(envelope::key::load(write_key_file(dir, bad, 0600)), std::runtime_error);
  }
  CHECK_THROWS_WITH_AS(envelope::key::load(write_key_file(dir, hex, 0644)),
                       doctest::Contains("others may read or write it"), std::runtime_error);
  CHECK_THROWS_AS(envelope::key::load((dir.path() / "none").string()), std::runtime_error);
  // Two keys from the same digits seal alike; new keys differ.
  CHECK(envelope::new_key_text() != envelope::new_key_text());
  auto k1 = envelope::key::load(write_key_file(dir, hex, 0600));
  auto k2 = envelope::key::load(write_key_file(dir, hex, 0600));
  envelope::sealer s1{k1}, s2{k2};
  auto wire = sealed(s1, data_datagram(100), mode::mac);
  CHECK(s2.open(wire).why == refusal::none);
}
