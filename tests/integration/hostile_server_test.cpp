// A server cannot exhaust the client: scripted servers that lie about a file's size, answer
// every GET with "busy", with short blocks or with blocks of another version than their STAT
// names, or list for ever. Each fetch or listing ends within its --timeout (or at once) with a
// clear failure and a bounded cost, and a fetch leaves a part file a rerun can resume.

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "client/commands.hpp"
#include "client/fetch.hpp"
#include "client/part_file.hpp"
#include "common/codec.hpp"
#include "common/digest.hpp"
#include "common/protocol.hpp"
#include "support/fetch_once.hpp"
#include "support/running_server.hpp"
#include "support/scripted_server.hpp"

namespace {

namespace proto = ferry::protocol;
namespace fs = std::filesystem;
using ferry::client::exit_code;
using ferry::client::failure;
using ferry::client::fetch_options;
using ferry::client::part_file;
using namespace ferry::test;
using std::chrono::milliseconds;

constexpr std::uint32_t block_size = 1024;
const std::string content(64 * block_size + 100, 'x');

proto::stat_reply the_file(std::uint64_t size = content.size()) {
  proto::stat_reply st;
  st.type = proto::entry_type::file;
  st.size = size;
  st.version = {1, 2, size, 3, 4};
  st.max_block = block_size;
  st.digest_ready = true;
  st.digest = xxh3_128(content);
  return st;
}

// A server that answers STAT truly and every GET with `answer(get)`.
scripted_server serving(
    std::function<std::optional<proto::reply>(const proto::get_request&)> answer,
    proto::stat_reply st = the_file()) {
  return scripted_server{[st, answer](const ferry::codec::decoded_request& r,
                                      std::uint64_t) -> std::optional<proto::reply> {
    if (std::holds_alternative<proto::stat_request>(r.body)) return st;
    if (const auto* g = std::get_if<proto::get_request>(&r.body)) return answer(*g);
    return proto::error_reply{proto::errc::bad_request, ""};
  }};
}

proto::data_reply block_of(const proto::get_request& g) {
  proto::data_reply d;
  d.offset = g.offset;
  d.version = the_file().version;
  const auto len = std::min<std::uint64_t>(g.block_size, content.size() - g.offset);
  d.payload = reinterpret_cast<const std::byte*>(content.data() + g.offset);
  d.length = static_cast<std::uint32_t>(len);
  d.eof = g.offset + len == content.size();
  return d;
}

struct outcome {
  std::optional<failure> failed;
  double seconds = 0;
};

outcome fetch_from(const scripted_server& srv, const fs::path& out, fetch_options opt) {
  const auto t0 = std::chrono::steady_clock::now();
  outcome o;
  try {
    (void)fetch_once(srv.endpoint(), "f.bin", out, std::move(opt));
  } catch (const failure& f) {
    o.failed = f;
  }
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return o;
}

fetch_options one_second() {
  fetch_options opt;
  opt.block_size = block_size;
  opt.timeout = std::chrono::seconds{1};
  return opt;
}

}  // namespace

TEST_CASE("a server whose every block is unusable ends the fetch after --timeout") {
  temp_dir dest;
  std::string what;
  std::function<std::optional<proto::reply>(const proto::get_request&)> answer;
  SUBCASE("blocks of another version than its STAT names") {
    what = "another version";
    answer = [](const proto::get_request& g) -> std::optional<proto::reply> {
      auto d = block_of(g);
      d.version.mtime_ns += 1;
      return d;
    };
  }
  SUBCASE("blocks shorter than asked for, though its STAT allows them") {
    what = "short blocks";
    answer = [](const proto::get_request& g) -> std::optional<proto::reply> {
      auto d = block_of(g);
      d.length = d.length / 2;
      d.eof = false;
      return d;
    };
  }
  SUBCASE("only busy") {
    what = "busy";
    answer = [](const proto::get_request&) -> std::optional<proto::reply> {
      return proto::error_reply{proto::errc::busy, ""};
    };
  }
  SUBCASE("blocks at offsets it was not asked for") {
    what = "wrong offsets";
    answer = [](const proto::get_request& g) -> std::optional<proto::reply> {
      auto d = block_of(g);
      d.offset = g.offset + 1;
      return d;
    };
  }
  CAPTURE(what);
  auto srv = serving(answer);
  const auto o = fetch_from(srv, dest / "f.bin", one_second());
  REQUIRE(o.failed);
  CHECK(o.failed->code() == exit_code::network);
  INFO(o.failed->what());
  CHECK(o.seconds >= 0.9);
  CHECK(o.seconds < 4.0);
  if (what == "busy")
    CHECK(std::string{o.failed->what()}.find("busy") != std::string::npos);
  else
    CHECK(std::string{o.failed->what()}.find("without sending a block") != std::string::npos);
  // Nothing under the final name; what a rerun needs is there.
  CHECK_FALSE(fs::exists(dest / "f.bin"));
  CHECK(fs::exists(dest / "f.bin.part.state"));
}

