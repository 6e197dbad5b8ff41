#include "server/udp_server.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>
#include <tuple>

#include "common/codec.hpp"
#include "common/digest.hpp"
#include "common/log.hpp"
#include "common/udp_gso.hpp"

namespace ferry::server {

using protocol::errc;

namespace {
// How long an open descriptor is reused before the path is resolved again. Bounds how long a
// renamed or replaced file keeps being served from its old inode.
constexpr std::uint64_t file_reuse_ms = 1000;
constexpr std::size_t max_open_files = 64;
constexpr std::size_t max_cached_digests = 4096;

// Datagrams read per recvmmsg call, and calls per wake-up: enough to drain a busy socket in
// one turn of the loop, so that every client's requests are seen before any is served.
constexpr unsigned recv_batch = 64;
constexpr int recv_rounds = 16;
// A slot holds what UDP GRO coalesces from one client (its runs of GETs, sent with GSO), up to
// 64 KiB. A datagram longer than any request is dropped as truncated, never decoded.
constexpr std::size_t recv_slot = 64 * 1024;
// GETs served per turn of the loop, round-robin across clients, before reading again.
constexpr std::size_t serve_per_turn = 64;
// While clients share the server, a turn is shorter, so that each is asked for its next GETs
// soon: a client with a congestion window then keeps its part of every turn filled.
constexpr std::size_t shared_turn = 16;
// Bytes of waiting GETs across all clients, paths included: a path may be 4096 bytes, so a
// count alone would let queues of long paths outgrow the server's memory budget.
constexpr std::size_t max_queued_bytes = 4u << 20;
// Client entries older than this do not count as active.
constexpr std::uint64_t client_active_ms = 60'000;
// A client with nothing queued or running is forgotten after this long, keeping only when it
// was last heard from: every run of a command-line client comes from a new port, and their
// queues and buckets must not pile up.
constexpr std::uint64_t client_idle_ms = 2'000;
constexpr std::uint64_t prune_every_ms = 1'000;

// Replies gathered for one sendmmsg: at most a turn's worth, and at most out_capacity bytes.
constexpr std::size_t out_capacity = 512u << 10;
constexpr std::size_t max_out = serve_per_turn;
// Consecutive blocks of one file read with one system call; a client's GETs usually are.
constexpr std::size_t max_run = 32;
// Runs of at least this many bytes are sent from a mapping of the file rather than read.
constexpr std::uint64_t min_mapped_run = 48 * 1024;

iovec make_iov(const void* p, std::size_t n) { return iovec{const_cast<void*>(p), n}; }
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
  bool has_client = false;  // counts against a client's max_client_jobs
  udp_server::peer_key client;
  std::size_t buffer_bytes = 0;  // of a block buffer it holds, for stats::held_peak
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
    // Its bytes were charged to the rate limits when the job was admitted.
    s.send_data(peer, request_id, offset, outcome, buffer.get(), false);
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
    if (!info) {
      if (rel.empty()) s.note_root_refusal(info.error());
      return s.send_error(peer, request_id, info.error());
    }
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
    if (!page) {
      if (rel.empty()) s.note_root_refusal(page.error());
      return s.send_error(peer, request_id, page.error());
    }
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

udp_server::udp_server(uv_loop_t* loop, config cfg, std::shared_ptr<shared_state> shared)
    : loop_{loop},
      cfg_{std::move(cfg)},
      shared_{shared ? std::move(shared) : std::make_shared<shared_state>(cfg_.max_rate)},
      validator_{shared_->validator},
      serve_idle_{loop, uv_idle_init},
      rate_timer_{loop, uv_timer_init},
      prune_timer_{loop, uv_timer_init},
      stop_async_{loop, uv_async_init,
                  [](uv_async_t* a) { static_cast<udp_server*>(a->data)->stop(); }},
      counters_async_{loop, uv_async_init,
                      [](uv_async_t* a) {
                        auto& s = *static_cast<udp_server*>(a->data);
                        s.publish_active_addresses();
                        if (s.counters_done_) s.counters_done_();
                      }},
      recv_buf_{std::make_unique_for_overwrite<std::byte[]>(recv_batch * recv_slot)},
      out_buf_{std::make_unique_for_overwrite<std::byte[]>(out_capacity)},
      total_rate_{shared_->total_rate},
      dirs_{std::make_shared<dir_cache>()} {
  cfg_.max_block = std::clamp(cfg_.max_block, protocol::min_block_size, protocol::max_block_size);
  stop_async_.get()->data = this;
  counters_async_.get()->data = this;
  serve_idle_.get()->data = this;
  rate_timer_.get()->data = this;
  prune_timer_.get()->data = this;
  uv_timer_start(
      prune_timer_.get(),
      [](uv_timer_t* t) {
        auto& s = *static_cast<udp_server*>(t->data);
        s.prune_clients();
        s.check_root();
      },
      prune_every_ms, prune_every_ms);
  ::uv_unref(stop_async_.handle());
  ::uv_unref(counters_async_.handle());

  const int root = ::open(cfg_.root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0)
    throw std::runtime_error{fmt::format("cannot serve '{}': {}", cfg_.root, std::strerror(errno))};
  root_.reset(root);

  std::string why;
  auto ep = resolve(host_port{cfg_.bind, cfg_.port}, why);
  if (!ep) throw std::runtime_error{fmt::format("cannot bind '{}': {}", cfg_.bind, why)};
  // The server owns its socket rather than a uv_udp_t, to read and serve in batches.
  const int fd = ::socket(ep->family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    throw std::runtime_error{fmt::format("cannot open a UDP socket: {}", std::strerror(errno))};
  socket_.reset(fd);
  if (ep->family() == AF_INET6) {
    // "--bind ::" serves IPv4 too, whatever the system's default says.
    const int off = 0;
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
  }
  const int on = 1;
  if (cfg_.share_port == port_sharing::any &&
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0)
    throw std::runtime_error{fmt::format("cannot share a port: {}", std::strerror(errno))};
  if (::bind(fd, ep->addr(), ep->length) != 0) {
    const int err = errno;
    const char* hint = err == EADDRINUSE && cfg_.share_port == port_sharing::any
                           ? " (held by a ferryd without --reuseport, or by another user)"
                       : err == EADDRINUSE ? " (is another ferryd running? choose another --port)"
                       : err == EADDRNOTAVAIL ? " (that address is not on this machine)"
                       : err == EACCES        ? " (ports below 1024 need privileges)"
                                              : "";
    throw std::runtime_error{
        fmt::format("cannot bind {}: {}{}", to_string(*ep), std::strerror(err), hint)};
  }
  // Set after the bind, SO_REUSEPORT still lets later sockets join this one, while the bind
  // itself refused a busy port. For port 0 it matters too: with the option set, the kernel may
  // pick a port that another sharing group of the same user holds.
  if (cfg_.share_port == port_sharing::later &&
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0)
    throw std::runtime_error{fmt::format("cannot share a port: {}", std::strerror(errno))};
  // A client's runs of GETs, sent with UDP GSO, then arrive as one buffer each rather than one
  // datagram each. A kernel without it delivers them one by one, which works as well.
  (void)::setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on);
  // Replies are never IP-fragmented. A block the path cannot carry whole is better lost whole:
  // one lost fragment would lose it anyway, and the client, seeing no block arrive, asks for
  // smaller ones (docs/PROTOCOL.md, Sizes).
  const int dont_fragment = IP_PMTUDISC_DO;
  (void)::setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &dont_fragment, sizeof dont_fragment);
  if (ep->family() == AF_INET6) {
    const int v6 = IPV6_PMTUDISC_DO;
    (void)::setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &v6, sizeof v6);
  }
  // As root the FORCE variants pass net.core.[rw]mem_max; otherwise take what the cap allows.
  const int want = cfg_.socket_buffer;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof want) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
  int got = 0;
  socklen_t len = sizeof got;
  if (::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) == 0 && got < want)
    log::warn("receive buffer is {} bytes, asked for {} (raise net.core.rmem_max)", got / 2, want);

  poll_ = std::make_unique<uv_owned<uv_poll_t>>(loop_, uv_poll_init, fd);
  poll_->get()->data = this;
  update_poll();
}

