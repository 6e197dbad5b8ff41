#include "server/udp_server.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <tuple>

#include "common/codec.hpp"
#include "common/digest.hpp"
#include "common/log.hpp"

namespace ferry::server {

using protocol::errc;

namespace {
// How long an open descriptor is reused before the path is resolved again. Bounds how long a
// renamed or replaced file keeps being served from its old inode.
constexpr std::uint64_t file_reuse_ms = 1000;
constexpr std::size_t max_open_files = 64;
constexpr std::size_t max_cached_digests = 4096;

uv_buf_t make_buf(const void* p, std::size_t n) {
  return uv_buf_init(static_cast<char*>(const_cast<void*>(p)), static_cast<unsigned>(n));
}
}  // namespace

bool udp_server::version_less::operator()(const protocol::file_version& a,
                                          const protocol::file_version& b) const {
  return std::tie(a.dev, a.ino, a.size, a.mtime_ns, a.ctime_ns) <
         std::tie(b.dev, b.ino, b.size, b.mtime_ns, b.ctime_ns);
}

// Work for libuv's thread pool. run() executes on a pool thread and must touch only the job's
// own members; done() executes on the loop thread.
class pool_job {
 public:
  virtual ~pool_job() = default;
  virtual void run() noexcept = 0;
  virtual void done(udp_server& s) = 0;

  uv_work_t req{};
  udp_server* server = nullptr;
  endpoint peer;
  std::uint64_t request_id = 0;
  std::string rel;
  bool counts_as_digest = false;
};

class get_job final : public pool_job {
 public:
  void run() noexcept override {
    if (!file) {
      auto fd = open_regular_beneath(root_fd, rel);
      if (!fd) {
        outcome.error = fd.error();
        return;
      }
      file = std::make_shared<unique_fd>(std::move(*fd));
      opened = true;
    }
    outcome = read_block(file->get(), offset, block, buffer.get(), false);
  }
  void done(udp_server& s) override {
    if (opened) s.remember_file(rel, file);
    if (outcome.error != errc::ok) return s.send_error(peer, request_id, outcome.error);
    s.send_data(peer, request_id, offset, outcome, buffer.get());
  }

  int root_fd = -1;
  std::uint64_t offset = 0;
  std::uint32_t block = 0;
  std::shared_ptr<unique_fd> file;  // null: open it first
  bool opened = false;
  std::unique_ptr<std::byte[]> buffer;
  read_outcome outcome;
};

class stat_job final : public pool_job {
 public:
  void run() noexcept override { info = stat_beneath(root_fd, rel); }
  void done(udp_server& s) override {
    if (!info) return s.send_error(peer, request_id, info.error());
    s.finish_stat(peer, request_id, *info);
  }

  int root_fd = -1;
  result<stat_info> info{errc::io_error};
};

class list_job final : public pool_job {
 public:
  void run() noexcept override {
    page = dirs->list_page(root_fd, rel, cursor, protocol::max_small_reply);
  }
  void done(udp_server& s) override {
    if (!page) return s.send_error(peer, request_id, page.error());
    s.send_reply(peer, request_id, *page);
  }

  int root_fd = -1;
  std::string cursor;
  std::shared_ptr<dir_cache> dirs;
  result<protocol::list_reply> page{errc::io_error};
};

class digest_job final : public pool_job {
 public:
  void run() noexcept override {
    try {
      digest = digest_file(fd.get());
      // Only a digest of a file that did not change while it was read is worth keeping.
      struct stat st {};
      ok = ::fstat(fd.get(), &st) == 0 && version_of(st) == version;
    } catch (...) {
      ok = false;
    }
  }
  void done(udp_server& s) override {
    s.digesting_.erase(version);
    if (!ok) return;
    ++s.stats_.digests_computed;
    if (s.digests_.emplace(version, digest).second) s.digest_order_.push_back(version);
    if (s.digest_order_.size() > max_cached_digests) {
      s.digests_.erase(s.digest_order_.front());
      s.digest_order_.erase(s.digest_order_.begin());
    }
  }

