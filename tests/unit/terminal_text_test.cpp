// Names shown on a terminal are quoted as GNU ls quotes them, so that a hostile server's names
// cannot drive the terminal (escape sequences, C1 controls, bytes that are not UTF-8) and can
// be pasted back into a shell. The expected strings are what GNU ls 9.1 prints for the same
// names on a terminal.

#include <doctest/doctest.h>

#include <string>

#include "client/terminal_text.hpp"

using ferry::client::quote_for_terminal;
using namespace std::string_literals;

TEST_CASE("plain names, UTF-8 included, are shown as they are") {
  CHECK(quote_for_terminal("file.txt") == "file.txt");
  CHECK(quote_for_terminal("a-b_c.d=e,f+g@h%i") == "a-b_c.d=e,f+g@h%i");
  CHECK(quote_for_terminal("caf\xc3\xa9 \xe2\x82\xac"s) == "'caf\xc3\xa9 \xe2\x82\xac'"s);
  CHECK(quote_for_terminal("na\xc3\xafve") == "na\xc3\xafve");
  CHECK(quote_for_terminal("a#b~") == "a#b~");
}

TEST_CASE("spaces and shell metacharacters are single-quoted") {
  CHECK(quote_for_terminal("my file") == "'my file'");
  CHECK(quote_for_terminal("a;rm") == "'a;rm'");
  CHECK(quote_for_terminal("$HOME") == "'$HOME'");
  CHECK(quote_for_terminal("#start") == "'#start'");
  CHECK(quote_for_terminal("~user") == "'~user'");
  CHECK(quote_for_terminal("it's") == "\"it's\"");
  CHECK(quote_for_terminal("it's $x") == "'it'\\''s $x'");
}

TEST_CASE("control characters and bytes that are not UTF-8 become $'...' escapes") {
  CHECK(quote_for_terminal("a\nb") == "'a'$'\\n''b'");
  // Set the window title, clear the screen: shown, not done.
  CHECK(quote_for_terminal("\x1b]0;pwned\x07x") == "$'\\033'']0;pwned'$'\\a''x'");
  CHECK(quote_for_terminal("\x1b[2J") == "$'\\033''[2J'");
  CHECK(quote_for_terminal("tab\there") == "'tab'$'\\t''here'");
  CHECK(quote_for_terminal("del\x7f") == "'del'$'\\177'");
  // A lone 0x9b is CSI on terminals that take 8-bit controls; U+009B is the same in UTF-8.
  CHECK(quote_for_terminal("x\x9b" "2J") == "'x'$'\\233''2J'");
  CHECK(quote_for_terminal("x\xc2\x9b") == "'x'$'\\302\\233'");
  // Overlong and surrogate encodings are not UTF-8.
  CHECK(quote_for_terminal("\xc0\xaf") == "$'\\300\\257'");
  CHECK(quote_for_terminal("\xed\xa0\x80") == "$'\\355\\240\\200'");
}
