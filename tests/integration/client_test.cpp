// Integration tests of the client library (connection, fetcher, commands) against an
// in-process server: exact fetches of edge sizes, resuming after the server went away, files
// that change during a transfer, refusals, a closed port, and ls paging.

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "client/commands.hpp"
#include "client/connection.hpp"
#include "client/errors.hpp"
#include "client/fetch.hpp"
#include "common/protocol.hpp"
#include "support/fetch_once.hpp"
#include "support/loopback.hpp"
#include "support/running_server.hpp"
#include "support/udp_relay.hpp"

namespace {

namespace proto = ferry::protocol;
namespace fs = std::filesystem;
using ferry::client::exit_code;
using ferry::client::fetch_options;
using ferry::client::fetch_result;
using namespace ferry::test;

fetch_result fetch(const ferry::endpoint& server, const std::string& remote, const fs::path& out,
                   fetch_options opt) {
  return fetch_once(server, remote, out, std::move(opt));
}

// Runs a fetch that must fail, and returns its exit class.
exit_code fetch_failure(const ferry::endpoint& server, const std::string& remote,
                        const fs::path& out, fetch_options opt) {
  try {
    (void)fetch(server, remote, out, std::move(opt));
  } catch (const ferry::client::failure& f) {
    INFO("failure: " << f.what());
    return f.code();
  }
  FAIL("the fetch of '" << remote << "' succeeded");
  return exit_code::ok;
}

bool present(const fs::path& p) {
  std::error_code ec;
  return fs::symlink_status(p, ec).type() != fs::file_type::not_found;
}

fs::path part_of(const fs::path& out) { return out.string() + ".part"; }
fs::path state_of(const fs::path& out) { return out.string() + ".part.state"; }

// The output holds exactly `content`, and no partial files are left next to it.
void check_output(const fs::path& out, const std::string& content) {
  CAPTURE(out.string());
  REQUIRE(present(out));
  const auto got = read_file(out);
  CHECK(got.size() == content.size());
  const bool same = got == content;  // not CHECK(got == content): it would print megabytes
  CHECK(same);
  CHECK_FALSE(present(part_of(out)));
  CHECK_FALSE(present(state_of(out)));
}

std::uint64_t blocks_of(std::uint64_t size, std::uint32_t block) {
  return (size + block - 1) / block;
}

// A UDP port on 127.0.0.1 that nothing is bound to: bound once to learn a free one, then closed.
ferry::endpoint dead_endpoint() {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  const auto bound = bind_loopback(fd);
  ::close(fd);
  return bound;
}

// Fetches `remote` through a relay that stops delivering after `cut_blocks` data replies, so
// the fetch fails with exit_code::network part-way and leaves OUT.part and OUT.part.state.
// Returns the bytes done when it failed (what the state file records).
std::uint64_t interrupted_fetch(const running_server& srv, const std::string& remote,
                                const fs::path& out, std::uint32_t block,
                                std::uint64_t cut_blocks) {
  udp_relay relay{srv.endpoint()};
  relay.cut_after_data_replies(cut_blocks);
  std::uint64_t done_at_failure = 0;
  fetch_options opt;
  opt.block_size = block;
  opt.timeout = 500ms;
  opt.on_progress = [&](std::uint64_t done, std::uint64_t) { done_at_failure = done; };
  CHECK(fetch_failure(relay.endpoint(), remote, out, opt) == exit_code::network);
  REQUIRE(present(part_of(out)));
  REQUIRE(present(state_of(out)));
  CHECK_FALSE(present(out));
  CHECK(done_at_failure > 0);
  return done_at_failure;
}

}  // namespace

TEST_SUITE_BEGIN("client");

TEST_CASE("fetcher fetches files of edge sizes exactly") {
  std::uint32_t block = 0;
  SUBCASE("block_size 1000") { block = 1000; }
  SUBCASE("block_size 4096") { block = 4096; }
  REQUIRE(block != 0);

  temp_dir root, dest;
  const std::vector<std::uint64_t> sizes = {0, 1, block - 1, block, 5ull * block, 5ull * block + 1};
  std::vector<std::string> contents;
  for (const auto size : sizes)
    contents.push_back(root.write_random(fmt::format("f{}", size), size, size + 1));
  running_server srv{root.path()};

  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const auto size = sizes[i];
    CAPTURE(size);
    const auto name = fmt::format("f{}", size);
    fetch_options opt;
    opt.block_size = block;
    const auto r = fetch(srv.endpoint(), name, dest / name, opt);
    check_output(dest / name, contents[i]);
    CHECK(r.size == size);
    CHECK(r.bytes_fetched == size);
    CHECK(r.resumed_bytes == 0);
    CHECK(r.restarts == 0);
    CHECK(r.block_size == block);
    CHECK(r.corrupt == 0);
    CHECK(r.digest == xxh3_128(contents[i]));
    // Each block is asked for once, plus whatever a timeout made the fetcher ask again.
    CHECK(r.requests == blocks_of(size, block) + r.retransmits);
  }
}

