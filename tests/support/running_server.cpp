#include "support/running_server.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <system_error>
#include <utility>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/udp_gso.hpp"
#include "common/unique_fd.hpp"
#include "support/file_facts.hpp"

namespace ferry::test {

namespace {

std::string errno_text(int e) { return std::strerror(e); }

void write_all(int fd, std::string_view content, std::uint64_t offset) {
  std::size_t at = 0;
  while (at < content.size()) {
    const ssize_t n =
        ::pwrite(fd, content.data() + at, content.size() - at, static_cast<off_t>(offset + at));
    if (n < 0 && errno == EINTR) continue;
    INFO("pwrite: " << errno_text(errno));
    REQUIRE(n > 0);
    at += static_cast<std::size_t>(n);
  }
}

}  // namespace

// --- helpers ---------------------------------------------------------------------------------

protocol::digest128 xxh3_128(std::string_view bytes) noexcept {
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return {h.high64, h.low64};
}

std::string random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 gen{seed};
  std::string out(n, '\0');
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const std::uint64_t v = gen();
    std::memcpy(out.data() + i, &v, 8);
  }
  if (i < n) {
    const std::uint64_t v = gen();
    std::memcpy(out.data() + i, &v, n - i);
  }
  return out;
}

void append_checksum(std::vector<std::byte>& wire) {
  const std::uint64_t sum = XXH3_64bits(wire.data(), wire.size());
  for (int i = 0; i < 8; ++i) wire.push_back(static_cast<std::byte>((sum >> (8 * i)) & 0xff));
}

void strip_checksum(std::vector<std::byte>& wire) {
  REQUIRE(wire.size() >= 8);
  wire.resize(wire.size() - 8);
}

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return done();
    std::this_thread::sleep_for(1ms);
  }
}