udp_server::~udp_server() { stop(); }

endpoint udp_server::local_endpoint() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (!socket_ || ::getsockname(socket_.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    return {};
  return endpoint::from(reinterpret_cast<const sockaddr*>(&ss));
}

void udp_server::stop() noexcept {
  if (stopping_) return;
  stopping_ = true;
  // Closing the poll handle stops it at once, so the socket may be closed right after.
  if (poll_) poll_->close();
  socket_.reset();
  serve_idle_.close();
  rate_timer_.close();
  prune_timer_.close();
  {
    // request_stop() may be running on another thread: the handle must not close under it.
    std::lock_guard lock{stop_mutex_};
    stop_async_.close();
    counters_async_.close();
  }
  files_.clear();
  out_.clear();
  out_used_ = 0;
  send_queue_.clear();
  send_queued_ = 0;
  clients_.clear();
  by_recency_.clear();
  per_prefix_.clear();
  ready_.clear();
  queued_total_ = 0;
  queued_bytes_ = 0;
}

void udp_server::request_stop() noexcept {
  std::lock_guard lock{stop_mutex_};
  if (auto* a = stop_async_.get(); a != nullptr) uv_async_send(a);
}

void udp_server::request_counters() noexcept {
  std::lock_guard lock{stop_mutex_};
  if (auto* a = counters_async_.get(); a != nullptr) uv_async_send(a);
}

void udp_server::update_poll() noexcept {
  if (stopping_ || !poll_) return;
  const int events = UV_READABLE | (send_queue_.empty() ? 0 : UV_WRITABLE);
  if (events == poll_events_) return;
  poll_events_ = events;
  uv_poll_start(poll_->get(), events, [](uv_poll_t* h, int status, int ev) {
    static_cast<udp_server*>(h->data)->on_poll(status, ev);
  });
}

void udp_server::on_poll(int status, int events) noexcept {
  if (status < 0) {
    // libuv stops a poll handle on POLLERR. Clear the socket's error and poll again, or one
    // ICMP error would end all serving.
    ++stats_.recv_errors;
    int err = 0;
    socklen_t len = sizeof err;
    (void)::getsockopt(socket_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    poll_events_ = 0;
    update_poll();
    return;
  }
  if (events & UV_WRITABLE) flush_send_queue();
  if (events & UV_READABLE) receive_batch();
  schedule_serving();
}

void udp_server::receive_batch() noexcept {
  mmsghdr msgs[recv_batch];
  iovec iov[recv_batch];
  sockaddr_storage from[recv_batch];
  udp_gso::gro_control ctrl[recv_batch];
  for (int round = 0; round < recv_rounds && !stopping_; ++round) {
    for (unsigned i = 0; i < recv_batch; ++i) {
      iov[i] = make_iov(recv_buf_.get() + i * recv_slot, recv_slot);
      msgs[i] = mmsghdr{};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &from[i];
      msgs[i].msg_hdr.msg_namelen = sizeof from[i];
      msgs[i].msg_hdr.msg_control = ctrl[i].bytes;
      msgs[i].msg_hdr.msg_controllen = sizeof ctrl[i].bytes;
    }
    const int n = ::recvmmsg(socket_.get(), msgs, recv_batch, MSG_DONTWAIT, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) ++stats_.recv_errors;
      return;
    }
    for (int i = 0; i < n && !stopping_; ++i) {
      auto& h = msgs[i].msg_hdr;
      const std::span<const std::byte> all{recv_buf_.get() + i * recv_slot, msgs[i].msg_len};
      if (h.msg_flags & MSG_TRUNC) {
        ++stats_.datagrams_in;
        stats_.bytes_in += all.size();
        ++stats_.dropped_truncated;
        continue;
      }
      const auto peer = endpoint::from(reinterpret_cast<const sockaddr*>(&from[i]));
      udp_gso::for_each_datagram(all, udp_gso::gro_segment(h), [&](auto one) {
        ++stats_.datagrams_in;
        stats_.bytes_in += one.size();
        if (one.size() > protocol::max_request_size) {
          ++stats_.dropped_truncated;  // longer than any request: never decoded
        } else {
          try {
            handle_datagram(one, peer);
          } catch (const std::exception& e) {
            ++stats_.internal_errors;
            log::debug("datagram dropped: {}", e.what());
          } catch (...) {
            ++stats_.internal_errors;
          }
        }
      });
    }
    if (static_cast<unsigned>(n) < recv_batch) return;
  }
}

void udp_server::handle_datagram(std::span<const std::byte> bytes, const endpoint& peer) {
  if (stopping_) return;
  const auto now = uv_now(loop_);
  // What an unvalidated source may be sent in answer to this datagram.
  const auto limit = bytes.size() * protocol::amplification_limit;
  auto validated = [&](const protocol::header& h) {
    return !cfg_.validate_addresses ||
           (h.has_token() && validator_.valid(h.token, peer.addr(), now));
  };
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
      send_error(peer, codec::peek_request_id(bytes), errc::unsupported_version, limit);
    } else if (h && protocol::is_request_type(static_cast<std::uint8_t>(h->type)) &&
               bytes.size() <= protocol::max_request_size) {
      send_error(peer, h->request_id, decoded.error(), validated(*h) ? no_limit : limit);
    }
    return;
  }
  const auto id = decoded->hdr.request_id;
  if (!validated(decoded->hdr)) {
    // Stateless: the server remembers nothing of a source until it echoes a valid token.
    ++stats_.unvalidated;
    const auto before = stats_.amplification_withheld.load();
    send_reply(peer, id, protocol::token_reply{validator_.issue(peer.addr(), now)}, limit);
    if (stats_.amplification_withheld.load() == before) ++stats_.tokens_sent;
    return;
  }
  // Every request that decodes and validates counts as one of its type, served or not.
  static constexpr std::atomic<std::uint64_t> stats::*by_type[] = {
      &stats::list_requests, &stats::stat_requests, &stats::get_requests};
  ++(stats_.*by_type[decoded->body.index()]);
  auto* client = client_for(peer);
  if (client == nullptr) {
    // Only when max_clients validated addresses are all active at once. Counted in GETs, as
    // at a full client queue.
    const auto* get = std::get_if<protocol::get_request>(&decoded->body);
    stats_.dropped_queue_full += get != nullptr ? get->count : 1;
    return;
  }
  client->last_seen_ms = now;
  if (log::current_level() == log::level::debug) log_request(peer, id, decoded->body);
  std::visit(
      [&](const auto& req) {
        using T = std::decay_t<decltype(req)>;
        if constexpr (std::is_same_v<T, protocol::get_request>) {
          stats_.blocks_asked += req.count;
          handle_get(*client, id, req);
        }
        if constexpr (std::is_same_v<T, protocol::stat_request>) handle_stat(*client, id, req);
        if constexpr (std::is_same_v<T, protocol::list_request>) handle_list(*client, id, req);
      },
      decoded->body);
}

