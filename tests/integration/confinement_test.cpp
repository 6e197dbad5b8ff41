// Confinement to the served root, as one corpus against a live server: every way a request can
// try to leave the root or reach something that is not a regular file is refused with the code
// docs/PROTOCOL.md gives it, and nothing outside the root is ever read. Two kinds of evidence
// for the last: a marker that only the outside file holds never appears in a reply, and
// inotify sees no open of anything in the outside directory (that does not rely on atime).
// Then the single cases: requests that would leave the root, files that are not regular, and a
// file swapped for a symlink to outside while it is being read.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/openat2.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include "common/protocol.hpp"
#include "common/unique_fd.hpp"
#include "support/confinement_probe.hpp"
#include "support/file_facts.hpp"
#include "support/running_server.hpp"

namespace {

namespace proto = ferry::protocol;
using ferry::unique_fd;
using ferry::protocol::entry_type;
using ferry::protocol::errc;
using namespace ferry::test;

// A request of the protocol's own grammar that ferry::codec refuses to encode: a path one byte
// over the 4096-byte limit. Built from a GET, STAT or LIST of a 4096-byte path by growing the
// path's length tag and bytes, with the checksum made to match again.
std::vector<std::byte> over_long_path_request(std::uint64_t id, proto::request req) {
  const std::string path(proto::max_path, 'p');
  std::visit([&](auto& r) { r.path = path; }, req);
  auto wire = blocking_client::encode(id, req);
  strip_checksum(wire);
  // The body starts with the archive's endianness byte, then the path's u64 length tag.
  constexpr std::size_t tag = proto::header_size + 1;
  std::uint64_t length = 0;
  std::memcpy(&length, &wire[tag], 8);
  REQUIRE(length == proto::max_path);
  ++length;
  std::memcpy(&wire[tag], &length, 8);
  wire.insert(wire.begin() + static_cast<std::ptrdiff_t>(tag + 8), std::byte{'p'});
  append_checksum(wire);
  return wire;
}

}  // namespace

TEST_SUITE_BEGIN("confinement");

