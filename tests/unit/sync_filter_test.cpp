// Unit tests for ferry sync's path rules: the glob matcher, --exclude/--include in order, and
// which symlink targets stay inside the sync.

#include "client/sync_filter.hpp"

#include <doctest/doctest.h>

#include <string>

namespace {

using namespace ferry::client;

TEST_CASE("glob_match: '*' and '?' stop at '/', '**' does not") {
  CHECK(glob_match("*.tmp", "a.tmp"));
  CHECK(glob_match("*.tmp", ".tmp"));
  CHECK_FALSE(glob_match("*.tmp", "a.tmp.x"));
  CHECK_FALSE(glob_match("*.tmp", "d/a.tmp"));
  CHECK(glob_match("**.tmp", "d/e/a.tmp"));
  CHECK(glob_match("d/*", "d/x"));
  CHECK_FALSE(glob_match("d/*", "d/x/y"));
  CHECK(glob_match("d/**", "d/x/y"));
  CHECK(glob_match("a?c", "abc"));
  CHECK_FALSE(glob_match("a?c", "a/c"));
  CHECK_FALSE(glob_match("a?c", "ac"));
  CHECK(glob_match("", ""));
  CHECK_FALSE(glob_match("", "a"));
  CHECK(glob_match("*", ""));
  SUBCASE("a '*' that cannot take a '/' gives way to an earlier '**'") {
    CHECK(glob_match("**/x*/y", "a/x1/z/x2/y"));
    CHECK(glob_match("src/**/*.c", "src/a/b/main.c"));
    CHECK_FALSE(glob_match("src/**/*.c", "src/main.c"));  // '**' sits between two '/'
    CHECK_FALSE(glob_match("src/**/*.c", "src/a/main.h"));
  }
  SUBCASE("classes and escapes") {
    CHECK(glob_match("f[0-9].bin", "f7.bin"));
    CHECK_FALSE(glob_match("f[0-9].bin", "fx.bin"));
    CHECK(glob_match("f[!0-9]", "fx"));
    CHECK(glob_match("f[^0-9]", "fx"));
    CHECK_FALSE(glob_match("f[!0-9]", "f1"));
    CHECK_FALSE(glob_match("a[/]b", "a/b"));  // a class never matches '/'
    CHECK(glob_match("[]]", "]"));
    CHECK(glob_match("a[", "a["));  // never closed: an ordinary character
    CHECK(glob_match("\\*", "*"));
    CHECK_FALSE(glob_match("\\*", "x"));
  }
  SUBCASE("many stars stay fast") {
    CHECK_FALSE(glob_match("*a*a*a*a*a*a*a*a*b", std::string(200, 'a')));
    CHECK_FALSE(glob_match("**a**a**a**a**a**b", std::string(200, 'a')));
  }
}

TEST_CASE("path_filter: first match wins; no match is included") {
  path_filter f;
  CHECK(f.empty());
  CHECK_FALSE(f.excluded("a", false));
  SUBCASE("a pattern without '/' matches the name at any depth") {
    f.add(false, "*.tmp");
    CHECK(f.excluded("x.tmp", false));
    CHECK(f.excluded("d/e/x.tmp", false));
    CHECK_FALSE(f.excluded("d/x.tmp.keep", false));
  }
  SUBCASE("a pattern with '/' is anchored at the root, a leading '/' or not") {
    f.add(false, "d/e");
    f.add(false, "/top");
    CHECK(f.excluded("d/e", true));
    CHECK_FALSE(f.excluded("x/d/e", true));
    CHECK(f.excluded("top", false));
    CHECK_FALSE(f.excluded("d/top", false));
  }
  SUBCASE("a trailing '/' matches only directories") {
    f.add(false, "cache/");
    CHECK(f.excluded("cache", true));
    CHECK(f.excluded("a/cache", true));
    CHECK_FALSE(f.excluded("cache", false));
  }
  SUBCASE("order decides: an include before an exclude keeps what both match") {
    f.add(true, "keep.tmp");
    f.add(false, "*.tmp");
    CHECK_FALSE(f.excluded("keep.tmp", false));
    CHECK(f.excluded("other.tmp", false));
  }
  SUBCASE("an include after the exclude it overlaps comes too late") {
    f.add(false, "*.tmp");
    f.add(true, "keep.tmp");
    CHECK(f.excluded("keep.tmp", false));
  }
  SUBCASE("include some, exclude the rest") {
    f.add(true, "*/");
    f.add(true, "*.c");
    f.add(false, "*");
    CHECK_FALSE(f.excluded("src", true));
    CHECK_FALSE(f.excluded("src/a.c", false));
    CHECK(f.excluded("src/a.h", false));
  }
}

TEST_CASE("link_stays_inside: judged by the target's text, as rsync's --safe-links") {
  CHECK(link_stays_inside("l", "f"));
  CHECK(link_stays_inside("l", "d/f"));
  CHECK(link_stays_inside("d/l", "../f"));
  CHECK(link_stays_inside("d/e/l", "../../f"));
  CHECK(link_stays_inside("d/l", "./.././f"));
  CHECK(link_stays_inside("l", "."));
  CHECK_FALSE(link_stays_inside("l", "../f"));
  CHECK_FALSE(link_stays_inside("d/l", "../../f"));
  CHECK_FALSE(link_stays_inside("d/l", "x/../../../f"));
  CHECK_FALSE(link_stays_inside("d/l", "../../d/f"));  // climbs out on the way, even if back
  CHECK_FALSE(link_stays_inside("l", "/etc/passwd"));
  // A ".." after a name: the name may be a link ("y" -> "."), so the text proves nothing.
  CHECK_FALSE(link_stays_inside("l", "y/y/y/.."));
  CHECK_FALSE(link_stays_inside("d/l", "x/../f"));
  CHECK_FALSE(link_stays_inside("l", ""));
}

}  // namespace
