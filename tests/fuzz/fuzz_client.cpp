// libFuzzer target over the client's side of the protocol: a server on loopback whose answers
// the input scripts (silence, busy, token demands, error codes, blocks of another version, short
// or misplaced blocks, lying STATs, listing pages out of order or without end) drives a real
// fetch, then a real listing. Once the input is used up the server answers honestly, so each
// run ends in milliseconds. Whatever the answers: no crash, leak or undefined behaviour, every
// failure is a ferry::client::failure, a file appears under its final name only whole and
// right, and a listing prints no more than --max-entries names.

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/commands.hpp"
#include "client/connection.hpp"
#include "client/fetch.hpp"
#include "common/codec.hpp"
#include "common/digest.hpp"
#include "common/log.hpp"
#include "common/protocol.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

namespace proto = ferry::protocol;
namespace fs = std::filesystem;
using proto::errc;

constexpr std::uint32_t block = 512;
// Silences cost the client a retransmission timeout each; a few are enough to reach the code.
constexpr int max_silences = 3;

const std::string& content() {
  static const std::string c = [] {
    std::string s(9 * block + 77, '\0');
    for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>((i * 131 + 7) % 251);
    return s;
  }();
  return c;
}

proto::stat_reply true_stat() {
  proto::stat_reply st;
  st.type = proto::entry_type::file;
  st.size = content().size();
  st.version = {1, 2, st.size, 3, 4};
  st.max_block = block;
  st.digest_ready = true;
  ferry::digest_state d;
  d.update(std::as_bytes(std::span{content()}));
  st.digest = d.finish();
  return st;
}

// The input, read a byte at a time by the server thread; zeros once it is used up.
class script {
 public:
  explicit script(std::span<const std::uint8_t> in) : in_{in} {}
  [[nodiscard]] bool more() const noexcept { return at_ < in_.size(); }
  std::uint8_t byte() noexcept { return more() ? in_[at_++] : 0; }
  std::uint64_t u64() noexcept {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = v << 8 | byte();
    return v;
  }
  std::string text(std::size_t most) {
    std::string s(std::min<std::size_t>(byte() % (most + 1), in_.size() - at_), '\0');
    for (auto& c : s) c = static_cast<char>(byte());
    return s;
  }

 private:
  std::span<const std::uint8_t> in_;
  std::size_t at_ = 0;
};

proto::data_reply honest_block(std::uint64_t offset) {
  proto::data_reply d;
  d.offset = offset;
  d.version = true_stat().version;
  const auto& c = content();
  const auto len = offset < c.size() ? std::min<std::uint64_t>(block, c.size() - offset) : 0;
  d.payload =
      reinterpret_cast<const std::byte*>(c.data()) + std::min<std::uint64_t>(offset, c.size());
  d.length = static_cast<std::uint32_t>(len);
  d.eof = offset + len >= c.size();
  return d;
}

// The answer to one request (one block of a GET-RUN), as the input says; nothing for silence.
std::optional<proto::reply> answer(script& s, int& silences, const proto::request& req,
                                   std::uint64_t offset, std::string& list_cursor_names) {
  const bool scripted = s.more();
  const auto kind = s.byte() % 10;
  if (const auto* l = std::get_if<proto::list_request>(&req)) {
    if (!scripted) return proto::list_reply{{{"a", proto::entry_type::file, 1, 0}}, true};
    proto::list_reply page;
    const unsigned n = s.byte() % 40u;
    for (unsigned i = 0; i < n; ++i) {
      // Mostly rising names after the cursor, sometimes anything.
      auto name = (s.byte() % 8 == 0) ? s.text(20) : l->cursor + static_cast<char>('a' + i % 26);
      list_cursor_names = name;
      page.entries.push_back({name, static_cast<proto::entry_type>(s.byte() % 5), s.u64(),
                              static_cast<std::int64_t>(s.u64())});
    }
    page.end = kind == 0;
    return page;
  }
  const bool is_stat = std::holds_alternative<proto::stat_request>(req);
  // A block in answer to a STAT only costs the client a retransmission timeout.
  if (!scripted || (is_stat && kind >= 5))
    return is_stat ? proto::reply{true_stat()} : honest_block(offset);
  switch (kind) {
    case 0:
      if (silences++ < max_silences) return std::nullopt;
      return proto::error_reply{errc::busy, ""};
    case 1:
      return proto::error_reply{errc::busy, ""};
    case 2: {
      proto::token_reply t;
      for (auto& b : t.token) b = static_cast<std::byte>(s.byte());
      return t;
    }
    case 3:
      return proto::error_reply{static_cast<errc>(s.byte() % 16), s.text(40)};
    case 4: {
      auto st = true_stat();
      st.size = s.byte() % 2 ? s.u64() : st.size + s.byte();
      st.version.size = st.size;
      st.version.mtime_ns += s.byte() % 2;
      st.max_block = static_cast<std::uint32_t>(s.u64());
      st.digest_ready = s.byte() % 4 != 0;
      st.type = static_cast<proto::entry_type>(s.byte() % 5);
      return st;
    }
    case 5: {
      auto d = honest_block(offset);
      d.version.mtime_ns += 1 + s.byte();
      return d;
    }
    case 6: {
      auto d = honest_block(offset);
      d.length = std::min<std::uint32_t>(d.length, s.byte());
      d.eof = s.byte() % 2;
      return d;
    }
    case 7: {
      auto d = honest_block(offset);
      d.offset = s.byte() % 2 ? s.u64() : offset + s.byte();
      return d;
    }
    default:
      return honest_block(offset);
  }
}