TEST_CASE("fetcher fetches a 20 MiB random file with the default block size") {
  temp_dir root, dest;
  const auto content = root.write_random("big.bin", 20u << 20, 2024);
  running_server srv{root.path()};
  const auto r = fetch(srv.endpoint(), "big.bin", dest / "big.bin", {});
  check_output(dest / "big.bin", content);
  CHECK(r.size == content.size());
  CHECK(r.bytes_fetched == content.size());
  CHECK(r.resumed_bytes == 0);
  CHECK(r.restarts == 0);
  CHECK(r.digest == xxh3_128(content));
  CHECK(r.block_size >= proto::min_block_size);
  CHECK(r.block_size <= proto::max_block_size);
  CHECK(r.requests == blocks_of(r.size, r.block_size) + r.retransmits);
  CHECK(r.seconds > 0);
  CHECK(srv.counters().internal_errors.load() == 0);
}

TEST_CASE("fetcher resumes where a failed run stopped, fetching no finished block again") {
  temp_dir root, dest;
  constexpr std::uint32_t block = 4096;
  constexpr std::size_t size = 8u << 20;  // 2,048 blocks
  const auto content = root.write_random("big.bin", size, 99);
  const auto out = dest / "big.bin";

  // First run: through a relay that stops delivering after 40% of the blocks, so the fetch
  // is sure to be past 30% and unfinished when on_progress stops the server.
  std::uint64_t done_at_failure = 0;
  {
    running_server first{root.path()};
    udp_relay relay{first.endpoint()};
    relay.cut_after_data_replies(blocks_of(size, block) * 40 / 100);
    bool stopped = false;
    fetch_options opt;
    opt.block_size = block;
    opt.timeout = 1s;
    opt.on_progress = [&](std::uint64_t done, std::uint64_t total) {
      done_at_failure = done;
      if (!stopped && done * 10 > total * 3) {
        first.request_stop();
        stopped = true;
      }
    };
    CHECK(fetch_failure(relay.endpoint(), "big.bin", out, opt) == exit_code::network);
    CHECK(stopped);
    CHECK(relay.is_cut());
    first.stop_and_join();
  }
  CHECK(present(part_of(out)));
  CHECK(present(state_of(out)));
  CHECK_FALSE(present(out));
  CHECK(done_at_failure * 10 > size * 3);
  CHECK(done_at_failure < size);

  // Second run: a new server on the same root.
  running_server second{root.path()};
  fetch_options opt;
  opt.block_size = block;
  const auto r = fetch(second.endpoint(), "big.bin", out, opt);
  check_output(out, content);
  CHECK(r.size == size);
  CHECK(r.resumed_bytes > 0);
  CHECK(r.resumed_bytes == done_at_failure);
  CHECK(r.bytes_fetched == size - r.resumed_bytes);
  CHECK(r.requests == blocks_of(size, block) - r.resumed_bytes / block + r.retransmits);
  CHECK(r.digest == xxh3_128(content));
}