void udp_server::handle_get(client_state& c, std::uint64_t id, const protocol::get_request& req) {
  auto rel = normalize_wire_path(req.path);
  if (!rel) return send_error(c.peer, id, rel.error());
  if (rel->empty()) return send_error(c.peer, id, errc::not_regular);
  const auto cost = sizeof(pending_get) + rel->size();
  const auto block = std::min(req.block_size, cfg_.max_block);
  // A GET-RUN is that many GETs, queued and served one by one like any others.
  for (std::uint16_t i = 0; i < req.count; ++i) {
    if (c.queue.size() >= cfg_.max_client_queue || queued_bytes_ + cost > max_queued_bytes) {
      // This client asks faster than it is served: its surplus is lost, as at a full router
      // queue, and its own congestion control slows it down. Nobody else waits for it.
      stats_.dropped_queue_full += req.count - i;
      break;
    }
    // The path is copied for all but the last, which takes it: a plain GET copies nothing.
    const bool last = i + 1 == req.count;
    c.queue.push_back(pending_get{id + i, last ? std::move(*rel) : *rel,
                                  req.offset + std::uint64_t{i} * req.block_size, block});
    ++queued_total_;
    queued_bytes_ += cost;
    note_held();
  }
  if (c.queue.empty()) return;
  if (!c.ready) {
    c.ready = true;
    ready_.push_back(c.key);
  }
  schedule_serving();
}

void udp_server::schedule_serving() noexcept {
  if (stopping_ || ready_.empty() || !send_queue_.empty() || rate_timer_armed_) return;
  uv_idle_start(serve_idle_.get(), [](uv_idle_t* h) {
    static_cast<udp_server*>(h->data)->serve_turn();
  });
}

void udp_server::serve_turn() noexcept {
  uv_idle_stop(serve_idle_.get());
  if (stopping_) return;
  const auto now = uv_now(loop_);
  // Each client waiting now, or served last turn (its next GETs may still be on the way), gets
  // an equal part of the turn. A client with less to ask leaves its part unused, and the turn
  // just ends sooner, so the next read comes sooner: a greedy client is held to its part even
  // while a normal client's queue is momentarily empty.
  const auto sharing = std::max<std::size_t>({ready_.size(), clients_last_turn_, 1});
  const auto quota = sharing == 1 ? serve_per_turn : std::max<std::size_t>(4, shared_turn / sharing);
  ++turn_;
  std::size_t served = 0, clients_served = 0, passes = 0;
  std::uint64_t wait = 0;  // ms until a rate limit lets more go
  bool rate_blocked = false;
  while (!ready_.empty() && served < serve_per_turn && send_queue_.empty()) {
    if (!total_rate_.ready(now)) {
      wait = total_rate_.wait_ms();
      rate_blocked = true;
      break;
    }
    const auto key = ready_.front();
    ready_.pop_front();
    auto it = clients_.find(key);
    if (it == clients_.end()) continue;
    auto& c = it->second;
    if (c.queue.empty()) {
      c.ready = false;
      continue;
    }
    ready_.push_back(key);
    if (c.turn != turn_) {
      c.turn = turn_;
      c.served_in_turn = 0;
    }
    const bool rate_ok = c.rate.ready(now);
    if (!rate_ok) wait = wait == 0 ? c.rate.wait_ms() : std::min(wait, c.rate.wait_ms());
    if (!rate_ok || c.jobs >= cfg_.max_client_jobs || c.served_in_turn >= quota) {
      // This client has had its part for now; the others go on. A full pass over every
      // waiting client that serves nobody ends the turn.
      if (++passes >= ready_.size()) break;
      continue;
    }
    passes = 0;
    if (c.served_in_turn == 0) ++clients_served;
    // The GETs at the front of its queue that ask for the blocks following each other, within
    // its part of the turn. With a rate limit, one at a time, so that no run overshoots it.
    const bool limited = cfg_.max_rate != 0 || cfg_.max_client_rate != 0;
    const auto most = limited ? 1 : std::min({max_run, quota - c.served_in_turn,
                                              serve_per_turn - served});
    std::size_t n = 1;
    while (n < most && n < c.queue.size()) {
      const auto& prev = c.queue[n - 1];
      const auto& g = c.queue[n];
      if (g.block != prev.block || g.offset != prev.offset + prev.block || g.rel != prev.rel)
        break;
      ++n;
    }
    pending_get run[max_run];
    for (std::size_t i = 0; i < n; ++i) {
      run[i] = std::move(c.queue.front());
      c.queue.pop_front();
      queued_bytes_ -= sizeof(pending_get) + run[i].rel.size();
    }
    queued_total_ -= n;
    c.served_in_turn += n;
    served += n;
    try {
      serve_run(c, key, {run, n});
    } catch (...) {
      ++stats_.internal_errors;
    }
  }
  flush_out();
  clients_last_turn_ = clients_served;
  // Keep only clients that still wait in ready_.
  std::erase_if(ready_, [&](const peer_key& k) {
    auto it = clients_.find(k);
    if (it != clients_.end() && !it->second.queue.empty()) return false;
    if (it != clients_.end()) it->second.ready = false;
    return true;
  });
  if (served == 0 && wait > 0 && !ready_.empty()) rate_blocked = true;
  if (rate_blocked && !rate_timer_armed_) {
    ++stats_.rate_waits;
    rate_timer_armed_ = true;
    uv_timer_start(
        rate_timer_.get(),
        [](uv_timer_t* t) {
          auto& s = *static_cast<udp_server*>(t->data);
          s.rate_timer_armed_ = false;
          s.schedule_serving();
        },
        std::max<std::uint64_t>(wait, 1), 0);
    return;
  }
  // Whatever still waits is served next turn, after the socket has been read again. A client
  // held back only by its job cap is woken by its job's completion.
  if (served > 0) schedule_serving();
}

void udp_server::serve_run(client_state& c, const peer_key& key, std::span<pending_get> run) {
  std::size_t done = 0;
  const auto* cached = cached_file(run[0].rel);
  if (cached != nullptr && cached->whole) done = serve_mapped(c, *cached, run);
  if (done == 0 && cached != nullptr && run.size() > 1) {
    const auto block = run[0].block;
    const auto stride = protocol::data_reply_overhead + block;
    if (out_.size() + run.size() > max_out || out_used_ + run.size() * stride > out_capacity)
      flush_out();
    const auto n = std::min({run.size(), max_out - out_.size(), out_capacity / stride});
    // Each payload lands right behind its prefix; every block but a last one is whole, so the
    // replies lie back to back, as add_out() appends them.
    std::byte* slots[max_run];
    read_outcome outcomes[max_run];
    for (std::size_t i = 0; i < n; ++i)
      slots[i] = out_buf_.get() + out_used_ + i * stride + protocol::data_reply_overhead;
    const auto whole = read_blocks(cached->fd->get(), run[0].offset, block, {slots, n},
                                   {outcomes, n}, !cached->in_memory);
    for (; done < whole; ++done) {
      if (out_buf_.get() + out_used_ + protocol::data_reply_overhead != slots[done]) break;
      ++stats_.reads_inline;
      add_out(c, run[done].id, run[done].offset, outcomes[done]);
      c.rate.charge(outcomes[done].length + protocol::data_reply_overhead);
    }
  }
  for (; done < run.size(); ++done) serve_get(c, key, run[done]);
}