// The scripted server: its own socket and thread, answering until it is destroyed.
class server {
 public:
  explicit server(std::span<const std::uint8_t> in) : script_{in} {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    wake_ = ::eventfd(0, EFD_CLOEXEC);
    FERRY_FUZZ_CHECK(fd_ >= 0 && wake_ >= 0, "sockets");
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    FERRY_FUZZ_CHECK(::bind(fd_, reinterpret_cast<const sockaddr*>(&local), sizeof local) == 0,
                     "bind");
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    FERRY_FUZZ_CHECK(::getsockname(fd_, reinterpret_cast<sockaddr*>(&bound), &len) == 0, "name");
    endpoint_ = ferry::endpoint::from(reinterpret_cast<const sockaddr*>(&bound));
    thread_ = std::thread{[this] { run(); }};
  }
  ~server() {
    const std::uint64_t one = 1;
    (void)::write(wake_, &one, sizeof one);
    thread_.join();
    ::close(fd_);
    ::close(wake_);
  }
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  [[nodiscard]] const ferry::endpoint& endpoint() const noexcept { return endpoint_; }

 private:
  void run() noexcept {
    std::vector<std::byte> in(65536), out(65536);
    int silences = 0;
    std::string last_name;
    for (;;) {
      pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents != 0) return;
      sockaddr_storage from{};
      socklen_t from_len = sizeof from;
      const auto n = ::recvfrom(fd_, in.data(), in.size(), MSG_DONTWAIT,
                                reinterpret_cast<sockaddr*>(&from), &from_len);
      if (n <= 0) continue;
      const auto req = ferry::codec::decode_request({in.data(), static_cast<std::size_t>(n)});
      if (!req) continue;
      const auto* g = std::get_if<proto::get_request>(&req->body);
      const unsigned count = g != nullptr ? std::max<unsigned>(g->count, 1) : 1;
      for (unsigned i = 0; i < count; ++i) {
        const auto offset = g != nullptr ? g->offset + std::uint64_t{i} * g->block_size : 0;
        auto reply = answer(script_, silences, req->body, offset, last_name);
        if (!reply) continue;
        auto len = ferry::codec::encode_reply(out, req->hdr.request_id + i, *reply);
        if (!len) continue;
        (void)::sendto(fd_, out.data(), *len, MSG_DONTWAIT,
                       reinterpret_cast<const sockaddr*>(&from), from_len);
      }
    }
  }

  script script_;
  int fd_ = -1;
  int wake_ = -1;
  ferry::endpoint endpoint_;
  std::thread thread_;
};

std::string slurp(const fs::path& p) {
  std::ifstream f{p, std::ios::binary};
  return {std::istreambuf_iterator<char>{f}, {}};
}

const fs::path& work_dir() {
  static const fs::path d = [] {
    auto p = fs::temp_directory_path() / ("ferry-fuzz-client." + std::to_string(::getpid()));
    fs::create_directories(p);
    return p;
  }();
  return d;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = [] {
    ferry::log::set_level(ferry::log::level::error);
    return true;
  }();
  (void)quiet;
  const auto out = work_dir() / "f.bin";
  std::error_code ec;
  for (const auto* suffix : {"", ".part", ".part.state"}) fs::remove(out.string() + suffix, ec);

  // The input's first half scripts the fetch, the second the listing.
  const std::span<const std::uint8_t> in{data, size};
  {
    server srv{in.first(size / 2)};
    ferry::client::fetch_options opt;
    opt.block_size = block;
    opt.timeout = std::chrono::milliseconds{300};
    try {
      ferry::client::connection conn{srv.endpoint()};
      (void)ferry::client::fetcher{conn, "f.bin", out, opt}.run();
    } catch (const ferry::client::failure&) {
      // A clear failure is a right answer to a hostile server.
    }
    if (fs::exists(out))
      FERRY_FUZZ_CHECK(slurp(out) == content(), "a wrong file under the final name");
  }
  {
    server srv{in.subspan(size / 2)};
    ferry::client::command_options o;
    o.address = to_string(srv.endpoint());
    o.timeout_s = 0.3;
    o.max_entries = 100;
    o.json = size % 2 == 0;
    // Quoted as on a terminal, so that a name holds no newline and each line is one name.
    o.terminal = true;
    std::ostringstream listing;
    try {
      ferry::client::run_ls(o, size % 3 == 0, listing);
    } catch (const ferry::client::failure&) {
    }
    const auto text = listing.str();
    std::size_t names = 0;
    if (o.json) {
      // A quote inside a name is escaped, so this opens only entries.
      for (auto at = text.find("{\"name\":"); at != std::string::npos;
           at = text.find("{\"name\":", at + 1))
        ++names;
    } else {
      names = static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
    }
    FERRY_FUZZ_CHECK(names <= o.max_entries, "more names printed than --max-entries");
  }
  return 0;
}