TEST_CASE("partial files that cannot be trusted are not resumed") {
  temp_dir root, dest;
  constexpr std::uint32_t block = 4096;
  constexpr std::size_t size = 1u << 20;  // 256 blocks
  const auto content = root.write_random("f.bin", size, 5);
  const auto out = dest / "f.bin";
  running_server srv{root.path()};
  auto expect_fresh_fetch = [&](const std::string& want) {
    fetch_options opt;
    opt.block_size = block;
    const auto r = fetch(srv.endpoint(), "f.bin", out, opt);
    check_output(out, want);
    CHECK(r.resumed_bytes == 0);
    CHECK(r.bytes_fetched == size);
    CHECK(r.digest == xxh3_128(want));
  };

  SUBCASE("the file changed since the partial transfer") {
    CHECK(interrupted_fetch(srv, "f.bin", out, block, 100) > 0);
    const auto changed = random_bytes(size, 6);
    root.overwrite_in_place("f.bin", changed);
    expect_fresh_fetch(changed);
  }
  SUBCASE("one flipped bit in the state file") {
    CHECK(interrupted_fetch(srv, "f.bin", out, block, 100) > 0);
    auto state = read_file(state_of(out));
    REQUIRE(state.size() > 64 + 8);
    state[64] = static_cast<char>(state[64] ^ 0x40);  // a block in the bitmap
    dest.write("f.bin.part.state", state);
    expect_fresh_fetch(content);
  }
  SUBCASE("a truncated state file") {
    CHECK(interrupted_fetch(srv, "f.bin", out, block, 100) > 0);
    fs::resize_file(state_of(out), fs::file_size(state_of(out)) - 1);
    expect_fresh_fetch(content);
  }
  SUBCASE("garbage in both partial files") {
    dest.write("f.bin.part", random_bytes(size, 7));
    dest.write("f.bin.part.state", random_bytes(300, 8));
    expect_fresh_fetch(content);
  }
}

TEST_CASE("fetcher starts over when the file changes during the transfer") {
  temp_dir root, dest;
  constexpr std::uint32_t block = 4096;
  constexpr std::size_t size = 4u << 20;  // 1,024 blocks
  (void)root.write_random("f.bin", size, 1);
  const auto changed = random_bytes(size, 2);
  const auto out = dest / "f.bin";
  running_server srv{root.path()};

  SUBCASE("changed once, after 20%: the result is the new content") {
    // The relay holds the transfer at 25% until on_progress has changed the file, so the
    // change lands mid-transfer whatever the machine's speed.
    udp_relay relay{srv.endpoint()};
    relay.cut_after_data_replies(blocks_of(size, block) * 25 / 100);
    bool modified = false;
    fetch_options opt;
    opt.block_size = block;
    opt.on_progress = [&](std::uint64_t done, std::uint64_t total) {
      if (!modified && done * 5 > total) {
        root.overwrite_in_place("f.bin", changed);
        modified = true;
        relay.restore();
      }
    };
    const auto r = fetch(relay.endpoint(), "f.bin", out, opt);
    CHECK(modified);
    check_output(out, changed);
    CHECK(r.restarts >= 1);
    CHECK(r.size == size);
    CHECK(r.digest == xxh3_128(changed));
  }
  SUBCASE("changed at every progress report, max_restarts 1: integrity failure, no output") {
    std::uint64_t seed = 100;
    int changes = 0;
    fetch_options opt;
    opt.block_size = block;
    opt.max_restarts = 1;
    opt.on_progress = [&](std::uint64_t, std::uint64_t) {
      root.overwrite_in_place("f.bin", random_bytes(size, ++seed));
      ++changes;
    };
    CHECK(fetch_failure(srv.endpoint(), "f.bin", out, opt) == exit_code::integrity);
    CHECK(changes >= 2);
    CHECK_FALSE(present(out));
  }
}

TEST_CASE("refusals map to exit_code::refused and create no output") {
  temp_dir root, dest;
  root.write("file.txt", "x");
  root.mkdir("dir");
  root.mkfifo("fifo");
  root.symlink("/etc/passwd", "escape");
  running_server srv{root.path()};
  for (const std::string path : {"missing.txt", "../etc/passwd", "/etc/passwd", "a/../../x", "dir",
                                 "fifo", "escape", "file.txt/x"}) {
    CAPTURE(path);
    const auto out = dest / "out";
    fetch_options opt;
    opt.timeout = 5s;
    CHECK(fetch_failure(srv.endpoint(), path, out, opt) == exit_code::refused);
    CHECK_FALSE(present(out));
    CHECK_FALSE(present(part_of(out)));
    CHECK_FALSE(present(state_of(out)));
  }
  SUBCASE("ls and stat refuse the same way") {
    ferry::client::command_options o{srv.address(), "missing", true, 5.0};
    std::ostringstream sink;
    try {
      ferry::client::run_ls(o, false, sink);
      FAIL("ls of a missing directory succeeded");
    } catch (const ferry::client::failure& f) {
      CHECK(f.code() == exit_code::refused);
    }
    o.path = "../x";
    try {
      ferry::client::run_stat(o, sink);
      FAIL("stat of ../x succeeded");
    } catch (const ferry::client::failure& f) {
      CHECK(f.code() == exit_code::refused);
    }
  }
}

