// Unit tests for the archives every message goes through: the bytes they write are the bytes
// cereal's PortableBinary archives write with the LittleEndian option, and reading checks
// every bound.

#include "common/wire_archive.hpp"

#include <doctest/doctest.h>
#include <cereal/archives/portable_binary.hpp>

#include <array>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace {

using ferry::codec::wire::codec_error;
using ferry::codec::wire::span_input_archive;
using ferry::codec::wire::span_output_archive;
using ferry::protocol::errc;

// Every kind of field the wire format has.
struct sample {
  std::uint8_t a = 0xfe;
  std::uint16_t b = 0x1234;
  std::uint32_t c = 0x89abcdef;
  std::uint64_t d = 0x0123456789abcdefULL;
  std::int64_t e = -1'700'000'000'123'456'789;
  std::string text = "some/path name";

  template <class Archive>
  void save(Archive& ar) const {
    ar(a, b, c, d, e);
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(text.size())));
    ar(cereal::binary_data(text.data(), text.size()));
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(a, b, c, d, e);
    cereal::size_type n = 0;
    ar(cereal::make_size_tag(n));
    REQUIRE(n < 100);
    text.resize(static_cast<std::size_t>(n));
    ar(cereal::binary_data(text.data(), text.size()));
  }
};

std::vector<std::byte> portable_binary_bytes(const sample& s) {
  std::ostringstream os;
  {
    cereal::PortableBinaryOutputArchive ar{
        os, cereal::PortableBinaryOutputArchive::Options::LittleEndian()};
    s.save(ar);
  }
  const auto str = os.str();
  std::vector<std::byte> out(str.size());
  std::memcpy(out.data(), str.data(), str.size());
  return out;
}

}  // namespace

TEST_CASE("the span archive writes what cereal's portable binary archive writes") {
  const sample s;
  std::array<std::byte, 256> buf{};
  span_output_archive ar{buf};
  s.save(ar);
  const auto expected = portable_binary_bytes(s);
  REQUIRE(ar.written() == expected.size());
  CHECK(std::equal(expected.begin(), expected.end(), buf.begin()));

  span_input_archive in{std::span{buf}.first(ar.written())};
  sample back;
  back.a = 0;
  back.d = 0;
  back.text.clear();
  back.load(in);
  CHECK(in.remaining() == 0);
  CHECK(back.a == s.a);
  CHECK(back.b == s.b);
  CHECK(back.c == s.c);
  CHECK(back.d == s.d);
  CHECK(back.e == s.e);
  CHECK(back.text == s.text);
}

TEST_CASE("the span archives refuse to write or read past their span") {
  const sample s;
  const auto whole = portable_binary_bytes(s).size();
  for (std::size_t size = 0; size < whole; ++size) {
    std::vector<std::byte> small(size);
    try {
      span_output_archive ar{small};
      s.save(ar);
      FAIL("wrote ", whole, " bytes into ", size);
    } catch (const codec_error& e) {
      CHECK(e.code == errc::bad_request);
    }
  }
  auto wire = portable_binary_bytes(s);
  for (std::size_t size = 0; size < wire.size(); ++size) {
    try {
      span_input_archive ar{std::span{wire}.first(size)};
      sample back;
      back.load(ar);
      FAIL("read a whole sample from ", size, " bytes");
    } catch (const codec_error& e) {
      CHECK(e.code == errc::malformed);
    }
  }
}

TEST_CASE("a body that does not say little-endian is not read at all") {
  auto wire = portable_binary_bytes(sample{});
  wire[0] = std::byte{0};  // what a big-endian portable binary archive writes
  CHECK_THROWS_AS(span_input_archive{wire}, codec_error);
}
