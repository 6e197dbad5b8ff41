// The encoders refuse what the decoders would reject, and input over the limits the decoders
// enforce, so nothing the codec writes is refused by its peer.

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

TEST_SUITE_BEGIN("codec");

TEST_CASE("encoders refuse what decode_reply would reject") {
  bytes out(proto::max_datagram);
  SUBCASE("stat_reply max_block outside [min_block_size, max_block_size]") {
    proto::stat_reply m;
    m.type = proto::entry_type::file;
    for (std::uint32_t max_block : {0u, proto::min_block_size - 1, proto::max_block_size + 1,
                                    std::numeric_limits<std::uint32_t>::max()}) {
      CAPTURE(max_block);
      m.max_block = max_block;
      CHECK(encode_reply(out, 1, m).error() == errc::bad_request);
    }
    for (std::uint32_t max_block : {proto::min_block_size, proto::max_block_size}) {
      CAPTURE(max_block);
      m.max_block = max_block;
      CHECK(encode_reply(out, 1, m));
    }
  }
  SUBCASE("entry_type and errc out of range") {
    proto::list_reply l;
    l.entries = {{"a", static_cast<proto::entry_type>(4), 1, 1}};
    CHECK(encode_reply(out, 1, l).error() == errc::bad_request);
    l.entries = {{"a", proto::entry_type::other, 1, 1}};
    CHECK(encode_reply(out, 1, l));
    proto::stat_reply st;
    st.type = static_cast<proto::entry_type>(4);
    st.max_block = proto::max_block_size;
    CHECK(encode_reply(out, 1, st).error() == errc::bad_request);
    st.type = proto::entry_type::other;
    CHECK(encode_reply(out, 1, st));
    // errc::corrupt (13) is never sent, nor anything above authentication_required (14).
    for (auto code : {errc::corrupt, static_cast<errc>(15), static_cast<errc>(0xff)}) {
      CAPTURE(static_cast<int>(code));
      CHECK(encode_reply(out, 1, proto::error_reply{code, ""}).error() == errc::bad_request);
    }
    CHECK(encode_reply(out, 1, proto::error_reply{errc::bad_request, ""}));
    CHECK(encode_reply(out, 1, proto::error_reply{errc::authentication_required, ""}));
  }
  SUBCASE("data_reply whose eof disagrees with offset + length and the file size") {
    CHECK(encode_reply(out, 1, make_data(10, true, version_of_size(5), bytes{})).error() ==
          errc::bad_request);
    CHECK(encode_reply(out, 1, make_data(10, false, version_of_size(5), bytes(1))).error() ==
          errc::bad_request);
    // Exactly at the end of the file, eof must be set; short of it, it must not.
    CHECK(encode_reply(out, 1, make_data(4, false, version_of_size(5), bytes(1))).error() ==
          errc::bad_request);
    CHECK(encode_reply(out, 1, make_data(3, true, version_of_size(5), bytes(1))).error() ==
          errc::bad_request);
    CHECK(encode_reply(out, 1, make_data(5, false, version_of_size(5), bytes{})).error() ==
          errc::bad_request);
    CHECK(encode_reply(out, 1, make_data(4, true, version_of_size(5), bytes(1))));
    CHECK(encode_reply(out, 1, make_data(3, false, version_of_size(5), bytes(1))));
    CHECK(encode_reply(out, 1, make_data(5, true, version_of_size(5), bytes{})));
  }
}

TEST_CASE("encoders reject input over the limits the decoder enforces") {
  bytes out(proto::max_datagram);
  const std::string long_path(proto::max_path + 1, 'p');
  SUBCASE("path longer than max_path") {
    CHECK(encode_request(out, 1, proto::list_request{long_path, ""}).error() == errc::bad_request);
    CHECK(encode_request(out, 1, proto::stat_request{long_path}).error() == errc::bad_request);
    CHECK(encode_request(out, 1, proto::get_request{long_path, 0, 512}).error() ==
          errc::bad_request);
    CHECK(encode_request(out, 1, proto::stat_request{std::string(proto::max_path, 'p')}));
  }
  SUBCASE("cursor longer than max_name") {
    CHECK(encode_request(out, 1, proto::list_request{"", std::string(proto::max_name + 1, 'c')})
              .error() == errc::bad_request);
  }
  SUBCASE("more than max_list_entries entries") {
    proto::list_reply m;
    for (std::size_t i = 0; i < proto::max_list_entries; ++i)
      m.entries.push_back({fmt::format("e{}", i), proto::entry_type::file, i, 0});
    CHECK(encode_reply(out, 1, m));
    m.entries.push_back({"one-more", proto::entry_type::file, 0, 0});
    CHECK(encode_reply(out, 1, m).error() == errc::bad_request);
  }
  SUBCASE("entry name longer than max_name") {
    proto::list_reply m;
    m.entries = {{std::string(proto::max_name + 1, 'n'), proto::entry_type::file, 0, 0}};
    CHECK(encode_reply(out, 1, m).error() == errc::bad_request);
  }
  SUBCASE("error message longer than max_message") {
    CHECK(encode_reply(out, 1,
                       proto::error_reply{errc::io_error, std::string(proto::max_message + 1, 'm')})
              .error() == errc::bad_request);
  }
  SUBCASE("data payload longer than max_block_size") {
    const bytes payload(proto::max_block_size + 1);
    const auto m = make_data(0, false, version_of_size(10 * four_gib), payload);
    CHECK(encode_reply(out, 1, m).error() == errc::bad_request);
  }
  SUBCASE("an output buffer too small, at every size") {
    const corpus c;
    for (const auto& wire : c.requests) {
      auto r = decode_request(wire);
      REQUIRE(r);
      for (std::size_t size = 0; size < wire.size(); ++size) {
        CAPTURE(size);
        bytes small(size);
        CHECK(encode_request(small, 1, r->body).error() == errc::bad_request);
      }
      bytes exact(wire.size());
      CHECK(encode_request(exact, r->hdr.request_id, r->body));
      CHECK(exact == wire);
    }
    for (const auto& wire : c.replies) {
      auto r = decode_reply(wire);
      REQUIRE(r);
      for (std::size_t size = 0; size < wire.size(); ++size) {
        CAPTURE(size);
        bytes small(size);
        CHECK(encode_reply(small, 1, r->body).error() == errc::bad_request);
      }
      bytes exact(wire.size());
      CHECK(encode_reply(exact, r->hdr.request_id, r->body));
      CHECK(exact == wire);
    }
  }
}

TEST_SUITE_END();