TEST_CASE("an output that cannot be written gives exit_code::local_io") {
  temp_dir root, dest;
  root.write("f.txt", "content");
  running_server srv{root.path()};
  fetch_options opt;
  opt.timeout = 5s;
  CHECK(fetch_failure(srv.endpoint(), "f.txt", dest / "no_such_dir" / "f.txt", opt) ==
        exit_code::local_io);
  CHECK_FALSE(present(dest / "no_such_dir"));
}

TEST_CASE("get gives the output the server's mtime, unless told not to") {
  temp_dir root, dest;
  root.write("f.txt", "content");
  const auto when = fs::file_time_type::clock::now() - std::chrono::hours{24 * 400};
  fs::last_write_time(root / "f.txt", when);
  running_server srv{root.path()};
  fetch_options opt;
  opt.timeout = 5s;
  (void)fetch(srv.endpoint(), "f.txt", dest / "kept.txt", opt);
  CHECK(fs::last_write_time(dest / "kept.txt") == when);
  opt.keep_mtime = false;
  (void)fetch(srv.endpoint(), "f.txt", dest / "now.txt", opt);
  CHECK(fs::last_write_time(dest / "now.txt") > when + std::chrono::hours{24 * 399});
}

TEST_CASE("get --no-clobber leaves an existing output alone") {
  temp_dir root, dest;
  root.write("f.txt", "new content");
  dest.write("f.txt", "mine");
  running_server srv{root.path()};
  ferry::client::command_options o;
  o.address = to_string(srv.endpoint());
  o.path = "f.txt";
  o.timeout_s = 5;
  ferry::client::get_options g;
  g.output = (dest / "f.txt").string();
  g.no_clobber = true;
  std::ostringstream out;
  ferry::client::run_get(o, g, out);
  CHECK(read_file(dest / "f.txt") == "mine");
  CHECK_FALSE(present(dest / "f.txt.part"));

  SUBCASE("and one that appears during the transfer is not replaced either") {
    fetch_options opt;
    opt.timeout = 5s;
    opt.replace = false;
    CHECK(fetch_failure(srv.endpoint(), "f.txt", dest / "f.txt", opt) == exit_code::local_io);
    CHECK(read_file(dest / "f.txt") == "mine");
    CHECK(read_file(dest / "f.txt.part") == "new content");
  }
  SUBCASE("without it, the output is replaced") {
    g.no_clobber = false;
    ferry::client::run_get(o, g, out);
    CHECK(read_file(dest / "f.txt") == "new content");
  }
}

TEST_CASE("get with several paths fetches each into the directory, as scp does") {
  temp_dir root, dest;
  root.write("a.txt", "first");
  fs::create_directory(root / "sub");
  root.write("sub/b.txt", "second");
  running_server srv{root.path()};
  ferry::client::command_options o;
  o.address = to_string(srv.endpoint());
  o.timeout_s = 5;
  ferry::client::get_options g;
  g.output = dest.path().string();
  std::ostringstream out;
  const auto code_of = [&](const std::vector<std::string>& paths) {
    try {
      ferry::client::run_get_all(o, paths, g, out);
    } catch (const ferry::client::failure& f) {
      INFO(f.what());
      return f.code();
    }
    return exit_code::ok;
  };
  CHECK(code_of({"a.txt", "sub/b.txt"}) == exit_code::ok);
  CHECK(read_file(dest / "a.txt") == "first");
  CHECK(read_file(dest / "b.txt") == "second");

  SUBCASE("one that fails does not stop the others, and its code is the exit code") {
    fs::remove(dest / "a.txt");
    fs::remove(dest / "b.txt");
    CHECK(code_of({"missing.txt", "a.txt"}) == exit_code::refused);
    CHECK(read_file(dest / "a.txt") == "first");
  }
  SUBCASE("two paths with one name, or an output that is not a directory, are usage errors") {
    CHECK(code_of({"a.txt", "other/a.txt"}) == exit_code::usage);
    g.output = (dest / "a.txt").string();
    CHECK(code_of({"a.txt", "sub/b.txt"}) == exit_code::usage);
  }
}