  unique_fd fd;
  protocol::file_version version;
  protocol::digest128 digest;
  bool ok = false;
};

udp_server::udp_server(uv_loop_t* loop, config cfg)
    : loop_{loop},
      cfg_{std::move(cfg)},
      udp_{loop, uv_udp_init},
      stop_async_{loop, uv_async_init,
                  [](uv_async_t* a) { static_cast<udp_server*>(a->data)->stop(); }},
      recv_buf_{std::make_unique_for_overwrite<std::byte[]>(protocol::max_datagram)},
      block_buf_{std::make_unique_for_overwrite<std::byte[]>(protocol::max_block_size)},
      dirs_{std::make_shared<dir_cache>()} {
  cfg_.max_block = std::clamp(cfg_.max_block, protocol::min_block_size, protocol::max_block_size);
  stop_async_.get()->data = this;
  ::uv_unref(stop_async_.handle());

  const int root = ::open(cfg_.root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0)
    throw std::runtime_error{fmt::format("cannot serve '{}': {}", cfg_.root, std::strerror(errno))};
  root_.reset(root);

  std::string why;
  auto ep = resolve(host_port{cfg_.bind, cfg_.port}, why);
  if (!ep) throw std::runtime_error{fmt::format("cannot bind '{}': {}", cfg_.bind, why)};
  udp_.get()->data = this;
  // No IPV6ONLY: "--bind ::" then serves IPv4 too, as the system's default says.
  if (int rc = uv_udp_bind(udp_.get(), ep->addr(), 0); rc < 0) {
    const char* hint = rc == UV_EADDRINUSE ? " (is another ferryd running? choose another --port)"
                       : rc == UV_EADDRNOTAVAIL ? " (that address is not on this machine)"
                       : rc == UV_EACCES        ? " (ports below 1024 need privileges)"
                                                : "";
    throw std::runtime_error{
        fmt::format("cannot bind {}: {}{}", to_string(*ep), uv_strerror(rc), hint)};
  }

  int fd = -1;
  if (uv_fileno(udp_.handle(), &fd) == 0) {
    // As root the FORCE variants pass net.core.[rw]mem_max; otherwise take what the cap allows.
    const int want = cfg_.socket_buffer;
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0)
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
    if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof want) != 0)
      ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
    int got = 0;
    socklen_t len = sizeof got;
    if (::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) == 0 && got < want)
      log::warn("receive buffer is {} bytes, asked for {} (raise net.core.rmem_max)", got / 2,
                want);
  }
  uv_check(uv_udp_recv_start(udp_.get(), on_alloc, on_recv), "uv_udp_recv_start");
}

udp_server::~udp_server() { stop(); }

endpoint udp_server::local_endpoint() const {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (udp_.get() == nullptr) return {};
  uv_check(uv_udp_getsockname(udp_.get(), reinterpret_cast<sockaddr*>(&ss), &len),
           "uv_udp_getsockname");
  return endpoint::from(reinterpret_cast<const sockaddr*>(&ss));
}

void udp_server::stop() noexcept {
  if (stopping_) return;
  stopping_ = true;
  if (udp_.get() != nullptr) uv_udp_recv_stop(udp_.get());
  udp_.close();
  {
    // request_stop() may be running on another thread: the handle must not close under it.
    std::lock_guard lock{stop_mutex_};
    stop_async_.close();
  }
  files_.clear();
}

void udp_server::request_stop() noexcept {
  std::lock_guard lock{stop_mutex_};
  if (auto* a = stop_async_.get(); a != nullptr) uv_async_send(a);
}

void udp_server::on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) noexcept {
  auto& self = *static_cast<udp_server*>(h->data);
  *buf = make_buf(self.recv_buf_.get(), protocol::max_datagram);
}

void udp_server::on_recv(uv_udp_t* h, ssize_t nread, const uv_buf_t* buf, const sockaddr* from,
                         unsigned flags) noexcept {
  auto& self = *static_cast<udp_server*>(h->data);
  if (nread == 0 && from == nullptr) return;  // nothing more to read
  if (nread < 0) {
    ++self.stats_.recv_errors;
    return;
  }
  ++self.stats_.datagrams_in;
  self.stats_.bytes_in += static_cast<std::uint64_t>(nread);
  if (flags & UV_UDP_PARTIAL) {
    ++self.stats_.dropped_truncated;
    return;
  }
  self.note_peer(from);
  auto bytes = std::span<const std::byte>{reinterpret_cast<const std::byte*>(buf->base),
                                          static_cast<std::size_t>(nread)};
  try {
    self.handle_datagram(bytes, endpoint::from(from));
  } catch (const std::exception& e) {
    ++self.stats_.internal_errors;
    log::debug("datagram dropped: {}", e.what());
  } catch (...) {
    ++self.stats_.internal_errors;
  }
}