std::size_t udp_server::serve_mapped(client_state& c, const open_file& f,
                                     std::span<pending_get> run) {
  // Below this, mapping and unmapping cost more than the copy they save: for 512 MiB in runs
  // of 32 blocks of 1390 bytes (44,480 bytes), ferryd took 0.70-0.75 s of CPU through mappings
  // against 0.59-0.61 s reading; in runs of 65,024-byte blocks, 0.18-0.19 s against 0.20-0.23 s.
  // The run's blocks as asked bound what it can span, so a short run costs no fstat here.
  std::uint64_t asked = 0;
  for (const auto& g : run) asked += g.block;
  if (asked < min_mapped_run) return 0;
  struct stat st {};
  if (::fstat(f.fd->get(), &st) != 0) return 0;
  const auto version = version_of(st);
  const auto size = version.size;
  // The GETs of the run (consecutive blocks) that lie within the file and within the mapping
  // that tells what is cached; an empty reply at the end, or a part of the file that grew since
  // it was mapped, is read.
  std::size_t n = 0;
  std::uint64_t end = run[0].offset;
  for (; n < run.size(); ++n) {
    const auto offset = run[n].offset;
    if (offset >= size) break;
    const auto length = std::min<std::uint64_t>(run[n].block, size - offset);
    if (offset + length > f.whole->end()) break;
    end = offset + length;
  }
  const auto begin = run[0].offset;
  if (n == 0 || end - begin < min_mapped_run) return 0;  // cut short by the end of the file
  // What is not in the page cache is read instead: on a disk it would block the loop (the pool
  // reads it), and a hole of a tmpfs file, mapped, would be filled with pages of zeros that a
  // read does not need (a 5 GiB sparse file took ferryd 10 s of CPU and 5 GiB that way).
  if (!f.whole->resident(begin, end - begin)) return 0;
  // A mapping of just this run, gone once its replies are sent: the process's resident set
  // then holds only what it is sending, whereas one long-lived mapping would gather every page
  // read through it (and the pages the kernel maps around each fault).
  auto map = file_mapping::map(f.fd->get(), begin, end - begin, true);
  if (!map) return 0;
  std::size_t done = 0;
  for (; done < n; ++done) {
    const auto& g = run[done];
    read_outcome r;
    r.version = version;
    r.length = static_cast<std::uint32_t>(std::min<std::uint64_t>(g.block, size - g.offset));
    r.eof = g.offset + r.length == size;
    if (!add_out_mapped(c, g.id, g.offset, r, map)) break;
    ++stats_.reads_inline;
    c.rate.charge(r.length + protocol::data_reply_overhead);
  }
  return done;
}

void udp_server::serve_get(client_state& c, const peer_key& key, pending_get& g) {
  const auto* cached = cached_file(g.rel);
  std::shared_ptr<unique_fd> file = cached != nullptr ? cached->fd : nullptr;
  if (file) {
    // Page-cache hits are served right here; anything that would wait for a disk goes to the pool.
    const bool in_memory = cached->in_memory;
    auto r = read_block(file->get(), g.offset, g.block, out_payload_slot(g.block), !in_memory);
    if (!r.would_block) {
      ++stats_.reads_inline;
      if (r.error != errc::ok) return send_error(c.peer, g.id, r.error);
      add_out(c, g.id, g.offset, r);
      c.rate.charge(r.length + protocol::data_reply_overhead);
      return;
    }
  }
  auto job = std::make_unique<get_job>();
  job->peer = c.peer;
  job->request_id = g.id;
  job->rel = std::move(g.rel);
  job->root_fd = root_.get();
  job->offset = g.offset;
  job->block = g.block;
  job->file = std::move(file);
  job->buffer = std::make_unique_for_overwrite<std::byte[]>(g.block);
  job->buffer_bytes = g.block;
  job->has_client = true;
  job->client = key;
  // Charged now, not when the block goes out: the jobs admitted in one turn would otherwise
  // all pass the same full bucket and overshoot the rate together.
  const auto bytes = std::uint64_t{g.block} + protocol::data_reply_overhead;
  total_rate_.charge(bytes);
  c.rate.charge(bytes);
  ++stats_.reads_pooled;
  submit(std::move(job));
}

void udp_server::handle_stat(client_state& c, std::uint64_t id, const protocol::stat_request& req) {
  auto rel = normalize_wire_path(req.path);
  if (!rel) return send_error(c.peer, id, rel.error());
  auto job = std::make_unique<stat_job>();
  job->peer = c.peer;
  job->request_id = id;
  job->rel = std::move(*rel);
  job->root_fd = root_.get();
  job->has_client = true;
  job->client = c.key;
  submit(std::move(job));
}

void udp_server::handle_list(client_state& c, std::uint64_t id, const protocol::list_request& req) {
  auto rel = normalize_wire_path(req.path);
  if (!rel) return send_error(c.peer, id, rel.error());
  auto job = std::make_unique<list_job>();
  job->peer = c.peer;
  job->request_id = id;
  job->rel = std::move(*rel);
  job->root_fd = root_.get();
  job->cursor = req.cursor;
  job->dirs = dirs_;
  job->has_client = true;
  job->client = c.key;
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
  client_state* owner = nullptr;
  if (job->has_client) {
    if (auto it = clients_.find(job->client); it != clients_.end()) owner = &it->second;
  }
  if (jobs_in_flight_ >= cfg_.max_jobs || (owner != nullptr && owner->jobs >= cfg_.max_client_jobs)) {
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
        s.job_bytes_ -= j->buffer_bytes;
        if (j->counts_as_digest) --s.digest_jobs_;
        if (j->has_client && !s.stopping_) {
          if (auto it = s.clients_.find(j->client); it != s.clients_.end() && it->second.jobs > 0)
            --it->second.jobs;
        }
        if (status != 0 || s.stopping_) {
          if (j->counts_as_digest) s.digesting_.erase(static_cast<digest_job&>(*j).version);
          return;
        }
        try {
          j->done(s);
        } catch (...) {
          ++s.stats_.internal_errors;
        }
        s.schedule_serving();
      });
  if (rc != 0) {
    ++stats_.internal_errors;
    if (!job->counts_as_digest) send_error(job->peer, job->request_id, errc::busy);
    return false;
  }
  ++jobs_in_flight_;
  job_bytes_ += job->buffer_bytes;
  note_held();
  if (job->counts_as_digest) ++digest_jobs_;
  if (owner != nullptr) ++owner->jobs;
  (void)job.release();
  return true;
}

const udp_server::open_file* udp_server::cached_file(const std::string& rel) {
  auto it = files_.find(rel);
  if (it == files_.end()) return nullptr;
  if (uv_now(loop_) - it->second.opened_ms > file_reuse_ms) {
    files_.erase(it);
    return nullptr;
  }
  return &it->second;
}