TEST_CASE("a closed port gives exit_code::network at once, not at the timeout") {
  temp_dir dest;
  const auto nobody = dead_endpoint();
  const auto out = dest / "x";
  fetch_options opt;
  opt.timeout = 5s;
  const auto started = std::chrono::steady_clock::now();
  CHECK(fetch_failure(nobody, "x", out, opt) == exit_code::network);
  // The host says at once (ICMP port unreachable) that nothing listens there, as curl hears
  // "connection refused"; a server that is there but silent is waited for (request_engine_test).
  CHECK(std::chrono::steady_clock::now() - started < 1s);
  CHECK_FALSE(present(out));
  CHECK_FALSE(present(part_of(out)));
}

TEST_CASE("ls pages through a 3,000-entry directory") {
  temp_dir root;
  const auto names = varied_names(3000);
  root.populate("many", names);
  running_server srv{root.path()};
  ferry::client::command_options o{srv.address(), "many", true, 10.0};

  SUBCASE("as JSON") {
    std::ostringstream out;
    ferry::client::run_ls(o, false, out);
    const auto j = nlohmann::json::parse(out.str());
    REQUIRE(j.is_array());
    REQUIRE(j.size() == names.size());
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < names.size(); ++i) {
      const auto& e = j[i];
      if (e.at("name") != names[i] || e.at("type") != "file" || e.at("size") != i % 7) {
        if (wrong < 3) FAIL_CHECK("entry " << i << ": " << e.dump());  // the first few only
        ++wrong;
      }
    }
    CHECK(wrong == 0);
  }
  SUBCASE("as plain names") {
    o.json = false;
    std::ostringstream out;
    ferry::client::run_ls(o, false, out);
    std::istringstream lines{out.str()};
    std::vector<std::string> got;
    for (std::string line; std::getline(lines, line);) got.push_back(line);
    CHECK(got.size() == names.size());
    CHECK(got == names);
  }
  // 3,000 entries cannot come in fewer pages than max_list_entries allows.
  CHECK(srv.counters().list_requests.load() >= names.size() / proto::max_list_entries);
}

TEST_CASE("ls lists names bytewise in order and keeps every byte of a name") {
  temp_dir root;
  root.mkdir("odd");
  // Bytewise order: 'Z' (0x5a) < 'a' (0x61) < UTF-8 'é' (0xc3 0xa9) < 0xff (not UTF-8).
  const std::vector<std::string> names = {"Zeta", "alpha", "\xc3\xa9t\xc3\xa9", "\xff\xfe raw"};
  for (const auto& n : names) root.write("odd/" + n, n);
  running_server srv{root.path()};
  ferry::client::command_options o{srv.address(), "odd", true, 5.0};
  std::ostringstream out;
  ferry::client::run_ls(o, false, out);
  const auto j = nlohmann::json::parse(out.str());
  REQUIRE(j.is_array());
  REQUIRE(j.size() == names.size());
  CHECK(j[0].at("name") == "Zeta");
  CHECK(j[1].at("name") == "alpha");
  CHECK(j[2].at("name") == names[2]);
  CHECK_FALSE(j[2].contains("name_hex"));  // valid UTF-8 needs no hex
  CHECK(j[2].at("size") == names[2].size());
  // Invalid UTF-8 cannot be a JSON string as is: the exact bytes come as hex.
  REQUIRE(j[3].contains("name_hex"));
  CHECK(j[3].at("name_hex") == "fffe20726177");
}

TEST_CASE("ls quotes names on a terminal, as GNU ls does, and leaves other output alone") {
  temp_dir root;
  root.mkdir("d");
  // A name that would retitle the window and clear the screen of whoever lists it.
  const std::string hostile = "x\x1b]0;owned\x07\x1b[2J";
  root.write("d/" + hostile, "boo");
  root.write("d/plain", "p");
  running_server srv{root.path()};
  ferry::client::command_options o{srv.address(), "d", false, 5.0};
  for (bool terminal : {true, false}) {
    CAPTURE(terminal);
    o.terminal = terminal;
    std::ostringstream out;
    ferry::client::run_ls(o, false, out);
    if (terminal) {
      CHECK(out.str() == "plain\n'x'$'\\033'']0;owned'$'\\a\\033''[2J'\n");
      CHECK(out.str().find('\x1b') == std::string::npos);
    } else {
      CHECK(out.str() == "plain\n" + hostile + "\n");  // a pipe gets the bytes, as from ls
    }
  }
}

TEST_SUITE_END();