std::string read_file(const std::filesystem::path& p) {
  unique_fd fd{::open(p.c_str(), O_RDONLY | O_CLOEXEC)};
  INFO("open " << p.string() << ": " << errno_text(errno));
  REQUIRE(fd);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    REQUIRE(n >= 0);
    if (n == 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

std::vector<std::string> varied_names(std::size_t n) {
  std::vector<std::string> names;
  names.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t filler = (i * 37) % 195;  // 6 + 194 = 200 bytes at most
    names.push_back(
        fmt::format("{:05}_{}", i, std::string(filler, static_cast<char>('a' + i % 26))));
  }
  return names;
}

counter_values counter_values::of(const server::stats& s) noexcept {
  counter_values v;
  v.datagrams_in = s.datagrams_in.load();
  v.bytes_in = s.bytes_in.load();
  v.datagrams_out = s.datagrams_out.load();
  v.bytes_out = s.bytes_out.load();
  v.list_requests = s.list_requests.load();
  v.stat_requests = s.stat_requests.load();
  v.get_requests = s.get_requests.load();
  v.dropped_malformed = s.dropped_malformed.load();
  v.dropped_corrupt = s.dropped_corrupt.load();
  v.dropped_truncated = s.dropped_truncated.load();
  v.recv_errors = s.recv_errors.load();
  v.errors_sent = s.errors_sent.load();
  v.busy_sent = s.busy_sent.load();
  v.send_errors = s.send_errors.load();
  v.send_dropped = s.send_dropped.load();
  v.internal_errors = s.internal_errors.load();
  v.prefix_full = s.prefix_full.load();
  v.clients_evicted = s.clients_evicted.load();
  v.unauthenticated = s.unauthenticated.load();
  v.dropped_unauthenticated = s.dropped_unauthenticated.load();
  return v;
}

// --- temp_dir --------------------------------------------------------------------------------

temp_dir::temp_dir() {
  char name[] = "/tmp/ferry_it.XXXXXX";
  INFO("mkdtemp: " << errno_text(errno));
  REQUIRE(::mkdtemp(name) != nullptr);
  path_ = name;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void temp_dir::write(std::string_view rel, std::string_view content) const {
  const auto p = path_ / rel;
  unique_fd fd{::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  INFO("create " << p.string() << ": " << errno_text(errno));
  REQUIRE(fd);
  write_all(fd.get(), content, 0);
}

std::string temp_dir::write_random(std::string_view rel, std::size_t size,
                                   std::uint64_t seed) const {
  auto content = random_bytes(size, seed);
  write(rel, content);
  return content;
}

void temp_dir::write_sparse(std::string_view rel, std::uint64_t size) const {
  const auto p = path_ / rel;
  unique_fd fd{::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  REQUIRE(fd);
  INFO("ftruncate " << p.string() << ": " << errno_text(errno));
  REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
}

void temp_dir::write_at(std::string_view rel, std::uint64_t offset,
                        std::string_view content) const {
  const auto p = path_ / rel;
  unique_fd fd{::open(p.c_str(), O_WRONLY | O_CLOEXEC)};
  INFO("open " << p.string() << ": " << errno_text(errno));
  REQUIRE(fd);
  write_all(fd.get(), content, offset);
}

void temp_dir::overwrite_in_place(std::string_view rel, std::string_view content) const {
  const auto p = path_ / rel;
  unique_fd fd{::open(p.c_str(), O_WRONLY | O_CLOEXEC)};
  INFO("open " << p.string() << ": " << errno_text(errno));
  REQUIRE(fd);
  struct stat before {};
  REQUIRE(::fstat(fd.get(), &before) == 0);
  REQUIRE(static_cast<std::uint64_t>(before.st_size) == content.size());
  write_all(fd.get(), content, 0);
  // File timestamps come from a coarse clock: two changes within one tick look identical.
  // Touch the file until its timestamps move on, so the new content is a new version.
  const bool moved = wait_until(
      [&] {
        struct stat now {};
        REQUIRE(::fstat(fd.get(), &now) == 0);
        if (ns_of(now.st_mtim) != ns_of(before.st_mtim) &&
            ns_of(now.st_ctim) != ns_of(before.st_ctim))
          return true;
        REQUIRE(::futimens(fd.get(), nullptr) == 0);
        return false;
      },
      5s);
  REQUIRE(moved);
}

void temp_dir::mkdir(std::string_view rel) const {
  const auto p = path_ / rel;
  INFO("mkdir " << p.string() << ": " << errno_text(errno));
  REQUIRE(::mkdir(p.c_str(), 0755) == 0);
}

void temp_dir::symlink(std::string_view target, std::string_view rel) const {
  const auto p = path_ / rel;
  const std::string t{target};
  INFO("symlink " << p.string() << ": " << errno_text(errno));
  REQUIRE(::symlink(t.c_str(), p.c_str()) == 0);
}

void temp_dir::mkfifo(std::string_view rel) const {
  const auto p = path_ / rel;
  INFO("mkfifo " << p.string() << ": " << errno_text(errno));
  REQUIRE(::mkfifo(p.c_str(), 0644) == 0);
}

void temp_dir::make_socket(std::string_view rel) const {
  const auto p = (path_ / rel).string();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  REQUIRE(p.size() < sizeof addr.sun_path);
  std::memcpy(addr.sun_path, p.c_str(), p.size() + 1);
  unique_fd s{::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  REQUIRE(s);
  INFO("bind " << p << ": " << errno_text(errno));
  REQUIRE(::bind(s.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
}

void temp_dir::remove(std::string_view rel) const {
  const auto p = path_ / rel;
  INFO("remove " << p.string() << ": " << errno_text(errno));
  REQUIRE(::unlink(p.c_str()) == 0);
}

void temp_dir::populate(std::string_view rel, const std::vector<std::string>& names) const {
  mkdir(rel);
  // Hard links to seven files made once: allocating thousands of inodes is slow on some
  // file systems (seconds for 3,000 files), adding directory entries is not.
  temp_dir sources;
  for (std::size_t n = 0; n < 7; ++n) sources.write(std::to_string(n), std::string(n, 'x'));
  const std::string dir{rel};
  for (std::size_t i = 0; i < names.size(); ++i) {
    const auto from = sources / std::to_string(i % 7);
    const auto to = path_ / (dir + "/" + names[i]);
    INFO("link " << to.string() << ": " << errno_text(errno));
    REQUIRE(::link(from.c_str(), to.c_str()) == 0);
  }
}

void temp_dir::hard_link(std::string_view existing, std::string_view rel) const {
  const auto from = path_ / existing;
  const auto to = path_ / rel;
  INFO("link " << to.string() << ": " << errno_text(errno));
  REQUIRE(::link(from.c_str(), to.c_str()) == 0);
}

bool temp_dir::exists(std::string_view rel) const {
  struct stat st {};
  return ::lstat((path_ / rel).c_str(), &st) == 0;
}

std::map<std::string, std::string> describe_tree(const std::filesystem::path& root) {
  std::map<std::string, std::string> out;
  auto describe = [&](const std::filesystem::path& p, const std::string& rel) {
    struct stat st {};
    REQUIRE(::lstat(p.c_str(), &st) == 0);
    std::string d = fmt::format("mode={:o} uid={} gid={} size={} ino={} nlink={} mtime={} ctime={}",
                                st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_ino,
                                st.st_nlink, ns_of(st.st_mtim), ns_of(st.st_ctim));
    if (S_ISLNK(st.st_mode)) {
      std::error_code ec;
      d += " -> " + std::filesystem::read_symlink(p, ec).string();
    } else if (S_ISREG(st.st_mode)) {
      const auto h = xxh3_128(read_file(p));
      d += fmt::format(" xxh3={:016x}{:016x}", h.high, h.low);
    }
    out.emplace(rel, std::move(d));
  };
  describe(root, "");
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator{root, ec};
       it != std::filesystem::recursive_directory_iterator{}; it.increment(ec)) {
    REQUIRE_FALSE(ec);
    // lexically_relative, not relative(): the latter resolves symlinks.
    describe(it->path(), it->path().lexically_relative(root).string());
  }
  REQUIRE_FALSE(ec);
  return out;
}

std::string tree_diff(const std::map<std::string, std::string>& before,
                      const std::map<std::string, std::string>& after) {
  std::string diff;
  for (const auto& [name, was] : before) {
    auto it = after.find(name);
    if (it == after.end())
      diff += fmt::format("removed '{}'\n", name);
    else if (it->second != was)
      diff += fmt::format("changed '{}': {} => {}\n", name, was, it->second);
  }
  for (const auto& [name, now] : after)
    if (!before.contains(name)) diff += fmt::format("added '{}': {}\n", name, now);
  return diff;
}

// --- running_server --------------------------------------------------------------------------

running_server::running_server(const std::filesystem::path& root, const tweak& adjust) {
  config_.root = root.string();
  config_.bind = "127.0.0.1";
  config_.port = 0;
  // Tests that count datagrams must not meet a token refresh they did not cause; those about
  // tokens set their own windows.
  config_.token_window_ms = 3'600'000;
  if (adjust) adjust(config_);
  REQUIRE(uv_loop_init(&loop_) == 0);
  try {
    server_ = std::make_unique<server::udp_server>(&loop_, config_);
    endpoint_ = server_->local_endpoint();
  } catch (const std::exception& e) {
    server_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    (void)uv_loop_close(&loop_);
    FAIL("cannot start the server: " << e.what());
  }
  REQUIRE(endpoint_.port() != 0);
  thread_ = std::thread{[this] {
    uv_run(&loop_, UV_RUN_DEFAULT);
    exited_ = true;
  }};
}

running_server::~running_server() {
  stop_and_join();
  // The server is destroyed only after uv_run has returned, as udp_server requires.
  server_.reset();
  uv_run(&loop_, UV_RUN_DEFAULT);  // close callbacks of anything closed by the destructor
  CHECK(uv_loop_close(&loop_) == 0);
}

std::string running_server::address() const { return fmt::format("127.0.0.1:{}", port()); }

void running_server::request_stop() noexcept {
  // udp_server::request_stop() must not be called once the stop has begun: the loop thread
  // then closes and frees the async handle it signals.
  if (!stop_requested_.exchange(true)) server_->request_stop();
}

void running_server::stop_and_join() {
  request_stop();
  if (thread_.joinable()) thread_.join();
}

// --- blocking_client -------------------------------------------------------------------------

blocking_client::blocking_client(const ::ferry::endpoint& server, std::chrono::milliseconds timeout,
                                 int attempts)
    : timeout_{timeout}, attempts_{attempts} {
  fd_ = ::socket(server.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd_ >= 0);
  // Room for bursts of replies (the malformed-traffic tests collect many error replies).
  const int want = 4 << 20;
  if (::setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0)
    (void)::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
  set_timeout(timeout_);
  INFO("connect: " << errno_text(errno));
  REQUIRE(::connect(fd_, server.addr(), server.length) == 0);
}

blocking_client::~blocking_client() {
  if (fd_ >= 0) ::close(fd_);
}

void blocking_client::set_timeout(std::chrono::milliseconds t) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(t.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
  if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1;  // zero would mean "block forever"
  REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
}

std::vector<std::byte> blocking_client::encode(std::uint64_t id, const protocol::request& req,
                                               const protocol::address_token* token) {
  std::vector<std::byte> out(protocol::max_request_size);
  auto n = codec::encode_request(out, id, req, token);
  REQUIRE(n);
  out.resize(*n);
  return out;
}

std::vector<std::byte> blocking_client::encode_validated(std::uint64_t id,
                                                         const protocol::request& req) {
  return encode(id, req, &token());
}

const protocol::address_token& blocking_client::token() {
  if (!token_) (void)call(protocol::stat_request{""});
  REQUIRE(token_);
  return *token_;
}

void blocking_client::send_raw(std::span<const std::byte> bytes) {
  for (;;) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), 0);
    if (n < 0 && (errno == EINTR || errno == ECONNREFUSED)) continue;  // an old ICMP error
    INFO("send of " << bytes.size() << " bytes: " << errno_text(errno));
    REQUIRE(n == static_cast<ssize_t>(bytes.size()));
    return;
  }
}

bool blocking_client::send_gso(std::span<const std::byte> bytes, std::uint16_t segment) {
  iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
  msghdr h{};
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  udp_gso::control c;
  udp_gso::set_segment(h, c, segment);
  for (;;) {
    const ssize_t n = ::sendmsg(fd_, &h, 0);
    if (n < 0 && (errno == EINTR || errno == ECONNREFUSED)) continue;
    if (n < 0 && (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT)) return false;
    INFO("GSO send of " << bytes.size() << " bytes: " << errno_text(errno));
    REQUIRE(n == static_cast<ssize_t>(bytes.size()));
    return true;
  }
}

std::optional<std::vector<std::byte>> blocking_client::recv_raw() {
  std::vector<std::byte> buf(protocol::max_datagram + 1);
  for (;;) {
    const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
    if (n >= 0) {
      buf.resize(static_cast<std::size_t>(n));
      return buf;
    }
    if (errno == EINTR || errno == ECONNREFUSED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
    FAIL("recv: " << errno_text(errno));
  }
}

std::optional<std::vector<std::byte>> blocking_client::recv_raw(std::chrono::milliseconds wait) {
  set_timeout(wait);
  auto got = recv_raw();
  set_timeout(timeout_);
  return got;
}

owned_reply blocking_client::call(const protocol::request& req) {
  const auto first = next_id_;
  int token_rounds = 0;
  for (int attempt = 0; attempt < attempts_; ++attempt) {
    if (attempt > 0) ++retransmits_;
    send_raw(encode(next_id(), req, token_ ? &*token_ : nullptr));
    while (auto got = recv_raw()) {
      auto decoded = codec::decode_reply(*got);
      if (!decoded) {
        ++undecodable_;
        FAIL_CHECK(
            "a reply from the server did not decode: " << protocol::to_string(decoded.error()));
        continue;
      }
      if (decoded->hdr.request_id == 0 &&
          std::holds_alternative<protocol::token_reply>(decoded->body)) {
        token_ =
            std::get<protocol::token_reply>(decoded->body).token;  // a refresh, as ferry takes it
        continue;
      }
      if (decoded->hdr.request_id < first || decoded->hdr.request_id >= next_id_) {
        ++stray_;
        continue;
      }
      if (auto* t = std::get_if<protocol::token_reply>(&decoded->body)) {
        // The server validates our address first: echo its token, as ferry's client does.
        REQUIRE_MESSAGE(++token_rounds <= 2, "the server keeps rejecting the token it gave");
        token_ = t->token;
        ++token_replies_;
        send_raw(encode(next_id(), req, &*token_));
        continue;
      }
      // Decode again from the vector's final home, so a data payload points into `wire`.
      owned_reply r;
      r.wire = std::move(*got);
      auto again = codec::decode_reply(r.wire);
      REQUIRE(again);
      r.decoded = std::move(*again);
      last_reply_size_ = r.wire.size();
      return r;
    }
  }
  FAIL("no reply from the server after " << attempts_ << " attempts of " << timeout_.count()
                                         << " ms");
  return {};
}

namespace {
template <typename T>
result<T> expect(owned_reply r) {
  if (auto* e = std::get_if<protocol::error_reply>(&r.decoded.body)) {
    CHECK(e->code != protocol::errc::ok);
    return e->code;
  }
  auto* v = std::get_if<T>(&r.decoded.body);
  REQUIRE_MESSAGE(v != nullptr, "unexpected reply type " << r.decoded.body.index());
  return std::move(*v);
}
}  // namespace

result<protocol::list_reply> blocking_client::list(const std::string& path,
                                                   const std::string& cursor) {
  return expect<protocol::list_reply>(call(protocol::list_request{path, cursor}));
}

result<protocol::stat_reply> blocking_client::stat(const std::string& path) {
  return expect<protocol::stat_reply>(call(protocol::stat_request{path}));
}

result<block> blocking_client::get(const std::string& path, std::uint64_t offset,
                                   std::uint32_t block_size) {
  auto r = call(protocol::get_request{path, offset, block_size});
  if (auto* e = std::get_if<protocol::error_reply>(&r.decoded.body)) return e->code;
  auto* d = std::get_if<protocol::data_reply>(&r.decoded.body);
  REQUIRE_MESSAGE(d != nullptr, "unexpected reply type " << r.decoded.body.index());
  block b;
  b.meta = *d;
  b.meta.payload = nullptr;
  b.data.assign(reinterpret_cast<const char*>(d->payload), d->length);
  return b;
}

}  // namespace ferry::test

namespace doctest {

String StringMaker<ferry::protocol::errc>::convert(ferry::protocol::errc e) {
  const auto s = fmt::format("errc::{} ({})", static_cast<int>(e), ferry::protocol::to_string(e));
  return String{s.c_str()};
}

String StringMaker<ferry::protocol::entry_type>::convert(ferry::protocol::entry_type t) {
  return String{std::string{ferry::protocol::to_string(t)}.c_str()};
}

String StringMaker<ferry::protocol::digest128>::convert(const ferry::protocol::digest128& d) {
  return String{fmt::format("{:016x}{:016x}", d.high, d.low).c_str()};
}

String StringMaker<ferry::protocol::file_version>::convert(const ferry::protocol::file_version& v) {
  return String{fmt::format("{{dev={} ino={} size={} mtime={} ctime={}}}", v.dev, v.ino, v.size,
                            v.mtime_ns, v.ctime_ns)
                    .c_str()};
}

String StringMaker<ferry::client::exit_code>::convert(ferry::client::exit_code c) {
  return String{fmt::format("exit_code {}", static_cast<int>(c)).c_str()};
}

}  // namespace doctest