void udp_server::remember_file(const std::string& rel, std::shared_ptr<unique_fd> fd) {
  if (files_.size() >= max_open_files && !files_.contains(rel)) {
    auto oldest = files_.begin();
    for (auto it = files_.begin(); it != files_.end(); ++it)
      if (it->second.opened_ms < oldest->second.opened_ms) oldest = it;
    files_.erase(oldest);
  }
  const bool in_memory = reads_from_memory(fd->get());
  struct stat st {};
  // Mapped whole once, never read, only to ask which of its pages are in the page cache.
  auto whole = ::fstat(fd->get(), &st) == 0
                   ? file_mapping::map(fd->get(), 0, version_of(st).size, false)
                   : nullptr;
  files_[rel] = open_file{std::move(fd), std::move(whole), uv_now(loop_), in_memory};
}

void udp_server::send(const endpoint& peer, std::span<const iovec> bufs, bool charge) noexcept {
  if (!socket_) return;
  std::size_t total = 0;
  for (const auto& b : bufs) total += b.iov_len;
  if (charge) total_rate_.charge(total);
  if (send_queue_.empty()) {
    msghdr m{};
    m.msg_name = const_cast<sockaddr*>(peer.addr());
    m.msg_namelen = peer.length;
    m.msg_iov = const_cast<iovec*>(bufs.data());
    m.msg_iovlen = bufs.size();
    if (::sendmsg(socket_.get(), &m, MSG_DONTWAIT) >= 0) {
      ++stats_.datagrams_out;
      stats_.bytes_out += total;
      return;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
      ++stats_.send_errors;
      return;
    }
  }
  queue_datagram(peer, bufs, total);
}

void udp_server::queue_datagram(const endpoint& peer, std::span<const iovec> bufs,
                                std::size_t total) noexcept {
  // The socket buffer is full: keep a copy, within a bound, or drop it. The client asks again.
  if (send_queued_ + total > cfg_.max_send_queue) {
    ++stats_.send_dropped;
    return;
  }
  try {
    queued_datagram q{peer, std::make_unique_for_overwrite<std::byte[]>(total), total};
    struct copy {
      std::byte* to;
      std::span<const iovec> from;
    } job{q.bytes.get(), bufs};
    // A payload may lie in a file mapping, and the file may have shrunk since it was hashed.
    const bool copied = read_mapped(
        [](void* p) {
          auto& x = *static_cast<copy*>(p);
          for (const auto& b : x.from) {
            std::memcpy(x.to, b.iov_base, b.iov_len);
            x.to += b.iov_len;
          }
        },
        &job);
    if (!copied) {
      ++stats_.send_dropped;
      return;
    }
    send_queue_.push_back(std::move(q));
    send_queued_ += total;
    note_held();
    update_poll();
  } catch (...) {
    ++stats_.send_dropped;
  }
}

std::byte* udp_server::out_payload_slot(std::uint32_t block) noexcept {
  if (out_.size() >= max_out || out_used_ + protocol::data_reply_overhead + block > out_capacity)
    flush_out();
  return out_buf_.get() + out_used_ + protocol::data_reply_overhead;
}

void udp_server::add_out(const client_state& c, std::uint64_t id, std::uint64_t offset,
                         const read_outcome& r) noexcept {
  protocol::data_reply meta;
  meta.offset = offset;
  meta.eof = r.eof;
  meta.version = r.version;
  meta.length = r.length;
  std::byte* at = out_buf_.get() + out_used_;
  const std::span<const std::byte> payload{at + protocol::data_reply_overhead, r.length};
  auto n = codec::encode_data_prefix({at, protocol::data_reply_overhead}, id, meta, payload);
  // The payload was read right behind a prefix of exactly this size.
  if (!n || *n != protocol::data_reply_overhead) {
    ++stats_.internal_errors;
    return;
  }
  const auto size = protocol::data_reply_overhead + r.length;
  total_rate_.charge(size);
  try {
    out_.push_back(outgoing{c.key, c.peer, out_used_, size, size, nullptr, nullptr,
                            gso_ok_ && c.gso});
  } catch (...) {
    ++stats_.send_dropped;
    return;
  }
  out_used_ += size;
}

bool udp_server::add_out_mapped(const client_state& c, std::uint64_t id, std::uint64_t offset,
                                const read_outcome& r,
                                const std::shared_ptr<const file_mapping>& map) {
  if (out_.size() >= max_out || out_used_ + protocol::data_reply_overhead > out_capacity)
    flush_out();
  struct encoding {
    std::byte* at;
    std::uint64_t id;
    protocol::data_reply meta;
    std::span<const std::byte> payload;
    bool ok;
  } e{out_buf_.get() + out_used_, id, {}, {map->at(offset), r.length}, false};
  e.meta.offset = offset;
  e.meta.eof = r.eof;
  e.meta.version = r.version;
  e.meta.length = r.length;
  // The checksum reads the whole payload, and the file may have shrunk since its fstat.
  const bool read = read_mapped(
      [](void* p) {
        auto& x = *static_cast<encoding*>(p);
        auto n = codec::encode_data_prefix({x.at, protocol::data_reply_overhead}, x.id, x.meta,
                                           x.payload);
        x.ok = n && *n == protocol::data_reply_overhead;
      },
      &e);
  if (!read) return false;
  if (!e.ok) {
    ++stats_.internal_errors;
    return true;
  }
  const auto size = protocol::data_reply_overhead + r.length;
  total_rate_.charge(size);
  try {
    out_.push_back(outgoing{c.key, c.peer, out_used_, protocol::data_reply_overhead, size,
                            e.payload.data(), map, gso_ok_ && c.gso});
  } catch (...) {
    ++stats_.send_dropped;
    return true;
  }
  out_used_ += protocol::data_reply_overhead;
  return true;
}

std::size_t udp_server::reply_iov(const outgoing& o, iovec* out) const noexcept {
  out[0] = make_iov(out_buf_.get() + o.at, o.head);
  if (o.payload == nullptr) return 1;
  out[1] = make_iov(o.payload, o.size - o.head);
  return 2;
}