TEST_CASE("confinement corpus: each way out is refused with its code, nothing outside is read") {
  const auto marker = make_marker();
  temp_dir outside;
  outside.write("secret.txt", marker);
  temp_dir root;
  const auto out_name = outside.path().filename().string();
  const auto root_name = root.path().filename().string();
  root.write("file.txt", "inside");
  root.mkdir("sub");
  root.symlink("../../" + out_name, "sub/out_dir");  // a directory symlink that leaves the root
  root.symlink(outside.path().string(), "abs_out_dir");
  root.symlink("../" + out_name + "/secret.txt", "secret_link");
  root.symlink("/etc", "etc_link");
  root.symlink("loop_b", "loop_a");
  root.symlink("loop_a", "loop_b");
  root.symlink("self", "self");
  root.mkfifo("fifo");
  root.make_socket("sock");
  open_watch outside_watch{outside.path()};
  open_watch root_watch{root.path()};
  running_server srv{root.path()};
  blocking_client cli{srv.endpoint()};

  const errc loop = have_openat2() ? errc::symlink_loop : errc::outside_root;
  const errc out = errc::outside_root;
  const errc ok = errc::ok;
  auto repeat = [](const std::string& part, std::size_t n) {
    std::string s;
    for (std::size_t i = 0; i < n; ++i) s += (i == 0 ? "" : "/") + part;
    return s;
  };
  const std::string name255(proto::max_name, 'n');
  const std::string name256(proto::max_name + 1, 'n');
  // 16 components of 255 bytes and a trailing slash: exactly 4096 bytes, all of it allowed.
  const std::string path4096 = repeat(name255, 16) + "/";
  REQUIRE(path4096.size() == proto::max_path);

  struct row {
    std::string path;
    errc get, stat, list;  // errc::ok: answered, not refused
  };
  const std::vector<row> rows = {
      // ".." in its spellings (PROTOCOL.md: any ".." component is outside_root).
      {"..", out, out, out},
      {"../", out, out, out},
      {"../x", out, out, out},
      {"./../x", out, out, out},
      {"sub/..", out, out, out},
      {"sub/../file.txt", out, out, out},
      {"sub/../../x", out, out, out},
      {"sub//..//..//x", out, out, out},
      {"../" + root_name + "/file.txt", out, out, out},
      {"../" + out_name + "/secret.txt", out, out, out},
      // Names that only look like "..": ordinary, absent names.
      {"...", errc::not_found, errc::not_found, errc::not_found},
      {"..x", errc::not_found, errc::not_found, errc::not_found},
      {"..\\x", errc::not_found, errc::not_found, errc::not_found},
      {"%2e%2e/x", errc::not_found, errc::not_found, errc::not_found},
      // Absolute paths, even one naming a file inside the root.
      {"/", out, out, out},
      {"/etc/passwd", out, out, out},
      {"//etc/passwd", out, out, out},
      {(outside / "secret.txt").string(), out, out, out},
      {(root / "file.txt").string(), out, out, out},
      // NUL anywhere.
      {std::string{"\0", 1}, errc::bad_path, errc::bad_path, errc::bad_path},
      {std::string{"file.txt\0", 9}, errc::bad_path, errc::bad_path, errc::bad_path},
      {std::string{"file.txt\0.jpg", 13}, errc::bad_path, errc::bad_path, errc::bad_path},
      {std::string{"sub\0/file.txt", 13}, errc::bad_path, errc::bad_path, errc::bad_path},
      // Over-long names, paths and depths, each next to the longest that is allowed.
      {name256, errc::bad_path, errc::bad_path, errc::bad_path},
      {"sub/" + name256, errc::bad_path, errc::bad_path, errc::bad_path},
      {name255, errc::not_found, errc::not_found, errc::not_found},
      {path4096, errc::not_found, errc::not_found, errc::not_found},
      {repeat("d", proto::max_depth + 1), errc::bad_path, errc::bad_path, errc::bad_path},
      {repeat("d", proto::max_depth), errc::not_found, errc::not_found, errc::not_found},
      {repeat(".", 100) + "/file.txt", ok, ok, errc::not_directory},  // "." does not count
      // Symlinks: to /etc, out of the root through a directory symlink, loops.
      {"etc_link", out, out, out},
      {"etc_link/", out, out, out},
      {"etc_link/passwd", out, out, out},
      {"sub/out_dir", out, out, out},
      {"sub/out_dir/secret.txt", out, out, out},
      {"abs_out_dir", out, out, out},
      {"abs_out_dir/secret.txt", out, out, out},
      {"secret_link", out, out, out},
      {"loop_a", loop, loop, loop},
      {"loop_a/x", loop, loop, loop},
      {"self", loop, loop, loop},
      // Not regular files: STAT answers, GET refuses, LIST is for directories.
      {"fifo", errc::not_regular, ok, errc::not_directory},
      {"sock", errc::not_regular, ok, errc::not_directory},
      {"sub", errc::not_regular, ok, ok},
      {"", errc::not_regular, ok, ok},
      {"file.txt", ok, ok, errc::not_directory},
  };
  for (const auto& r : rows) {
    CAPTURE(shown(r.path));
    const proto::request requests[] = {proto::get_request{r.path, 0, 4096},
                                       proto::stat_request{r.path},
                                       proto::list_request{r.path, ""}};
    const errc want[] = {r.get, r.stat, r.list};
    for (std::size_t i = 0; i < std::size(requests); ++i) {
      CAPTURE(i);  // 0 GET, 1 STAT, 2 LIST
      const auto reply = cli.call(requests[i]);
      CHECK(code_of(reply) == want[i]);
      CHECK_FALSE(holds(reply.wire, marker));
    }
  }

  {
    // A path over 4096 bytes. PROTOCOL.md's Paths table gives bad_path for it, but such a
    // request breaks the wire grammar (path: string <= 4096), so the decoder answers malformed.
    const proto::request requests[] = {proto::get_request{"", 0, 4096}, proto::stat_request{},
                                       proto::list_request{}};
    for (const auto& req : requests) {
      const auto id = cli.next_id();
      cli.send_raw(over_long_path_request(id, req));
      const auto wire = cli.recv_raw();
      REQUIRE(wire);
      const auto reply = ferry::codec::decode_reply(*wire);
      REQUIRE(reply);
      CHECK(reply->hdr.request_id == id);
      const auto* e = std::get_if<proto::error_reply>(&reply->body);
      REQUIRE(e != nullptr);
      CHECK(e->code == errc::malformed);
    }
  }

  CHECK(srv.counters().internal_errors.load() == 0);
  // Nothing in the outside directory was opened or read; the FIFO and the socket were never
  // opened either (only O_PATH, which inotify does not report); file.txt was, which shows the
  // watch sees the server's opens.
  CHECK(outside_watch.drain().empty());
  const auto opened = root_watch.drain();
  const std::set<std::string> names{opened.begin(), opened.end()};
  CHECK(names.count("fifo") == 0);
  CHECK(names.count("sock") == 0);
  CHECK(names.count("file.txt") == 1);
  // And the outside watch does see an open when one happens.
  { const unique_fd probe{::open((outside / "secret.txt").c_str(), O_RDONLY | O_CLOEXEC)}; }
  CHECK(outside_watch.drain() == std::vector<std::string>{"secret.txt"});
}

