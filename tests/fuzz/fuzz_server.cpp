// libFuzzer target over the server's request handler. Each input is one datagram, handed to
// udp_server::handle_datagram() as if a client had sent it; the loop then runs until the pool
// jobs it started have answered. The answers go to a socket of this harness, and beyond what
// the sanitizers catch, every input is checked against what PROTOCOL.md promises a client:
//
//   - at most one reply to any datagram, and none to garbage, to a damaged datagram, to an
//     oversized one or to a reply-typed one;
//   - exactly one reply to a request that decodes, of the type that answers it (or an error);
//     to any other datagram of ours at most an error;
//   - every reply decodes, echoes the request id, and is at most 1200 bytes unless it is a
//     data block; a block starts at the offset asked and is no longer than asked;
//   - no reply ever carries the bytes of the file outside the root that the symlinks aim at;
//   - every 4096 inputs, and at exit, nothing in the served tree has changed.
//
// The tree is made once, in $TMPDIR (or /tmp), and removed at exit.

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/address.hpp"
#include "common/codec.hpp"
#include "common/envelope.hpp"
#include "common/log.hpp"
#include "common/protocol.hpp"
#include "server/udp_server.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

namespace proto = ferry::protocol;
namespace codec = ferry::codec;
namespace fs = std::filesystem;
using proto::errc;
namespace fz = ferry::fuzz;

// Setup must work; a failure here is the machine's, not the server's, but there is nothing to
// fuzz without it.
void must(bool ok, std::string_view what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz_server setup: %.*s: %s\n", static_cast<int>(what.size()), what.data(),
               std::strerror(errno));
  std::abort();
}

void write_file(const fs::path& p, std::string_view content) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  must(fd >= 0, p.string());
  must(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()),
       p.string());
  ::close(fd);
}

// Makes the served tree under a fresh directory `base`: base/root is served, and
// base/outside.txt is what the escaping symlinks point at.
fs::path make_tree() {
  std::string base = (fs::temp_directory_path() / "ferry-fuzz-XXXXXX").string();
  must(::mkdtemp(base.data()) != nullptr, "mkdtemp");
  const fs::path root = fs::path{base} / "root";
  const fs::path outside = fs::path{base} / fz::outside_file;
  must(::mkdir(root.c_str(), 0755) == 0, "mkdir root");
  write_file(outside, fz::outside_secret);
  write_file(root / fz::hello_file, fz::hello_text);
  write_file(root / fz::empty_file, "");
  std::string block(fz::block_file_size, '\0');
  for (std::size_t i = 0; i < block.size(); ++i) block[i] = static_cast<char>('a' + i % 26);
  write_file(root / fz::block_file, block);
  must(::mkdir((root / fz::sub_dir).c_str(), 0755) == 0, "mkdir sub");
  write_file(root / fz::inner_file, "inner\n");
  const auto link = [&](const std::string& target, std::string_view name) {
    must(::symlink(target.c_str(), (root / name).c_str()) == 0, name);
  };
  link(std::string{fz::inner_file}, fz::inner_link);
  link("../hello.txt", fz::up_link);
  link("../" + std::string{fz::outside_file}, fz::escape_link);
  link(outside.string(), fz::absolute_link);
  link(std::string{fz::loop_link}, fz::loop_link);
  must(::mkfifo((root / fz::fifo).c_str(), 0644) == 0, "mkfifo");
  return base;
}

// Everything about the tree a write would change (access times aside), one line per name.
std::vector<std::string> describe_tree(const fs::path& base) {
  std::vector<std::string> out;
  const auto describe = [&](const fs::path& p) {
    struct stat st {};
    must(::lstat(p.c_str(), &st) == 0, p.string());
    out.push_back(p.string() + " " + std::to_string(st.st_mode) + " " + std::to_string(st.st_size) +
                  " " + std::to_string(st.st_ino) + " " + std::to_string(st.st_mtim.tv_sec) + "." +
                  std::to_string(st.st_mtim.tv_nsec) + " " + std::to_string(st.st_ctim.tv_sec) +
                  "." + std::to_string(st.st_ctim.tv_nsec));
  };
  describe(base / "root");
  describe(base / fz::outside_file);
  for (const auto name : fz::tree_names) describe(base / "root" / name);
  return out;
}

ferry::server::config make_config(const fs::path& root) {
  ferry::server::config cfg;
  cfg.root = root.string();
  cfg.bind = "127.0.0.1";
  cfg.port = 0;
  // A fuzzer cannot forge an address-validation token, and with the check on every input would
  // only ever draw a token reply; waived, inputs reach the request handlers. The token path is
  // covered by the codec target (tokens in headers) and the integration tests.
  cfg.validate_addresses = false;
  return cfg;
}

// How many replies PROTOCOL.md allows for a datagram.
enum class answer {
  none,           // garbage, damaged, oversized or reply-typed: no reply at all
  error_at_most,  // ferry's header, but not a request that decodes: at most an error
  exactly_one,    // a request that decodes: one reply, of its type or an error (one a block
                  // for a GET-RUN)
};