void udp_server::handle_datagram(std::span<const std::byte> bytes, const endpoint& peer) {
  if (stopping_) return;
  auto decoded = codec::decode_request(bytes);
  if (!decoded && decoded.error() == errc::corrupt) {
    // Damaged on the way: nothing in it can be trusted, not even the address to answer.
    ++stats_.dropped_corrupt;
    return;
  }
  if (!decoded) {
    ++stats_.dropped_malformed;
    // Answer only what is recognisably a ferry request, so garbage draws no reply at all, and
    // never a reply-typed datagram: two servers must not be made to answer each other forever.
    auto h = codec::decode_header(bytes);
    if (h.error() == errc::unsupported_version && bytes.size() <= protocol::max_request_size &&
        protocol::is_request_type(std::to_integer<std::uint8_t>(bytes[5]))) {
      send_error(peer, codec::peek_request_id(bytes), errc::unsupported_version);
    } else if (h && protocol::is_request_type(static_cast<std::uint8_t>(h->type)) &&
               bytes.size() <= protocol::max_request_size) {
      send_error(peer, h->request_id, decoded.error());
    }
    return;
  }
  const auto id = decoded->hdr.request_id;
  std::visit(
      [&](const auto& req) {
        using T = std::decay_t<decltype(req)>;
        if constexpr (std::is_same_v<T, protocol::get_request>) handle_get(peer, id, req);
        if constexpr (std::is_same_v<T, protocol::stat_request>) handle_stat(peer, id, req);
        if constexpr (std::is_same_v<T, protocol::list_request>) handle_list(peer, id, req);
      },
      decoded->body);
}

void udp_server::handle_get(const endpoint& peer, std::uint64_t id,
                            const protocol::get_request& req) {
  ++stats_.get_requests;
  auto rel = normalize_wire_path(req.path);
  if (!rel) return send_error(peer, id, rel.error());
  if (rel->empty()) return send_error(peer, id, errc::not_regular);
  const auto block = std::min(req.block_size, cfg_.max_block);

  auto file = cached_file(*rel);
  if (file) {
    // Page-cache hits are served right here; anything that would wait for a disk goes to the pool.
    auto r = read_block(file->get(), req.offset, block, block_buf_.get(), true);
    if (!r.would_block) {
      ++stats_.reads_inline;
      if (r.error != errc::ok) return send_error(peer, id, r.error);
      return send_data(peer, id, req.offset, r, block_buf_.get());
    }
  }
  auto job = std::make_unique<get_job>();
  job->peer = peer;
  job->request_id = id;
  job->rel = std::move(*rel);
  job->root_fd = root_.get();
  job->offset = req.offset;
  job->block = block;
  job->file = std::move(file);
  job->buffer = std::make_unique_for_overwrite<std::byte[]>(block);
  ++stats_.reads_pooled;
  submit(std::move(job));
}

void udp_server::handle_stat(const endpoint& peer, std::uint64_t id,
                             const protocol::stat_request& req) {
  ++stats_.stat_requests;
  auto rel = normalize_wire_path(req.path);
  if (!rel) return send_error(peer, id, rel.error());
  auto job = std::make_unique<stat_job>();
  job->peer = peer;
  job->request_id = id;
  job->rel = std::move(*rel);
  job->root_fd = root_.get();
  submit(std::move(job));
}

void udp_server::handle_list(const endpoint& peer, std::uint64_t id,
                             const protocol::list_request& req) {
  ++stats_.list_requests;
  auto rel = normalize_wire_path(req.path);
  if (!rel) return send_error(peer, id, rel.error());
  auto job = std::make_unique<list_job>();
  job->peer = peer;
  job->request_id = id;
  job->rel = std::move(*rel);
  job->root_fd = root_.get();
  job->cursor = req.cursor;
  job->dirs = dirs_;
  submit(std::move(job));
}

