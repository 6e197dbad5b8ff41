// Protocol version 2 against a real server: LIST and STAT carry each entry's permission bits,
// setuid and the like included, and LIST a symlink's target, up to max_link_target bytes.

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/protocol.hpp"
#include "support/running_server.hpp"

namespace proto = ferry::protocol;
using ferry::protocol::entry_type;
using namespace ferry::test;

namespace {

const proto::list_entry& entry(const std::vector<proto::list_entry>& es, const std::string& n) {
  const auto it = std::find_if(es.begin(), es.end(), [&](const auto& e) { return e.name == n; });
  REQUIRE(it != es.end());
  return *it;
}

}  // namespace

TEST_SUITE_BEGIN("server");

TEST_CASE("LIST and STAT carry the permission bits; LIST carries a symlink's target") {
  temp_dir root;
  root.write("plain", "x");
  root.write("suid", "x");
  root.mkdir("dir");
  root.symlink("plain", "near");
  root.symlink("../../outside/of/it", "far");
  root.symlink(std::string(proto::max_link_target, 'a'), "longest");
  root.symlink(std::string(proto::max_link_target + 1, 'a'), "too-long");
  REQUIRE(::chmod((root / "plain").c_str(), 0640) == 0);
  REQUIRE(::chmod((root / "suid").c_str(), 04751) == 0);
  REQUIRE(::chmod((root / "dir").c_str(), 02705) == 0);
  running_server srv{root.path()};
  blocking_client cli{srv.endpoint()};

  // Every page, in order (targets of 512 bytes take two pages).
  std::vector<proto::list_entry> es;
  for (int pages = 0; pages < 10; ++pages) {
    auto page = cli.list("", es.empty() ? std::string{} : es.back().name);
    REQUIRE(page);
    es.insert(es.end(), page->entries.begin(), page->entries.end());
    if (page->end) break;
  }
  CHECK(es.size() == 7);
  CHECK(entry(es, "plain").mode == 0640);
  CHECK(entry(es, "suid").mode == 04751);
  CHECK(entry(es, "dir").mode == 02705);
  CHECK(entry(es, "plain").target.empty());
  CHECK(entry(es, "near").type == entry_type::symlink);
  CHECK(entry(es, "near").target == "plain");
  // The server reports a target as it is: judging it is the client's business.
  CHECK(entry(es, "far").target == "../../outside/of/it");
  CHECK(entry(es, "longest").target == std::string(proto::max_link_target, 'a'));
  CHECK(entry(es, "too-long").type == entry_type::symlink);
  CHECK(entry(es, "too-long").target.empty());

  auto st = cli.stat("suid");
  REQUIRE(st);
  CHECK(st->mode == 04751);
  st = cli.stat("dir");
  REQUIRE(st);
  CHECK(st->mode == 02705);
}

TEST_CASE("pages of long symlink targets stay within a small reply") {
  temp_dir root;
  for (int i = 0; i < 12; ++i)
    root.symlink(std::string(proto::max_link_target, static_cast<char>('a' + i)),
                 std::string(proto::max_name, static_cast<char>('a' + i)));
  running_server srv{root.path()};
  blocking_client cli{srv.endpoint()};
  std::string cursor;
  std::size_t seen = 0;
  for (int pages = 0; pages < 20; ++pages) {
    auto page = cli.list("", cursor);
    REQUIRE(page);
    CHECK(cli.last_reply_size() <= proto::max_small_reply);
    CHECK(page->entries.size() >= 1);
    for (const auto& e : page->entries) {
      CHECK(e.target == std::string(proto::max_link_target, e.name.front()));
      ++seen;
      cursor = e.name;
    }
    if (page->end) break;
  }
  CHECK(seen == 12);
}

TEST_SUITE_END();