TEST_CASE("confinement: a file swapped for a symlink to outside is never read through it") {
  // Every victim is swapped, thousands of times in all, between a hard link of base.txt and a
  // symlink (absolute or relative) to a file outside the root, while the test thread asks for
  // them. There are more victims than descriptors the server keeps open (64), so GETs keep
  // resolving their paths afresh rather than reusing an earlier open.
  constexpr std::size_t victims = 256;
  constexpr std::uint64_t min_swaps = 5000;
  constexpr std::uint64_t min_gets = 3000;
  const auto marker = make_marker();
  temp_dir outside;
  outside.write("secret.txt", marker);
  temp_dir root;
  const std::string inside = "inside content";
  root.write("base.txt", inside);
  auto victim = [](std::size_t i) { return fmt::format("victim{:03}", i); };
  for (std::size_t i = 0; i < victims; ++i) root.hard_link("base.txt", victim(i));
  const std::string targets[] = {(outside / "secret.txt").string(),
                                 "../" + outside.path().filename().string() + "/secret.txt"};
  open_watch outside_watch{outside.path()};
  running_server srv{root.path()};
  blocking_client cli{srv.endpoint()};

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> swaps{0}, swap_errors{0};
  std::thread swapper{[&] {
    const auto base = (root / "base.txt").string();
    for (std::uint64_t n = 0; !stop.load(); ++n) {
      const auto i = n % victims;
      const auto name = (root / victim(i)).string();
      const auto tmp = name + ".new";
      // Even passes over the victims make them symlinks, odd passes files again.
      const bool to_link = (n / victims) % 2 == 0;
      const int made = to_link ? ::symlink(targets[n % 2].c_str(), tmp.c_str())
                               : ::link(base.c_str(), tmp.c_str());
      if (made != 0 || ::rename(tmp.c_str(), name.c_str()) != 0) {
        ++swap_errors;
        ::unlink(tmp.c_str());
        continue;
      }
      ++swaps;
    }
  }};

  std::map<errc, std::uint64_t> get_codes, stat_codes, list_codes;
  std::uint64_t gets = 0, marked = 0, wrong_data = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{60};
  while ((gets < min_gets || swaps.load() < min_swaps) &&
         std::chrono::steady_clock::now() < deadline) {
    const auto path = victim(gets % victims);
    const auto got = cli.call(proto::get_request{path, 0, 4096});
    marked += holds(got.wire, marker) ? 1 : 0;
    ++get_codes[code_of(got)];
    if (const auto* d = std::get_if<proto::data_reply>(&got.decoded.body)) {
      const std::string_view data{reinterpret_cast<const char*>(d->payload), d->length};
      wrong_data += data == inside ? 0 : 1;
    }
    if (gets % 4 == 0) {
      const auto st = cli.call(proto::stat_request{path});
      marked += holds(st.wire, marker) ? 1 : 0;
      ++stat_codes[code_of(st)];
      const auto ls = cli.call(proto::list_request{path, ""});
      marked += holds(ls.wire, marker) ? 1 : 0;
      ++list_codes[code_of(ls)];
    }
    ++gets;
  }
  stop = true;
  swapper.join();

  INFO("swaps: " << swaps.load() << ", GETs: " << gets);
  REQUIRE(swaps.load() >= min_swaps);
  REQUIRE(gets >= min_gets);
  CHECK(swap_errors.load() == 0);
  CHECK(marked == 0);
  CHECK(wrong_data == 0);
  // Both sides of the race were seen, so the swaps did reach the server's lookups.
  CHECK(get_codes[errc::ok] > 0);
  CHECK(get_codes[errc::outside_root] > 0);
  // A GET is served (base.txt), refused as leaving the root, or refused as not_regular when
  // the swap falls between the server's two opens; nothing else.
  for (const auto& code_count : get_codes) {
    const errc code = code_count.first;
    CAPTURE(code);
    CHECK((code == errc::ok || code == errc::outside_root || code == errc::not_regular));
  }
  for (const auto& code_count : stat_codes) {
    const errc code = code_count.first;
    CAPTURE(code);
    CHECK((code == errc::ok || code == errc::outside_root || code == errc::not_regular));
  }
  for (const auto& code_count : list_codes) {
    const errc code = code_count.first;
    CAPTURE(code);
    CHECK((code == errc::ok || code == errc::outside_root || code == errc::not_directory));
  }
  CHECK(srv.counters().internal_errors.load() == 0);
  CHECK(outside_watch.drain().empty());
}

// Single cases: requests that would leave the root, and files that are not regular.