void udp_server::finish_stat(const endpoint& peer, std::uint64_t id, stat_info& info) {
  protocol::stat_reply r;
  r.type = info.type;
  r.size = info.type == protocol::entry_type::file ? info.version.size : 0;
  r.mtime_ns = info.mtime_ns;
  r.version = info.version;
  r.max_block = cfg_.max_block;
  if (info.type == protocol::entry_type::file) {
    if (auto it = digests_.find(info.version); it != digests_.end()) {
      r.digest_ready = true;
      r.digest = it->second;
    } else if (!digesting_.contains(info.version) && digest_jobs_ < cfg_.max_digest_jobs &&
               info.fd) {
      // Computed once per version, off the loop; the client asks again until it is ready.
      auto job = std::make_unique<digest_job>();
      job->peer = peer;
      job->fd = std::move(info.fd);
      job->version = info.version;
      job->counts_as_digest = true;
      digesting_.insert(info.version);
      if (!submit(std::move(job))) digesting_.erase(info.version);
    }
  }
  send_reply(peer, id, r);
}

bool udp_server::submit(std::unique_ptr<pool_job> job) {
  if (jobs_in_flight_ >= cfg_.max_jobs) {
    ++stats_.busy_sent;
    if (!job->counts_as_digest) send_error(job->peer, job->request_id, errc::busy);
    return false;
  }
  job->server = this;
  job->req.data = job.get();
  const int rc = uv_queue_work(
      loop_, &job->req, [](uv_work_t* w) { static_cast<pool_job*>(w->data)->run(); },
      [](uv_work_t* w, int status) {
        std::unique_ptr<pool_job> j{static_cast<pool_job*>(w->data)};
        auto& s = *j->server;
        --s.jobs_in_flight_;
        if (j->counts_as_digest) --s.digest_jobs_;
        if (status != 0 || s.stopping_) {
          if (j->counts_as_digest) s.digesting_.erase(static_cast<digest_job&>(*j).version);
          return;
        }
        try {
          j->done(s);
        } catch (...) {
          ++s.stats_.internal_errors;
        }
      });
  if (rc != 0) {
    ++stats_.internal_errors;
    if (!job->counts_as_digest) send_error(job->peer, job->request_id, errc::busy);
    return false;
  }
  ++jobs_in_flight_;
  if (job->counts_as_digest) ++digest_jobs_;
  (void)job.release();
  return true;
}

std::shared_ptr<unique_fd> udp_server::cached_file(const std::string& rel) {
  auto it = files_.find(rel);
  if (it == files_.end()) return nullptr;
  if (uv_now(loop_) - it->second.opened_ms > file_reuse_ms) {
    files_.erase(it);
    return nullptr;
  }
  return it->second.fd;
}

void udp_server::remember_file(const std::string& rel, std::shared_ptr<unique_fd> fd) {
  if (files_.size() >= max_open_files && !files_.contains(rel)) {
    auto oldest = files_.begin();
    for (auto it = files_.begin(); it != files_.end(); ++it)
      if (it->second.opened_ms < oldest->second.opened_ms) oldest = it;
    files_.erase(oldest);
  }
  files_[rel] = open_file{std::move(fd), uv_now(loop_)};
}

void udp_server::send(const endpoint& peer, std::span<const uv_buf_t> bufs) noexcept {
  if (udp_.get() == nullptr) return;
  std::size_t total = 0;
  for (const auto& b : bufs) total += b.len;
  const int rc =
      uv_udp_try_send(udp_.get(), bufs.data(), static_cast<unsigned>(bufs.size()), peer.addr());
  if (rc >= 0) {
    ++stats_.datagrams_out;
    stats_.bytes_out += total;
    return;
  }
  if (rc != UV_EAGAIN) {
    ++stats_.send_errors;
    return;
  }
  // The socket buffer is full: queue a copy, within a bound, or drop it. The client asks again.
  if (send_queued_ + total > cfg_.max_send_queue) {
    ++stats_.send_dropped;
    return;
  }
  struct send_op {
    uv_udp_send_t req;
    std::unique_ptr<std::byte[]> bytes;
    std::size_t size;
    udp_server* server;
  };
  try {
    auto op = std::make_unique<send_op>();
    op->bytes = std::make_unique_for_overwrite<std::byte[]>(total);
    op->size = total;
    op->server = this;
    std::size_t at = 0;
    for (const auto& b : bufs) {
      std::memcpy(op->bytes.get() + at, b.base, b.len);
      at += b.len;
    }
    const uv_buf_t one = make_buf(op->bytes.get(), total);
    op->req.data = op.get();
    const int qrc =
        uv_udp_send(&op->req, udp_.get(), &one, 1, peer.addr(), [](uv_udp_send_t* r, int status) {
          std::unique_ptr<send_op> done{static_cast<send_op*>(r->data)};
          auto& s = *done->server;
          s.send_queued_ -= done->size;
          if (status == 0) {
            ++s.stats_.datagrams_out;
            s.stats_.bytes_out += done->size;
          } else if (status != UV_ECANCELED) {
            ++s.stats_.send_errors;
          }
        });
    if (qrc != 0) {
      ++stats_.send_errors;
      return;
    }
    send_queued_ += total;
    (void)op.release();
  } catch (...) {
    ++stats_.send_dropped;
  }
}