void udp_server::flush_out() noexcept {
  if (out_.empty() || !socket_) {
    out_.clear();
    out_used_ = 0;
    return;
  }
  // Group each client's replies, keeping their order: equal-sized replies to one client can
  // then go out as one UDP GSO send, which crosses the network stack once instead of per block.
  std::stable_sort(out_.begin(), out_.end(), [](const outgoing& a, const outgoing& b) {
    return a.key.bytes < b.key.bytes;
  });
  mmsghdr msgs[max_out];
  iovec iov[2 * max_out];  // each reply's bytes in out_buf_, and its payload if kept apart
  udp_gso::control ctrl[max_out];
  // first[k] and count[k]: the replies message k carries.
  std::size_t first[max_out], count[max_out];
  std::size_t next = 0;  // the first reply not yet sent or given up
  while (next < out_.size() && socket_) {
    unsigned m = 0;
    std::size_t v = 0;  // iovecs used
    for (std::size_t i = next; i < out_.size(); ++m) {
      std::size_t j = i + 1, bytes = out_[i].size;
      // Every segment but the last must be exactly the first one's size.
      while (out_[i].gso && j < out_.size() && out_[j].key == out_[i].key &&
             out_[j - 1].size == out_[i].size && out_[j].size <= out_[i].size &&
             j - i < udp_gso::max_segments && bytes + out_[j].size <= udp_gso::max_bytes) {
        bytes += out_[j].size;
        ++j;
      }
      const auto first_iov = v;
      for (std::size_t k = i; k < j; ++k) v += reply_iov(out_[k], &iov[v]);
      msgs[m] = mmsghdr{};
      auto& h = msgs[m].msg_hdr;
      h.msg_name = const_cast<sockaddr*>(out_[i].peer.addr());
      h.msg_namelen = out_[i].peer.length;
      h.msg_iov = &iov[first_iov];
      h.msg_iovlen = v - first_iov;
      if (j - i > 1) udp_gso::set_segment(h, ctrl[m], static_cast<std::uint16_t>(out_[i].size));
      first[m] = i;
      count[m] = j - i;
      i = j;
    }
    const int sent = ::sendmmsg(socket_.get(), msgs, m, MSG_DONTWAIT);
    const int err = errno;
    for (int k = 0; k < std::max(sent, 0); ++k) {
      if (count[k] > 1) ++stats_.gso_sends;
      stats_.datagrams_out += count[k];
      for (std::size_t r = first[k]; r < first[k] + count[k]; ++r) stats_.bytes_out += out_[r].size;
    }
    if (sent > 0) {
      next = first[sent - 1] + count[sent - 1];
      continue;
    }
    if (sent == 0) break;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) break;
    if (count[0] > 1 && (err == EIO || err == EINVAL || err == EMSGSIZE)) {
      // EIO: the device cannot checksum segments, so no GSO at all. EINVAL or EMSGSIZE: not
      // this segment size on this client's path (a segment would be IP-fragmented), so none for
      // this client. Either way these replies go again, one datagram each.
      const auto key = out_[first[0]].key;
      ++stats_.gso_refused;
      if (err == EIO) gso_ok_ = false;
      if (auto it = clients_.find(key); it != clients_.end()) it->second.gso = false;
      for (auto& o : out_)
        if (err == EIO || o.key == key) o.gso = false;
      log::debug("UDP GSO refused ({}); sending datagrams one by one", std::strerror(err));
      continue;
    }
    ++stats_.send_errors;  // this message is lost; the client asks again
    next = first[0] + count[0];
  }
  for (; next < out_.size(); ++next) {
    iovec parts[2];
    const auto n = reply_iov(out_[next], parts);
    queue_datagram(out_[next].peer, {parts, n}, out_[next].size);
  }
  out_.clear();
  out_used_ = 0;
}

void udp_server::note_held() noexcept {
  const std::uint64_t now = queued_bytes_ + job_bytes_ + send_queued_;
  if (now > stats_.held_peak.load(std::memory_order_relaxed)) stats_.held_peak = now;
}

void udp_server::flush_send_queue() noexcept {
  while (!send_queue_.empty() && socket_) {
    auto& q = send_queue_.front();
    if (::sendto(socket_.get(), q.bytes.get(), q.size, MSG_DONTWAIT, q.peer.addr(),
                 q.peer.length) < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) break;
      ++stats_.send_errors;
    } else {
      ++stats_.datagrams_out;
      stats_.bytes_out += q.size;
    }
    send_queued_ -= q.size;
    send_queue_.pop_front();
  }
  update_poll();
}

void udp_server::send_reply(const endpoint& peer, std::uint64_t id, const protocol::reply& reply,
                            std::size_t limit) noexcept {
  std::byte out[protocol::max_small_reply];
  auto n = codec::encode_reply(out, id, reply);
  if (!n) {
    ++stats_.internal_errors;
    return;
  }
  if (*n > limit) {
    ++stats_.amplification_withheld;
    return;
  }
  const iovec iov = make_iov(out, *n);
  send(peer, {&iov, 1});
}

void udp_server::log_request(const endpoint& peer, std::uint64_t id,
                             const protocol::request& req) noexcept {
  // One line a validated request, at debug only: a busy server takes a hundred thousand a
  // second, which is a debugging aid, not an access log.
  try {
    const auto client = to_string(peer);
    const auto rid = std::to_string(id);
    if (const auto* g = std::get_if<protocol::get_request>(&req)) {
      log::write(log::level::debug, "request",
                 {{"client", client}, {"id", rid}, {"type", g->count > 1 ? "get_run" : "get"},
                  {"path", g->path}, {"offset", std::to_string(g->offset)},
                  {"block", std::to_string(g->block_size)}, {"count", std::to_string(g->count)}});
    } else if (const auto* st = std::get_if<protocol::stat_request>(&req)) {
      log::write(log::level::debug, "request",
                 {{"client", client}, {"id", rid}, {"type", "stat"}, {"path", st->path}});
    } else if (const auto* l = std::get_if<protocol::list_request>(&req)) {
      log::write(log::level::debug, "request",
                 {{"client", client}, {"id", rid}, {"type", "list"}, {"path", l->path},
                  {"cursor", l->cursor}});
    }
  } catch (...) {
  }
}

void udp_server::send_error(const endpoint& peer, std::uint64_t id, errc code,
                            std::size_t limit) noexcept {
  ++stats_.errors_sent;
  if (log::current_level() == log::level::debug) {
    try {
      log::write(log::level::debug, "refused",
                 {{"client", to_string(peer)}, {"id", std::to_string(id)},
                  {"code", std::string{protocol::code_name(code)}}});
    } catch (...) {
    }
  }
  ++stats_.refusals[static_cast<std::size_t>(code) % stats_.refusals.size()];
  try {
    protocol::error_reply e{code, std::string{protocol::to_string(code)}};
    // To an unvalidated source the code alone must do, if the text would break the limit.
    if (limit != no_limit && codec::error_reply_size(e.message.size()) > limit) e.message.clear();
    send_reply(peer, id, e, limit);
  } catch (...) {
    ++stats_.internal_errors;
  }
}

void udp_server::send_data(const endpoint& peer, std::uint64_t id, std::uint64_t offset,
                           const read_outcome& r, const std::byte* payload, bool charge) noexcept {
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
  const iovec bufs[2] = {make_iov(prefix, *n), make_iov(payload, r.length)};
  send(peer, {bufs, r.length > 0 ? 2u : 1u}, charge);
}

udp_server::peer_key udp_server::peer_key::of(const sockaddr* from) noexcept {
  peer_key key;
  (void)address_key_of(from, key.bytes);
  return key;
}

std::size_t udp_server::peer_key_hash::operator()(const peer_key& k) const noexcept {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (auto b : k.bytes) h = (h ^ std::to_integer<std::uint64_t>(b)) * 1099511628211ULL;
  return static_cast<std::size_t>(h);
}

namespace {
// The network a client address belongs to, for max_clients_per_prefix: family and the first
// 3 bytes of an IPv4 address (/24) or 7 of an IPv6 one (/56).
std::uint64_t prefix_of(const address_key& k) noexcept {
  const auto byte = [&](std::size_t i) { return std::to_integer<std::uint64_t>(k[i]); };
  if (byte(0) == 4) return 4ULL << 24 | byte(1) << 16 | byte(2) << 8 | byte(3);
  // An IPv4 client of a server bound to "::" arrives as ::ffff:a.b.c.d: its /24 is its network.
  bool mapped = byte(11) == 0xff && byte(12) == 0xff;
  for (std::size_t i = 1; i <= 10 && mapped; ++i) mapped = byte(i) == 0;
  if (mapped) return 4ULL << 24 | byte(13) << 16 | byte(14) << 8 | byte(15);
  std::uint64_t p = 6;
  for (std::size_t i = 1; i <= 7; ++i) p = p << 8 | byte(i);
  return p;
}
}  // namespace

