// Unit tests for the decisions of ferry sync: what to do per remote file given what is at its
// local name, which names from a listing are accepted, the itemized change strings, and which
// local names --delete keeps.

#include "client/sync_plan.hpp"

#include "client/fetch.hpp"

#include <doctest/doctest.h>

#include <set>
#include <string>

namespace {

namespace proto = ferry::protocol;
using namespace ferry::client;

const proto::list_entry remote{"f", proto::entry_type::file, 100, 5'000'000'001};

TEST_CASE("decide_file: the quick check, then the digest") {
  SUBCASE("nothing local: fetch") { CHECK(decide_file(remote, {}) == file_action::fetch_new); }
  SUBCASE("same size and mtime to the nanosecond: skip") {
    CHECK(decide_file(remote, {local_kind::file, 100, 5'000'000'001}) == file_action::skip);
  }
  SUBCASE("same size, mtime differs by a nanosecond: compare digests") {
    CHECK(decide_file(remote, {local_kind::file, 100, 5'000'000'000}) == file_action::check_digest);
  }
  SUBCASE("size differs: fetch, whatever the mtime") {
    CHECK(decide_file(remote, {local_kind::file, 99, 5'000'000'001}) == file_action::fetch_changed);
    CHECK(decide_file(remote, {local_kind::file, 0, 0}) == file_action::fetch_changed);
  }
  SUBCASE("a directory, symlink or special file in the way: conflict, never replaced") {
    for (auto k : {local_kind::dir, local_kind::symlink, local_kind::other})
      CHECK(decide_file(remote, {k, 100, 5'000'000'001}) == file_action::conflict);
  }
}

TEST_CASE("safe_entry_name: one component that stays in its directory") {
  for (const char* ok : {"a", "a.b", "..a", "a..", "...", " ", "-x", ".hidden"})
    CHECK(ferry::protocol::valid_entry_name(ok));
  for (const char* bad : {"", ".", "..", "a/b", "/", "../x", "a/"})
    CHECK_FALSE(ferry::protocol::valid_entry_name(bad));
  CHECK_FALSE(ferry::protocol::valid_entry_name(std::string{"a\0b", 3}));
}

TEST_CASE("decide_file with --checksum: the same size is always compared by digest") {
  CHECK(decide_file(remote, {local_kind::file, 100, 5'000'000'001}, true) ==
        file_action::check_digest);
  CHECK(decide_file(remote, {local_kind::file, 100, 5'000'000'000}, true) ==
        file_action::check_digest);
  CHECK(decide_file(remote, {local_kind::file, 99, 5'000'000'001}, true) ==
        file_action::fetch_changed);
  CHECK(decide_file(remote, {}, true) == file_action::fetch_new);
  CHECK(decide_file(remote, {local_kind::symlink, 100, 5'000'000'001}, true) ==
        file_action::conflict);
}

TEST_CASE("itemize: permissions, directories and links") {
  CHECK(itemize_file(false, false, false, false, true) == ".f...p.....");
  CHECK(itemize_file(false, true, true, true, true) == ">f.stp.....");
  CHECK(itemize_dir(true, false) == ".d..t......");
  CHECK(itemize_dir(true, true) == ".d..tp.....");
  CHECK(itemize_link(true) == "cL+++++++++");
  CHECK(itemize_link(false) == "cLc........");
}

TEST_CASE("local_mode: the server's permission bits, never setuid, setgid or sticky") {
  CHECK(ferry::client::local_mode(0644) == 0644);
  CHECK(ferry::client::local_mode(04755) == 0755);
  CHECK(ferry::client::local_mode(02750) == 0750);
  CHECK(ferry::client::local_mode(01777) == 0777);
  CHECK(ferry::client::local_mode(07000) == 0);
}

TEST_CASE("itemize_file: rsync's YXcstpoguax strings") {
  CHECK(itemize_file(true, true, true, true) == ">f+++++++++");
  CHECK(itemize_file(false, true, true, true) == ">f.st......");
  CHECK(itemize_file(false, true, true, false) == ">f.s.......");
  CHECK(itemize_file(false, true, false, true) == ">f..t......");
  CHECK(itemize_file(false, false, false, true) == ".f..t......");
  CHECK(itemize_new_dir == "cd+++++++++");
  CHECK(itemize_deleting.size() == 11);
}

TEST_CASE("kept_on_delete: the partial files of files still on the server") {
  const std::set<std::string> files{"a.bin", "b"};
  CHECK(kept_on_delete("a.bin.part", files));
  CHECK(kept_on_delete("a.bin.part.state", files));
  CHECK(kept_on_delete("b.part", files));
  CHECK_FALSE(kept_on_delete("c.part", files));
  CHECK_FALSE(kept_on_delete("a.bin", files));  // the file itself is kept by name, not here
  CHECK_FALSE(kept_on_delete(".part", files));
  CHECK_FALSE(kept_on_delete("a.bin.part.state.part", files));
  CHECK_FALSE(kept_on_delete("a.bin.state", files));
}

}  // namespace
