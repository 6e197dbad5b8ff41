// Names shown on a terminal are quoted as GNU ls quotes them (gnulib's shell-escape style), so
// that a hostile server's names cannot drive the terminal (escape sequences, C1 controls, bytes
// that are not UTF-8) and can be pasted back into a shell. The expected strings follow gnulib's
// quotearg rules and its test-quotearg-simple.c: quoting opens at the first byte, an escape at
// the start gives ''$'...', and = is special.

#include <doctest/doctest.h>

#include <string>

#include "client/terminal_text.hpp"

using ferry::client::quote_for_terminal;
using namespace std::string_literals;

namespace {
std::string utf8(std::string_view name) { return quote_for_terminal(name, true); }
}  // namespace

TEST_CASE("plain names, UTF-8 included, are shown as they are") {
  CHECK(utf8("file.txt") == "file.txt");
  CHECK(utf8("a-b_c.d,f+g@h%i:j") == "a-b_c.d,f+g@h%i:j");
  CHECK(utf8("na\xc3\xafve") == "na\xc3\xafve");
  CHECK(utf8("a#b~]{}") == "a#b~]{}");
}

TEST_CASE("spaces and shell metacharacters are single-quoted") {
  CHECK(utf8("my file") == "'my file'");
  CHECK(utf8("caf\xc3\xa9 \xe2\x82\xac"s) == "'caf\xc3\xa9 \xe2\x82\xac'"s);
  CHECK(utf8("a=b") == "'a=b'");
  CHECK(utf8("a;rm") == "'a;rm'");
  CHECK(utf8("$HOME") == "'$HOME'");
  CHECK(utf8("#start") == "'#start'");
  CHECK(utf8("~user") == "'~user'");
  CHECK(utf8("{") == "'{'");
  CHECK(utf8("") == "''");
  // A single quote alone: double quotes; with anything else special: '\'' inside single ones.
  CHECK(utf8("it's") == "\"it's\"");
  CHECK(utf8("it's (1)") == "'it'\\''s (1)'");
  CHECK(utf8("it's $x") == "'it'\\''s $x'");
}

TEST_CASE("control characters and bytes that are not UTF-8 become $'...' escapes") {
  CHECK(utf8("a\nb") == "'a'$'\\n''b'");
  CHECK(utf8("a\n") == "'a'$'\\n'");
  // Set the window title, clear the screen: shown, not done.
  CHECK(utf8("\x1b]0;pwned\x07x") == "''$'\\033'']0;pwned'$'\\a''x'");
  CHECK(utf8("\x1b[2J") == "''$'\\033''[2J'");
  CHECK(utf8("tab\there") == "'tab'$'\\t''here'");
  CHECK(utf8("del\x7f") == "'del'$'\\177'");
  // A lone 0x9b is CSI on terminals that take 8-bit controls; U+009B is the same in UTF-8.
  CHECK(utf8("x\x9b"
             "2J") == "'x'$'\\233''2J'");
  CHECK(utf8("x\xc2\x9b") == "'x'$'\\302\\233'");
  // Overlong and surrogate encodings are not UTF-8.
  CHECK(utf8("\xc0\xaf") == "''$'\\300\\257'");
  CHECK(utf8("\xed\xa0\x80") == "''$'\\355\\240\\200'");
}

TEST_CASE("on a terminal that is not UTF-8, every byte above 0x7f is escaped") {
  // U+00DB in UTF-8 is c3 9b: on an 8-bit terminal its second byte is CSI.
  CHECK(quote_for_terminal("\xc3\x9b"
                           "2J",
                           false) == "''$'\\303\\233''2J'");
  CHECK(quote_for_terminal("plain", false) == "plain");
  CHECK(quote_for_terminal("\xc3\x9b"
                           "2J",
                           true) ==
        "\xc3\x9b"
        "2J");
}