udp_server::client_state* udp_server::client_for(const endpoint& peer) noexcept {
  const auto key = peer_key::of(peer.addr());
  if (auto it = clients_.find(key); it != clients_.end()) {
    by_recency_.splice(by_recency_.begin(), by_recency_, it->second.recency);
    return &it->second;
  }
  const auto now = uv_now(loop_);
  try {
    const auto prefix = prefix_of(key.bytes);
    if (auto p = per_prefix_.find(prefix);
        p != per_prefix_.end() && p->second >= cfg_.max_clients_per_prefix) {
      ++stats_.prefix_full;
      return nullptr;
    }
    // Full: the client heard from least recently makes room, so a new one is always served;
    // its token keeps no state, so it is served again when it comes back.
    while (clients_.size() >= cfg_.max_clients && !by_recency_.empty()) {
      if (auto victim = clients_.find(by_recency_.back()); victim != clients_.end()) {
        forget_client(victim);
        ++stats_.clients_evicted;
      } else {
        by_recency_.pop_back();  // cannot happen; never spin on it
      }
    }
    // The three structures change together or not at all, should memory run out.
    by_recency_.push_front(key);
    try {
      ++per_prefix_[prefix];
    } catch (...) {
      by_recency_.pop_front();
      throw;
    }
    try {
      auto& c = clients_[key];
      c.peer = peer;
      c.key = key;
      c.rate = token_bucket{cfg_.max_client_rate, now};
      c.recency = by_recency_.begin();
      return &c;
    } catch (...) {
      by_recency_.pop_front();
      if (auto p = per_prefix_.find(prefix); p != per_prefix_.end() && --p->second == 0)
        per_prefix_.erase(p);
      throw;
    }
  } catch (...) {
    return nullptr;
  }
}

void udp_server::forget_client(
    std::unordered_map<peer_key, client_state, peer_key_hash>::iterator it) noexcept {
  if (it == clients_.end()) return;
  auto& c = it->second;
  for (const auto& g : c.queue) queued_bytes_ -= sizeof(pending_get) + g.rel.size();
  queued_total_ -= c.queue.size();
  by_recency_.erase(c.recency);
  if (auto p = per_prefix_.find(prefix_of(c.key.bytes)); p != per_prefix_.end() && --p->second == 0)
    per_prefix_.erase(p);
  // Its key may still wait in ready_ or name a pool job: both look it up and find nothing.
  clients_.erase(it);
}

void udp_server::check_root() noexcept {
  // ferryd serves the directory it opened, not its name: once that directory is deleted, every
  // request is refused until a restart. Clients see not_found; the operator is told once.
  struct stat st {};
  if (root_gone_ || ::fstat(root_.get(), &st) != 0 || st.st_nlink != 0) return;
  root_gone_ = true;
  log::write(log::level::error, "the served directory was deleted; restart ferryd to serve it again",
             {{"root", cfg_.root}}, true);
}