void udp_server::send_reply(const endpoint& peer, std::uint64_t id,
                            const protocol::reply& reply) noexcept {
  std::byte out[protocol::max_small_reply];
  auto n = codec::encode_reply(out, id, reply);
  if (!n) {
    ++stats_.internal_errors;
    return;
  }
  const uv_buf_t buf = make_buf(out, *n);
  send(peer, {&buf, 1});
}

void udp_server::send_error(const endpoint& peer, std::uint64_t id, errc code) noexcept {
  ++stats_.errors_sent;
  ++stats_.refusals[static_cast<std::size_t>(code) % stats_.refusals.size()];
  try {
    send_reply(peer, id, protocol::error_reply{code, std::string{protocol::to_string(code)}});
  } catch (...) {
    ++stats_.internal_errors;
  }
}

void udp_server::send_data(const endpoint& peer, std::uint64_t id, std::uint64_t offset,
                           const read_outcome& r, const std::byte* payload) noexcept {
  protocol::data_reply meta;
  meta.offset = offset;
  meta.eof = r.eof;
  meta.version = r.version;
  meta.length = r.length;
  std::byte prefix[protocol::data_reply_overhead];
  auto n = codec::encode_data_prefix(prefix, id, meta, {payload, r.length});
  if (!n) {
    ++stats_.internal_errors;
    return;
  }
  const uv_buf_t bufs[2] = {make_buf(prefix, *n), make_buf(payload, r.length)};
  send(peer, {bufs, r.length > 0 ? 2u : 1u});
}

namespace {
// Entries older than this do not count as active; the table is pruned past max_peers.
constexpr std::uint64_t peer_active_ms = 60'000;
constexpr std::size_t max_peers = 65'536;
}  // namespace

std::size_t udp_server::peer_key_hash::operator()(const peer_key& k) const noexcept {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (auto b : k.bytes) h = (h ^ std::to_integer<std::uint64_t>(b)) * 1099511628211ULL;
  return static_cast<std::size_t>(h);
}

void udp_server::note_peer(const sockaddr* from) noexcept {
  if (from == nullptr) return;
  peer_key key;
  if (from->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(from);
    std::memcpy(key.bytes.data(), &in->sin_addr, 4);
    std::memcpy(key.bytes.data() + 16, &in->sin_port, 2);
  } else if (from->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(from);
    std::memcpy(key.bytes.data(), &in6->sin6_addr, 16);
    std::memcpy(key.bytes.data() + 16, &in6->sin6_port, 2);
  } else {
    return;
  }
  const auto now = uv_now(loop_);
  try {
    if (peers_.size() >= max_peers && !peers_.contains(key)) {
      std::erase_if(peers_, [&](const auto& p) { return now - p.second > peer_active_ms; });
      if (peers_.size() >= max_peers) peers_.clear();  // every one recent: a flood; start over
    }
    peers_[key] = now;
  } catch (...) {
    peers_.clear();
  }
}

std::size_t udp_server::active_addresses() noexcept {
  const auto now = uv_now(loop_);
  std::erase_if(peers_, [&](const auto& p) { return now - p.second > peer_active_ms; });
  return peers_.size();
}