TEST_CASE("a half-good server still times out, and a good rerun resumes what arrived") {
  temp_dir dest;
  // Every fourth block is good; the rest are of another version.
  auto liar = serving([](const proto::get_request& g) -> std::optional<proto::reply> {
    auto d = block_of(g);
    if ((g.offset / block_size) % 4 != 0) d.version.mtime_ns += 1;
    return d;
  });
  const auto o = fetch_from(liar, dest / "f.bin", one_second());
  REQUIRE(o.failed);
  CHECK(o.seconds < 4.0);
  auto honest = serving(
      [](const proto::get_request& g) -> std::optional<proto::reply> { return block_of(g); });
  const auto r = fetch_once(honest.endpoint(), "f.bin", dest / "f.bin", one_second());
  CHECK(read_file(dest / "f.bin") == content);
  CHECK(r.resumed_bytes > 0);
}

TEST_CASE("a claimed size cannot make the client's state unbounded") {
  temp_dir dest;
  auto silent = [](const proto::get_request&) -> std::optional<proto::reply> {
    return std::nullopt;
  };
  SUBCASE("16 TiB in blocks of at most 512 bytes: refused at once") {
    auto st = the_file(std::uint64_t{16} << 40);
    st.max_block = 512;
    auto srv = serving(silent, st);
    const auto o = fetch_from(srv, dest / "f.bin", one_second());
    REQUIRE(o.failed);
    CHECK(o.failed->code() == exit_code::refused);
    INFO(o.failed->what());
    CHECK(std::string{o.failed->what()}.find("more than") != std::string::npos);
    CHECK(o.seconds < 0.9);
    CHECK_FALSE(fs::exists(dest / "f.bin.part.state"));
  }
  SUBCASE("1 TiB with 1024-byte blocks asked for: larger blocks, a state file of 8 MiB at most") {
    auto st = the_file(std::uint64_t{1} << 40);
    st.max_block = proto::max_block_size;
    auto srv = serving(silent, st);
    const auto o = fetch_from(srv, dest / "f.bin", one_second());
    REQUIRE(o.failed);
    CHECK(o.failed->code() == exit_code::network);
    const auto state = fs::file_size(dest / "f.bin.part.state");
    CHECK(state <= part_file::max_blocks / 8 + 128);
    CHECK(state > part_file::max_blocks / 8 / 2);  // the block grew just enough
  }
  CHECK(part_file::blocks_for(std::uint64_t{1} << 40, 1024, 65024) == 16384);
  CHECK(part_file::blocks_for(1 << 20, 1024, 65024) == 1024);
  CHECK(part_file::blocks_for(std::uint64_t{1} << 50, 1024, 65024) == 0);
}

TEST_CASE("ls stops a listing that never ends at --max-entries, having printed that many") {
  std::atomic<std::uint64_t> pages{0};
  scripted_server endless{
      [&](const ferry::codec::decoded_request& r, std::uint64_t) -> std::optional<proto::reply> {
        const auto* l = std::get_if<proto::list_request>(&r.body);
        if (l == nullptr) return proto::error_reply{proto::errc::bad_request, ""};
        // Names that rise for ever: the cursor plus one, page after page.
        const std::uint64_t from = l->cursor.empty() ? 0 : std::stoull(l->cursor.substr(1)) + 1;
        proto::list_reply page;
        for (std::uint64_t i = from; i < from + 30; ++i)
          page.entries.push_back({fmt::format("n{:012}", i), proto::entry_type::file, 1, 0});
        ++pages;
        return page;
      }};
  ferry::client::command_options o;
  o.address = to_string(endless.endpoint());
  o.timeout_s = 2;
  o.max_entries = 1000;
  for (const bool as_json : {false, true}) {
    CAPTURE(as_json);
    o.json = as_json;
    std::ostringstream out;
    std::optional<failure> failed;
    try {
      ferry::client::run_ls(o, false, out);
    } catch (const failure& f) {
      failed = f;
    }
    REQUIRE(failed);
    CHECK(failed->code() == exit_code::refused);
    CHECK(std::string{failed->what()}.find("--max-entries") != std::string::npos);
    const auto text = out.str();
    if (as_json) {
      CHECK(std::count(text.begin(), text.end(), '{') == 1000);
    } else {
      CHECK(std::count(text.begin(), text.end(), '\n') == 1000);
    }
  }
  CHECK(pages.load() < 100);
}

TEST_CASE("ls --json prints the listing as one array, streamed, as it did whole") {
  temp_dir root;
  for (std::size_t i = 0; i < 300; ++i) root.write(fmt::format("f{:03}", i), std::string(i, 'y'));
  running_server srv{root.path()};
  ferry::client::command_options o;
  o.address = to_string(srv.endpoint());
  o.json = true;
  std::ostringstream out;
  ferry::client::run_ls(o, false, out);
  const auto j = nlohmann::json::parse(out.str());
  REQUIRE(j.is_array());
  REQUIRE(j.size() == 300);
  CHECK(j[7]["name"] == "f007");
  CHECK(j[7]["size"] == 7);
  CHECK(out.str().back() == '\n');

  SUBCASE("and an empty directory is []") {
    fs::create_directory(root / "empty");
    o.path = "empty";
    std::ostringstream e;
    ferry::client::run_ls(o, false, e);
    CHECK(e.str() == "[]\n");
  }
}