void udp_server::note_root_refusal(errc code) noexcept {
  // A client that may not read the root itself is worth one line a minute, not one a request.
  const auto now = uv_now(loop_);
  if (code != errc::permission_denied || (root_refused_ms_ != 0 && now - root_refused_ms_ < 60'000))
    return;
  root_refused_ms_ = now;
  log::write(log::level::warn, "the served directory cannot be read by ferryd's user",
             {{"root", cfg_.root}}, true);
}

void udp_server::prune_clients() noexcept {
  const auto now = uv_now(loop_);
  try {
    std::erase_if(seen_, [&](const auto& s) { return now - s.second > client_active_ms; });
    for (auto it = clients_.begin(); it != clients_.end();) {
      const auto& c = it->second;
      if (!c.queue.empty() || c.jobs != 0 || c.ready || now - c.last_seen_ms <= client_idle_ms) {
        ++it;
        continue;
      }
      if (seen_.size() < cfg_.max_clients) seen_[it->first] = c.last_seen_ms;
      forget_client(it++);
    }
  } catch (...) {
    seen_.clear();
  }
}

std::size_t udp_server::active_addresses() noexcept {
  prune_clients();
  const auto now = uv_now(loop_);
  std::size_t n = 0;
  for (const auto& [key, c] : clients_) n += now - c.last_seen_ms <= client_active_ms ? 1 : 0;
  for (const auto& [key, last] : seen_) n += clients_.contains(key) ? 0 : 1;
  return n;
}

void udp_server::publish_active_addresses() noexcept {
  stats_.active_addresses = active_addresses();
}

void udp_server::log_counters(bool force) noexcept {
  publish_active_addresses();
  const udp_server* self = this;
  server::log_counters({&self, 1}, force);
}

void log_counters(std::span<const udp_server* const> servers, bool force) noexcept {
  try {
    auto n = [&](const std::atomic<std::uint64_t> stats::*field) {
      std::uint64_t sum = 0;
      for (const auto* s : servers) sum += (s->counters().*field).load();
      return std::to_string(sum);
    };
    std::string refused;
    for (std::size_t i = 1; i < std::tuple_size_v<decltype(stats::refusals)>; ++i) {
      std::uint64_t count = 0;
      for (const auto* s : servers) count += s->counters().refusals[i].load();
      if (count > 0) {
        if (!refused.empty()) refused += ',';
        refused += fmt::format("{}:{}", protocol::code_name(static_cast<errc>(i)), count);
      }
    }
    std::string gets;
    for (const auto* s : servers) {
      if (!gets.empty()) gets += ',';
      gets += std::to_string(s->counters().get_requests.load());
    }
    log::write(log::level::info, "counters",
               {{"requests_list", n(&stats::list_requests)},
                {"requests_stat", n(&stats::stat_requests)},
                {"requests_get", n(&stats::get_requests)},
                {"worker_gets", gets},
                {"blocks_asked", n(&stats::blocks_asked)},
                {"datagrams_in", n(&stats::datagrams_in)},
                {"bytes_in", n(&stats::bytes_in)},
                {"datagrams_out", n(&stats::datagrams_out)},
                {"bytes_out", n(&stats::bytes_out)},
                {"drop_malformed", n(&stats::dropped_malformed)},
                {"drop_corrupt", n(&stats::dropped_corrupt)},
                {"drop_truncated", n(&stats::dropped_truncated)},
                {"unvalidated", n(&stats::unvalidated)},
                {"tokens_sent", n(&stats::tokens_sent)},
                {"amplification_withheld", n(&stats::amplification_withheld)},
                {"drop_queue_full", n(&stats::dropped_queue_full)},
                {"rate_waits", n(&stats::rate_waits)},
                {"drop_send_queue", n(&stats::send_dropped)},
                {"recv_errors", n(&stats::recv_errors)},
                {"send_errors", n(&stats::send_errors)},
                {"busy", n(&stats::busy_sent)},
                {"errors_sent", n(&stats::errors_sent)},
                {"refusals", refused.empty() ? "none" : refused},
                {"reads_inline", n(&stats::reads_inline)},
                {"reads_pooled", n(&stats::reads_pooled)},
                {"gso_sends", n(&stats::gso_sends)},
                {"gso_refused", n(&stats::gso_refused)},
                {"digests", n(&stats::digests_computed)},
                {"internal_errors", n(&stats::internal_errors)},
                {"prefix_full", n(&stats::prefix_full)},
                {"clients_evicted", n(&stats::clients_evicted)},
                {"held_peak", n(&stats::held_peak)},
                {"active_addresses", n(&stats::active_addresses)}},
               force);
  } catch (...) {
  }
}

namespace {

// One server on a loop of its own, run by a thread of its own.
struct worker {
  uv_loop_t loop{};
  std::unique_ptr<udp_server> server;
  std::thread thread;

  worker() { uv_check(uv_loop_init(&loop), "uv_loop_init"); }
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;
  // The thread must have been asked to stop, or never started.
  ~worker() {
    if (thread.joinable()) thread.join();
    server.reset();
    uv_run(&loop, UV_RUN_DEFAULT);  // let close callbacks run
    if (uv_loop_close(&loop) != 0)
      log::write(log::level::warn, "event loop closed with handles still open");
  }
};

// The CPUs this process may run on, which taskset or a cgroup may make fewer than the machine's.
unsigned usable_cores() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// Binds every worker's socket: the first takes the port (a free one for port 0), the others join
// it. Throws with the first setup error.
std::vector<std::unique_ptr<worker>> make_workers(const config& cfg, unsigned count) {
  auto shared = std::make_shared<shared_state>(cfg.max_rate);
  std::vector<std::unique_ptr<worker>> workers;
  for (unsigned i = 0; i < count; ++i) {
    config c = cfg;
    if (i > 0) {
      c.port = workers.front()->server->local_endpoint().port();
      c.share_port = port_sharing::any;
    } else if ((c.share_port == port_sharing::any && c.port == 0) ||
               (c.share_port == port_sharing::none && count > 1)) {
      // Bound with SO_REUSEPORT, port 0 could land in another sharing group of the same user.
      c.share_port = port_sharing::later;
    }
    auto& w = *workers.emplace_back(std::make_unique<worker>());
    w.server = std::make_unique<udp_server>(&w.loop, std::move(c), shared);
  }
  return workers;
}

}  // namespace

int run_until_signalled(const config& cfg) {
  const unsigned count = cfg.workers == 0 ? usable_cores() : cfg.workers;
  std::vector<std::unique_ptr<worker>> workers;
  try {
    workers = make_workers(cfg, count);
  } catch (const std::exception& e) {
    log::write(log::level::error, e.what());
    return 1;
  }
  std::vector<const udp_server*> servers;
  for (const auto& w : workers) servers.push_back(w->server.get());
  // The main thread runs only this control loop: SIGINT and SIGTERM stop every worker, SIGUSR1
  // and a timer ask each for its counters and the last to answer has them printed, summed.
  uv_loop_t control;
  uv_check(uv_loop_init(&control), "uv_loop_init");
  int code = 0;
  {
    struct context {
      std::vector<std::unique_ptr<worker>>* workers;
      std::span<const udp_server* const> servers;
      std::atomic<std::size_t> pending{0};  // workers yet to publish their counters
      std::vector<uv_owned<uv_signal_t>*> stoppers;
      uv_owned<uv_timer_t>* timer = nullptr;
    };
    context ctx{&workers, servers, {}, {}, nullptr};
    uv_owned<uv_async_t> collect{&control, uv_async_init, [](uv_async_t* a) {
                                   log_counters(static_cast<context*>(a->data)->servers, true);
                                 }};
    collect.get()->data = &ctx;
    ::uv_unref(collect.handle());
    for (auto& w : workers) {
      w->server->on_counters_published([&ctx, a = collect.get()] {
        if (ctx.pending.fetch_sub(1) == 1) uv_async_send(a);
      });
    }
    static constexpr auto stop_all = [](context& c) {
      for (auto& w : *c.workers) w->server->request_stop();
    };
    static constexpr auto ask_counters = [](context& c) {
      std::size_t idle = 0;
      // A request still being answered is printed when it is; this one joins it.
      if (!c.pending.compare_exchange_strong(idle, c.workers->size())) return;
      for (auto& w : *c.workers) w->server->request_counters();
    };
    for (auto& w : workers) {
      w->thread = std::thread{[l = &w->loop] { uv_run(l, UV_RUN_DEFAULT); }};
    }
    try {
      uv_owned<uv_signal_t> sigint{&control, uv_signal_init};
      uv_owned<uv_signal_t> sigterm{&control, uv_signal_init};
      uv_owned<uv_signal_t> sigusr1{&control, uv_signal_init};
      uv_owned<uv_timer_t> stats_timer{&control, uv_timer_init};
      ctx.stoppers = {&sigint, &sigterm, &sigusr1};
      ctx.timer = &stats_timer;
      for (auto* h : ctx.stoppers) h->get()->data = &ctx;
      stats_timer.get()->data = &ctx;
      static constexpr auto on_stop = [](uv_signal_t* h, int signum) {
        auto& c = *static_cast<context*>(h->data);
        log::write(log::level::info, "stopping", {{"signal", std::to_string(signum)}});
        stop_all(c);
        for (auto* s : c.stoppers) s->close();
        c.timer->close();
      };
      uv_check(uv_signal_start(sigint.get(), on_stop, SIGINT), "uv_signal_start");
      uv_check(uv_signal_start(sigterm.get(), on_stop, SIGTERM), "uv_signal_start");
      static constexpr auto on_usr1 = [](uv_signal_t* h, int) {
        ask_counters(*static_cast<context*>(h->data));
      };
      uv_check(uv_signal_start(sigusr1.get(), on_usr1, SIGUSR1), "uv_signal_start");
      if (cfg.stats_interval > 0) {
        const auto ms = static_cast<std::uint64_t>(cfg.stats_interval * 1000);
        uv_check(uv_timer_start(
                     stats_timer.get(),
                     [](uv_timer_t* t) { ask_counters(*static_cast<context*>(t->data)); }, ms, ms),
                 "uv_timer_start");
      }
      // Only now, so that a script that signals ferryd as soon as it reads this line cannot
      // meet the default action of a signal.
      const auto addr = to_string(servers.front()->local_endpoint());
      std::printf("listening on %s\n", addr.c_str());
      std::fflush(stdout);
      log::write(log::level::info, "listening",
                 {{"addr", addr}, {"root", cfg.root}, {"workers", std::to_string(count)}});
      uv_run(&control, UV_RUN_DEFAULT);
    } catch (const std::exception& e) {
      log::write(log::level::error, e.what());
      stop_all(ctx);
      code = 1;
    }
    for (auto& w : workers) w->thread.join();
    // The loops have ended, so this thread may read what was theirs.
    for (auto& w : workers) w->server->publish_active_addresses();
    log_counters(servers, false);
    log::write(log::level::info, "stopped");
    workers.clear();
  }
  uv_run(&control, UV_RUN_DEFAULT);  // let close callbacks run
  if (uv_loop_close(&control) != 0)
    log::write(log::level::warn, "event loop closed with handles still open");
  return code;
}

}  // namespace ferry::server