answer expected_answer(std::span<const std::byte> wire,
                       const ferry::result<codec::decoded_request>& req) {
  // The pre-shared key's flags, at a server without a key: a datagram sealed with a MAC draws
  // at most an authentication_required error, an encrypted one nothing (PROTOCOL.md).
  switch (ferry::envelope::mode_of(wire)) {
    case ferry::envelope::mode::mac:
      return answer::error_at_most;
    case ferry::envelope::mode::aead:
      return answer::none;
    case ferry::envelope::mode::plain:
      break;
  }
  if (req) return answer::exactly_one;
  if (req.error() == errc::corrupt || wire.size() > proto::max_request_size) return answer::none;
  const auto hdr = codec::decode_header(wire);
  if (!hdr && hdr.error() == errc::malformed) return answer::none;
  if (!proto::is_request_type(std::to_integer<std::uint8_t>(wire[5]))) return answer::none;
  return answer::error_at_most;
}

bool contains(std::span<const std::byte> hay, std::string_view needle) {
  const auto n = std::as_bytes(std::span{needle});
  return std::search(hay.begin(), hay.end(), n.begin(), n.end()) != hay.end();
}

class harness {
 public:
  harness() : base_{make_tree()} {
    ferry::log::set_level(ferry::log::level::error);
    tree_before_ = describe_tree(base_);

    // The replies come here: a socket of our own on loopback, read without blocking.
    sock_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    must(sock_ >= 0, "socket");
    const int buffer = 4 << 20;
    if (::setsockopt(sock_, SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof buffer) != 0)
      (void)::setsockopt(sock_, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    must(::bind(sock_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0, "bind");
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    must(::getsockname(sock_, reinterpret_cast<sockaddr*>(&ss), &len) == 0, "getsockname");
    peer_ = ferry::endpoint::from(reinterpret_cast<const sockaddr*>(&ss));

    must(uv_loop_init(&loop_) == 0, "uv_loop_init");
    server_ = std::make_unique<ferry::server::udp_server>(&loop_, make_config(base_ / "root"));
  }

  harness(const harness&) = delete;
  harness& operator=(const harness&) = delete;

  // Stops the server as running_server does, checks the tree one last time and removes it.
  ~harness() {
    // How deep the inputs went, for whoever tunes the harness or the seeds.
    const auto& s = server_->counters();
    std::fprintf(stderr,
                 "fuzz_server: %llu inputs: %llu LIST, %llu STAT, %llu GET; %llu replies, "
                 "%llu errors; %llu dropped malformed, %llu corrupt\n",
                 static_cast<unsigned long long>(inputs_),
                 static_cast<unsigned long long>(s.list_requests.load()),
                 static_cast<unsigned long long>(s.stat_requests.load()),
                 static_cast<unsigned long long>(s.get_requests.load()),
                 static_cast<unsigned long long>(s.datagrams_out.load()),
                 static_cast<unsigned long long>(s.errors_sent.load()),
                 static_cast<unsigned long long>(s.dropped_malformed.load()),
                 static_cast<unsigned long long>(s.dropped_corrupt.load()));
    server_->stop();
    uv_run(&loop_, UV_RUN_DEFAULT);
    server_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    FERRY_FUZZ_CHECK(uv_loop_close(&loop_) == 0, "the server left a handle or request open");
    ::close(sock_);
    check_tree();
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  void run_one(std::span<const std::byte> wire) {
    const auto& stats = server_->counters();
    const auto lost_before = stats.send_errors.load() + stats.send_dropped.load();
    // The server opens a sealed datagram in place; the oracle reads the bytes as they came.
    copy_.assign(wire.begin(), wire.end());
    server_->handle_datagram(copy_, peer_);
    drain();
    // A sealed datagram is never served, whatever it would decode to without its seal.
    const auto req = ferry::envelope::mode_of(wire) == ferry::envelope::mode::plain
                         ? codec::decode_request(wire)
                         : ferry::result<codec::decoded_request>{errc::malformed};
    const auto expect = expected_answer(wire, req);
    // A reply the kernel would not take is not the handler's fault; it was counted.
    const bool lost = stats.send_errors.load() + stats.send_dropped.load() != lost_before;
    const auto replies = collect(expect == answer::exactly_one && !lost);

    // A GET-RUN of n blocks is n GETs, each with its reply; anything else gets one at most.
    const auto* get = req ? std::get_if<proto::get_request>(&req->body) : nullptr;
    const std::size_t most = get != nullptr ? get->count : 1;
    FERRY_FUZZ_CHECK(replies.size() <= most, "more replies than the datagram asked for");
    if (expect == answer::none) FERRY_FUZZ_CHECK(replies.empty(), "a reply to a non-request");
    if (expect == answer::exactly_one && !lost)
      FERRY_FUZZ_CHECK(!replies.empty(), "no reply to a request that decodes");
    for (const auto& r : replies) check_reply(wire, req, expect, r);

    if (++inputs_ % 4096 == 0) check_tree();
  }

 private:
  // Runs the loop until every request the datagram started (queued GETs, pool jobs, queued
  // sends) is done. The receiving socket keeps the loop alive for ever, so uv_loop_alive()
  // cannot say when the work is over; the server can. UV_RUN_ONCE rather than UV_RUN_NOWAIT: it
  // sleeps until a job completes instead of spinning on the core that the pool thread needs
  // (a queued GET keeps an idle handle running, so the loop does not sleep while one waits).
  // A job that hangs blocks here, and libFuzzer's -timeout reports it.
  void drain() {
    constexpr int max_turns = 1000;
    for (int turns = 0; !server_->quiescent(); ++turns) {
      FERRY_FUZZ_CHECK(turns < max_turns, "the server's jobs do not drain");
      uv_run(&loop_, UV_RUN_ONCE);
    }
  }

  // Every datagram waiting on the harness socket. With `wait`, waits up to five seconds for the
  // first one: loopback delivers at once, but on a loaded machine not always before we look.
  std::vector<std::vector<std::byte>> collect(bool wait) {
    std::vector<std::vector<std::byte>> out;
    if (wait) {
      pollfd p{sock_, POLLIN, 0};
      (void)::poll(&p, 1, 5000);
    }
    for (;;) {
      const ssize_t n = ::recv(sock_, buf_.data(), buf_.size(), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        FERRY_FUZZ_CHECK(errno == EAGAIN || errno == EWOULDBLOCK, "recv failed");
        return out;
      }
      out.emplace_back(buf_.begin(), buf_.begin() + n);
    }
  }

  void check_reply(std::span<const std::byte> wire,
                   const ferry::result<codec::decoded_request>& req, answer expect,
                   std::span<const std::byte> reply) const {
    FERRY_FUZZ_CHECK(!contains(reply, fz::outside_secret), "a reply carries a file outside root");
    const auto d = codec::decode_reply(reply);
    FERRY_FUZZ_CHECK(d, "a reply from the server does not decode");
    // The i-th block of a GET-RUN is answered with the request id plus i.
    const auto* run = req ? std::get_if<proto::get_request>(&req->body) : nullptr;
    const auto nth = d->hdr.request_id - codec::peek_request_id(wire);
    FERRY_FUZZ_CHECK(nth < (run != nullptr ? run->count : 1u) && d->hdr.flags == 0,
                     "a reply does not echo the request id");
    const auto* error = std::get_if<proto::error_reply>(&d->body);
    const auto* data = std::get_if<proto::data_reply>(&d->body);
    if (data == nullptr)
      FERRY_FUZZ_CHECK(reply.size() <= proto::max_small_reply, "a small reply over 1200 bytes");
    if (error != nullptr)
      FERRY_FUZZ_CHECK(error->code != errc::ok && error->code != errc::corrupt,
                       "an error reply without an error");
    if (expect == answer::error_at_most)
      FERRY_FUZZ_CHECK(error != nullptr, "a non-error reply to a request that does not decode");
    if (expect != answer::exactly_one || error != nullptr) return;

    if (const auto* get = std::get_if<proto::get_request>(&req->body)) {
      FERRY_FUZZ_CHECK(data != nullptr, "GET answered by neither a block nor an error");
      FERRY_FUZZ_CHECK(data->offset == get->offset + nth * get->block_size,
                       "a block at another offset than asked");
      FERRY_FUZZ_CHECK(data->length <= std::min(get->block_size, proto::max_block_size),
                       "a block longer than asked");
    } else if (const auto* list = std::get_if<proto::list_request>(&req->body)) {
      const auto* page = std::get_if<proto::list_reply>(&d->body);
      FERRY_FUZZ_CHECK(page != nullptr, "LIST answered by neither a page nor an error");
      std::string_view after = list->cursor;
      for (const auto& e : page->entries) {
        FERRY_FUZZ_CHECK(after < e.name, "a page not in order, or not after its cursor");
        after = e.name;
      }
    } else {
      FERRY_FUZZ_CHECK(std::holds_alternative<proto::stat_reply>(d->body),
                       "STAT answered by neither a stat nor an error");
    }
  }

  void check_tree() const {
    FERRY_FUZZ_CHECK(describe_tree(base_) == tree_before_, "the served tree changed");
  }

  fs::path base_;
  std::vector<std::string> tree_before_;
  int sock_ = -1;
  ferry::endpoint peer_;
  uv_loop_t loop_{};
  std::unique_ptr<ferry::server::udp_server> server_;
  std::vector<std::byte> buf_ = std::vector<std::byte>(proto::max_datagram + 1);
  std::vector<std::byte> copy_;  // the input, for the server to open in place
  std::uint64_t inputs_ = 0;
};

// Lives for the whole process: libFuzzer has no teardown hook, so it is destroyed at exit.
harness* the_harness = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  the_harness = new harness;
  std::atexit([] { delete std::exchange(the_harness, nullptr); });
  return 0;
}

extern "C" std::size_t LLVMFuzzerCustomMutator(std::uint8_t* data, std::size_t size,
                                               std::size_t max_size, unsigned seed) {
  return ferry::fuzz::mutate_and_reseal(data, size, max_size, seed);
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  the_harness->run_one(std::as_bytes(std::span{data, size}));
  return 0;
}
