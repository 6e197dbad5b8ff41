// Writes the fuzzers' seed corpus: valid datagrams encoded by ferry::codec, one file each.
// Usage: make_corpus DIR   (writes DIR/decode/*.bin and DIR/server/*.bin)
// scripts/fuzz.sh --regen-corpus runs it on tests/fuzz/corpus. The output is the same on every
// run, so the committed files change only when the encoding does.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

namespace proto = ferry::protocol;
namespace fs = std::filesystem;
namespace fz = ferry::fuzz;

std::uint64_t next_id = 0x0102030405060708;

void save(const fs::path& dir, const std::string& name, std::span<const std::byte> bytes) {
  fs::create_directories(dir);
  std::ofstream out{dir / (name + ".bin"), std::ios::binary | std::ios::trunc};
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  FERRY_FUZZ_CHECK(out.good(), "cannot write a seed");
}

// One message encoded with the next request id.
template <typename Body>
std::vector<std::byte> encoded(const Body& body) {
  std::vector<std::byte> out(proto::max_datagram);
  const auto n = [&] {
    if constexpr (std::is_same_v<Body, proto::request>)
      return ferry::codec::encode_request(out, next_id++, body);
    else
      return ferry::codec::encode_reply(out, next_id++, body);
  }();
  FERRY_FUZZ_CHECK(n, "a seed does not encode");
  out.resize(*n);
  return out;
}
std::vector<std::byte> request(const proto::request& body) { return encoded(body); }
std::vector<std::byte> reply(const proto::reply& body) { return encoded(body); }

std::string str(std::string_view s) { return std::string{s}; }

void write_decode_seeds(const fs::path& dir) {
  save(dir, "list_request", request(proto::list_request{"dir/sub", "b.txt"}));
  save(dir, "stat_request", request(proto::stat_request{"a/b c/file.iso"}));
  save(dir, "get_request", request(proto::get_request{"big.bin", 65024, 65024}));
  save(dir, "get_run_request", request(proto::get_request{"big.bin", 65024, 1390, 32}));

  proto::list_reply page;
  page.entries = {{"a.txt", proto::entry_type::file, 12, 1'700'000'000'000'000'000, 0644, ""},
                  {"sub", proto::entry_type::dir, 0, 1'700'000'000'000'000'001, 0755, ""},
                  {"link", proto::entry_type::symlink, 7, -1, 0777, "sub/a.txt"}};
  save(dir, "list_reply", reply(page));
  save(dir, "list_reply_end", reply(proto::list_reply{{}, true}));

  proto::stat_reply st;
  st.type = proto::entry_type::file;
  st.size = 3000;
  st.mtime_ns = 1'700'000'000'123'456'789;
  st.mode = 0640;
  st.version = {2049, 1234567, 3000, st.mtime_ns, st.mtime_ns + 1};
  st.max_block = proto::max_block_size;
  st.digest_ready = true;
  st.digest = {0x0123456789abcdef, 0xfedcba9876543210};
  save(dir, "stat_reply", reply(st));

  const std::string text = "hello, ferry\n";
  proto::data_reply block;
  block.offset = 0;
  block.length = static_cast<std::uint32_t>(text.size());
  block.eof = true;
  block.payload = reinterpret_cast<const std::byte*>(text.data());
  block.version = {2049, 42, text.size(), 1, 2};
  save(dir, "data_reply", reply(block));
  block.offset = text.size();
  block.length = 0;
  block.payload = nullptr;
  save(dir, "data_reply_empty_eof", reply(block));

  save(dir, "error_reply", reply(proto::error_reply{proto::errc::not_found, "not found"}));
  proto::token_reply token;
  for (std::size_t i = 0; i < token.token.size(); ++i) token.token[i] = std::byte(0x30 + i);
  save(dir, "token_reply", reply(token));
  std::vector<std::byte> with_token(proto::max_request_size);
  auto n =
      ferry::codec::encode_request(with_token, 7, proto::get_request{"f", 0, 512}, &token.token);
  if (!n) throw std::logic_error{"a request with a token did not encode"};
  with_token.resize(*n);
  save(dir, "get_with_token", with_token);
}

// Requests for the tree fuzz_server serves, so the seeds reach files, directories, symlinks
// and the FIFO, plus a few datagrams the server must not answer with data.
void write_server_seeds(const fs::path& dir) {
  save(dir, "list_root", request(proto::list_request{"", ""}));
  save(dir, "list_sub", request(proto::list_request{str(fz::sub_dir), ""}));
  save(dir, "list_after_cursor", request(proto::list_request{"", str(fz::empty_file)}));
  save(dir, "list_file", request(proto::list_request{str(fz::hello_file), ""}));
  for (const auto name : fz::tree_names) {
    std::string seed{name};
    for (auto& c : seed)
      if (c == '/' || c == '.') c = '_';
    save(dir, "stat_" + seed, request(proto::stat_request{str(name)}));
    save(dir, "get_" + seed, request(proto::get_request{str(name), 0, 512}));
  }
  save(dir, "get_block_middle",
       request(proto::get_request{str(fz::block_file), 1024, proto::max_block_size}));
  save(dir, "get_at_end",
       request(proto::get_request{str(fz::hello_file), fz::hello_text.size(), 512}));
  save(dir, "get_past_end", request(proto::get_request{str(fz::hello_file), 1 << 20, 512}));
  save(dir, "get_run_past_end",
       request(proto::get_request{str(fz::hello_file), 0, 512, proto::max_run_blocks}));
  save(dir, "get_dotdot", request(proto::get_request{"sub/../../outside.txt", 0, 512}));

  auto other_version = request(proto::stat_request{str(fz::hello_file)});
  other_version[4] = std::byte{2};
  save(dir, "stat_other_version", other_version);
  save(dir, "reply_error", reply(proto::error_reply{proto::errc::busy, "busy"}));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus DIR\n");
    return 2;
  }
  const fs::path dir{argv[1]};
  write_decode_seeds(dir / "decode");
  write_server_seeds(dir / "server");
  return 0;
}