void udp_server::log_counters(bool force) noexcept {
  try {
    auto n = [](const std::atomic<std::uint64_t>& v) { return std::to_string(v.load()); };
    const auto& s = stats_;
    std::string refused;
    for (std::size_t i = 1; i < s.refusals.size(); ++i) {
      if (const auto count = s.refusals[i].load(); count > 0) {
        if (!refused.empty()) refused += ',';
        refused += fmt::format("{}:{}", protocol::code_name(static_cast<errc>(i)), count);
      }
    }
    log::write(log::level::info, "counters",
               {{"requests_list", n(s.list_requests)},
                {"requests_stat", n(s.stat_requests)},
                {"requests_get", n(s.get_requests)},
                {"datagrams_in", n(s.datagrams_in)},
                {"bytes_in", n(s.bytes_in)},
                {"datagrams_out", n(s.datagrams_out)},
                {"bytes_out", n(s.bytes_out)},
                {"drop_malformed", n(s.dropped_malformed)},
                {"drop_corrupt", n(s.dropped_corrupt)},
                {"drop_truncated", n(s.dropped_truncated)},
                {"drop_send_queue", n(s.send_dropped)},
                {"recv_errors", n(s.recv_errors)},
                {"send_errors", n(s.send_errors)},
                {"busy", n(s.busy_sent)},
                {"errors_sent", n(s.errors_sent)},
                {"refusals", refused.empty() ? "none" : refused},
                {"reads_inline", n(s.reads_inline)},
                {"reads_pooled", n(s.reads_pooled)},
                {"digests", n(s.digests_computed)},
                {"internal_errors", n(s.internal_errors)},
                {"active_addresses", std::to_string(active_addresses())}},
               force);
  } catch (...) {
  }
}

int run_until_signalled(const config& cfg) {
  uv_loop_t loop;
  uv_check(uv_loop_init(&loop), "uv_loop_init");
  int code = 0;
  {
    std::unique_ptr<udp_server> server;
    try {
      server = std::make_unique<udp_server>(&loop, cfg);
    } catch (const std::exception& e) {
      log::write(log::level::error, e.what());
      code = 1;
    }
    if (server) {
      const auto addr = to_string(server->local_endpoint());
      std::printf("listening on %s\n", addr.c_str());
      std::fflush(stdout);
      log::write(log::level::info, "listening", {{"addr", addr}, {"root", cfg.root}});

      // SIGINT and SIGTERM stop; SIGUSR1 prints the counters; a timer prints them on request.
      struct context {
        udp_server* server;
        std::vector<uv_owned<uv_signal_t>*> stoppers;
        uv_owned<uv_timer_t>* timer;
      };
      uv_owned<uv_signal_t> sigint{&loop, uv_signal_init};
      uv_owned<uv_signal_t> sigterm{&loop, uv_signal_init};
      uv_owned<uv_signal_t> sigusr1{&loop, uv_signal_init};
      uv_owned<uv_timer_t> stats_timer{&loop, uv_timer_init};
      context ctx{server.get(), {&sigint, &sigterm, &sigusr1}, &stats_timer};
      for (auto* h : ctx.stoppers) h->get()->data = &ctx;
      stats_timer.get()->data = &ctx;
      auto on_stop = [](uv_signal_t* h, int signum) {
        auto& c = *static_cast<context*>(h->data);
        log::write(log::level::info, "stopping", {{"signal", std::to_string(signum)}});
        c.server->stop();
        for (auto* s : c.stoppers) s->close();
        c.timer->close();
      };
      uv_check(uv_signal_start(sigint.get(), on_stop, SIGINT), "uv_signal_start");
      uv_check(uv_signal_start(sigterm.get(), on_stop, SIGTERM), "uv_signal_start");
      uv_check(uv_signal_start(
                   sigusr1.get(),
                   [](uv_signal_t* h, int) {
                     static_cast<context*>(h->data)->server->log_counters(true);
                   },
                   SIGUSR1),
               "uv_signal_start");
      if (cfg.stats_interval > 0) {
        const auto ms = static_cast<std::uint64_t>(cfg.stats_interval * 1000);
        uv_check(
            uv_timer_start(
                stats_timer.get(),
                [](uv_timer_t* t) { static_cast<context*>(t->data)->server->log_counters(true); },
                ms, ms),
            "uv_timer_start");
      }
      uv_run(&loop, UV_RUN_DEFAULT);
      server->log_counters(false);
      log::write(log::level::info, "stopped");
    }
    server.reset();
  }
  uv_run(&loop, UV_RUN_DEFAULT);  // let close callbacks run
  if (uv_loop_close(&loop) != 0)
    log::write(log::level::warn, "event loop closed with handles still open");
  return code;
}

}  // namespace ferry::server