TEST_CASE("confinement: requests that would leave the root are refused") {
  temp_dir outside;
  outside.write("secret.txt", "secret");
  temp_dir root;
  root.write("file.txt", "inside");
  root.mkdir("a");
  root.mkdir("sub");
  root.symlink("/etc/passwd", "abs_passwd");
  root.symlink("../../../../../../../../etc/passwd", "rel_passwd");
  root.symlink((outside / "secret.txt").string(), "abs_secret");
  root.symlink("../" + outside.path().filename().string() + "/secret.txt", "rel_secret");
  root.symlink(outside.path().string(), "dir_out");
  root.symlink("../" + outside.path().filename().string(), "rel_dir_out");
  root.symlink("../..", "sub/escape");
  root.symlink("loop_b", "loop_a");
  root.symlink("loop_a", "loop_b");
  root.symlink("self", "self");
  running_server srv{root.path()};
  blocking_client cli{srv.endpoint()};
  const std::string out_name = outside.path().filename().string();
  // Without openat2 the server refuses every symlink as leaving the root.
  const errc loop = have_openat2() ? errc::symlink_loop : errc::outside_root;

  struct row {
    std::string path;
    errc code;
  };
  const std::vector<row> rows = {
      {"../x", errc::outside_root},
      {"..", errc::outside_root},
      {"/etc/passwd", errc::outside_root},
      {"/", errc::outside_root},
      {"a/../../x", errc::outside_root},
      {"a/../file.txt", errc::outside_root},  // harmless, but ".." is never accepted
      {"abs_passwd", errc::outside_root},
      {"rel_passwd", errc::outside_root},
      {"abs_secret", errc::outside_root},
      {"rel_secret", errc::outside_root},
      {"dir_out/secret.txt", errc::outside_root},
      {"rel_dir_out/secret.txt", errc::outside_root},
      {"sub/escape/" + out_name + "/secret.txt", errc::outside_root},
      {"loop_a", loop},
      {"self", loop},
      {"loop_a/x", loop},
  };
  for (const auto& r : rows) {
    CAPTURE(r.path);
    CHECK(cli.get(r.path, 0, 4096).error() == r.code);
    CHECK(cli.stat(r.path).error() == r.code);
  }
  SUBCASE("listing through a symlink that leaves the root") {
    for (const std::string path : {"dir_out", "rel_dir_out", "sub/escape", "../", "/tmp"}) {
      CAPTURE(path);
      CHECK(cli.list(path).error() == errc::outside_root);
    }
  }
  SUBCASE("the file inside is still served") {
    auto b = cli.get("file.txt", 0, 4096);
    REQUIRE(b);
    CHECK(b->data == "inside");
  }
  CHECK(srv.counters().internal_errors.load() == 0);
}

TEST_CASE("confinement: only regular files are read, and a FIFO is refused at once") {
  temp_dir root;
  root.write("file.txt", "regular");
  root.mkfifo("fifo");
  root.make_socket("sock");
  root.mkdir("dir");
  root.symlink("fifo", "fifo_link");
  root.symlink("dir", "dir_link");
  running_server srv{root.path()};
  blocking_client cli{srv.endpoint()};

  SUBCASE("a FIFO answers not_regular promptly, and is never opened for reading") {
    const auto started = std::chrono::steady_clock::now();
    CHECK(cli.get("fifo", 0, 4096).error() == errc::not_regular);
    CHECK(cli.get("fifo_link", 0, 4096).error() == errc::not_regular);
    const auto took = std::chrono::steady_clock::now() - started;
    CHECK(took < 1s);
    CHECK(cli.retransmits() == 0);
    // A non-blocking open for writing fails with ENXIO while no reader holds the FIFO open.
    errno = 0;
    const int w = ::open((root / "fifo").c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    CHECK(w < 0);
    CHECK(errno == ENXIO);
    if (w >= 0) ::close(w);
    auto st = cli.stat("fifo");
    REQUIRE(st);
    CHECK(st->type == entry_type::other);
    CHECK_FALSE(st->digest_ready);
  }
  SUBCASE("a UNIX socket") {
    CHECK(cli.get("sock", 0, 4096).error() == errc::not_regular);
    auto st = cli.stat("sock");
    REQUIRE(st);
    CHECK(st->type == entry_type::other);
  }
  SUBCASE("directories, the root included") {
    for (const std::string path : {"dir", "dir/", "dir_link", "", "."}) {
      CAPTURE(path);
      CHECK(cli.get(path, 0, 4096).error() == errc::not_regular);
    }
  }
  auto b = cli.get("file.txt", 0, 4096);
  REQUIRE(b);
  CHECK(b->data == "regular");
}

TEST_SUITE_END();
