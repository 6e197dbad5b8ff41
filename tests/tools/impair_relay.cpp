#include "tests/tools/impair_relay.hpp"

#include <fmt/format.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <new>
#include <stdexcept>
#include <utility>

namespace ferry::impair {

namespace {

using detail::client_key;
using detail::mapping;
using detail::packet;

// Larger than any UDP payload, so a datagram is never truncated.
inline constexpr std::size_t max_datagram = 65536;
// recvmmsg batch: libuv 1.44 splits the buffer into 64 KiB chunks and reads at most 20 at once.
inline constexpr std::size_t recv_batch = 20;
// Bytes the proxy may hold in its delay heap before it drops instead of buffering more; this
// only matters when someone configures a long delay at a high rate.
inline constexpr std::size_t max_held_bytes = std::size_t{512} * 1024 * 1024;
// Bytes libuv may queue on one socket after the kernel said EAGAIN. Beyond this we drop, as a
// real router would, instead of growing without bound.
inline constexpr std::size_t send_queue_limit = std::size_t{16} * 1024 * 1024;
// Intervals of --stats-interval kept; datagrams after the last one are left out of the series.
inline constexpr std::size_t max_series_intervals = 100'000;
// Where a data-block reply's payload starts: the 16-byte header, then the body's endianness
// byte, offset, eof, version (five u64), checksum and the payload's u64 length (docs/PROTOCOL.md).
// The proxy does not link ferry_common, so it cannot take protocol::data_reply_overhead.
inline constexpr std::size_t data_payload_offset = 16 + 1 + 8 + 1 + 40 + 8 + 8;
inline constexpr std::uint8_t data_block_type = 0x83;
// Slack when draining the heap: a datagram due within this many nanoseconds leaves now, which
// saves a loop iteration and costs less than the timer granularity anyway.
inline constexpr std::uint64_t drain_slack_ns = 100'000;

std::runtime_error uv_failure(const char* what, int rc) {
  return std::runtime_error(fmt::format("{}: {} ({})", what, uv_strerror(rc), uv_err_name(rc)));
}

client_key key_of(const sockaddr* sa) noexcept {
  client_key k;
  k.family = static_cast<std::uint8_t>(sa->sa_family);
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    std::memcpy(k.address.data(), &in6->sin6_addr, 16);
    k.port = in6->sin6_port;
    k.scope = in6->sin6_scope_id;
  } else {
    const auto* in4 = reinterpret_cast<const sockaddr_in*>(sa);
    std::memcpy(k.address.data(), &in4->sin_addr, 4);
    k.port = in4->sin_port;
  }
  return k;
}

socklen_t length_of(const sockaddr* sa) noexcept {
  return sa->sa_family == AF_INET6 ? socklen_t{sizeof(sockaddr_in6)}
                                   : socklen_t{sizeof(sockaddr_in)};
}

bool earlier(const packet* a, const packet* b) noexcept {
  return a->due_ns != b->due_ns ? a->due_ns < b->due_ns : a->seq < b->seq;
}

void close_mapping_cb(uv_handle_t* handle) noexcept { delete static_cast<mapping*>(handle->data); }

}  // namespace

namespace detail {

packet_pool::~packet_pool() {
  for (packet*& head : free_) {
    while (head != nullptr) {
      packet* next = head->next_free;
      head->~packet();
      ::operator delete(static_cast<void*>(head));
      head = next;
    }
  }
}

packet* packet_pool::acquire(std::size_t size) {
  std::size_t size_class = 0;
  while (capacity_of(size_class) < size) ++size_class;
  if (size_class >= class_count) throw std::bad_alloc();
  if (packet* p = free_[size_class]) {
    free_[size_class] = p->next_free;
    p->next_free = nullptr;
    return p;
  }
  void* memory = ::operator new(sizeof(packet) + capacity_of(size_class));
  auto* p = new (memory) packet{};
  p->size_class = static_cast<std::uint8_t>(size_class);
  return p;
}

void packet_pool::release(packet* p) noexcept {
  p->next_free = free_[p->size_class];
  free_[p->size_class] = p;
}

std::size_t client_key_hash::operator()(const client_key& k) const noexcept {
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  std::memcpy(&a, k.address.data(), 8);
  std::memcpy(&b, k.address.data() + 8, 8);
  std::uint64_t h = a * 0x9e3779b97f4a7c15ULL;
  h ^= (b + (h << 6) + (h >> 2)) * 0xbf58476d1ce4e5b9ULL;
  h ^= (std::uint64_t{k.port} << 40 | std::uint64_t{k.family} << 32 | k.scope) *
       0x94d049bb133111ebULL;
  return static_cast<std::size_t>(h ^ (h >> 31));
}

}  // namespace detail

relay::relay(const config& cfg)
    : cfg_{cfg},
      rng_{xoshiro256ss{cfg.seed ^ 0x5555'5555'0000'0001ULL},
           xoshiro256ss{cfg.seed ^ 0xaaaa'aaaa'0000'0002ULL}} {
  if (int rc = uv_loop_init(&loop_); rc < 0) throw uv_failure("uv_loop_init", rc);
  loop_.data = this;
  loop_ready_ = true;
  impaired_[index_of(direction::up)] = cfg_.up.impaired();
  impaired_[index_of(direction::down)] = cfg_.down.impaired();
  upstream_key_ = key_of(cfg_.upstream.addr());
  slab_size_ = max_datagram * recv_batch;
  slab_ = std::make_unique<char[]>(slab_size_);
  slots_.assign(cfg_.max_clients, nullptr);
  // Reserved up front so that returning a slot in close_mapping can never allocate.
  free_slots_.reserve(cfg_.max_clients);
  for (std::size_t i = cfg_.max_clients; i-- > 0;)
    free_slots_.push_back(static_cast<std::uint32_t>(i));
  heap_.reserve(4096);
}

relay::~relay() {
  if (!loop_ready_) return;
  stop();
  // Handles that start() initialised before it failed are still open; close them all.
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void*) {
        if (uv_is_closing(h) == 0) uv_close(h, nullptr);
      },
      nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  if (int rc = uv_loop_close(&loop_); rc != 0)
    fmt::print(stderr, "ferry_impair: warning: uv_loop_close: {}\n", uv_strerror(rc));
  for (packet* p : heap_) pool_.release(p);
}

void relay::start() {
  const int family = cfg_.listen.family();
  if (int rc = uv_udp_init_ex(&loop_, &listen_, static_cast<unsigned>(family) | UV_UDP_RECVMMSG);
      rc < 0)
    throw uv_failure("creating the listen socket", rc);
  enlarge_buffers(&listen_);
  if (int rc = uv_udp_bind(&listen_, cfg_.listen.addr(), 0); rc < 0)
    throw uv_failure(fmt::format("binding {}", to_string(cfg_.listen.addr())).c_str(), rc);
  if (int rc = uv_udp_recv_start(&listen_, on_alloc, on_listen_recv); rc < 0)
    throw uv_failure("uv_udp_recv_start", rc);

  uv_timer_init(&loop_, &heap_timer_);
  uv_timer_init(&loop_, &sweep_timer_);
  uv_timer_init(&loop_, &deadline_timer_);
  uv_timer_start(&sweep_timer_, on_sweep_timer, 1000, 1000);
  uv_timer_start(&deadline_timer_, on_deadline,
                 static_cast<std::uint64_t>(cfg_.max_seconds * 1000.0), 0);
  uv_signal_init(&loop_, &sigint_);
  uv_signal_init(&loop_, &sigterm_);
  if (int rc = uv_signal_start(&sigint_, on_signal, SIGINT); rc < 0)
    throw uv_failure("uv_signal_start(SIGINT)", rc);
  if (int rc = uv_signal_start(&sigterm_, on_signal, SIGTERM); rc < 0)
    throw uv_failure("uv_signal_start(SIGTERM)", rc);
  started_ = true;
}

std::string relay::local_address() const {
  sockaddr_storage storage{};
  int length = sizeof(storage);
  if (uv_udp_getsockname(&listen_, reinterpret_cast<sockaddr*>(&storage), &length) != 0) return "?";
  return to_string(reinterpret_cast<const sockaddr*>(&storage));
}

void relay::run() {
  if (!started_) throw std::logic_error("relay::run before start");
  uv_run(&loop_, UV_RUN_DEFAULT);
}

void relay::stop() noexcept {
  if (stopping_) return;
  stopping_ = true;
  // Closing the libuv signal handles restores the default action, and a second SIGTERM is
  // common (timeout(1) signals the child and then its whole process group). Blocked, it stays
  // pending and the proxy still exits with status 0 after printing its statistics.
  sigset_t termination{};
  sigemptyset(&termination);
  sigaddset(&termination, SIGINT);
  sigaddset(&termination, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &termination, nullptr);
  for (mapping* m : slots_)
    if (m != nullptr) close_mapping(m);
  // Everything else (listen socket, timers, signals) has no per-handle memory to free.
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void*) {
        if (uv_is_closing(h) == 0) uv_close(h, nullptr);
      },
      nullptr);
  armed_due_ns_ = 0;
  while (!heap_.empty()) {
    packet* p = heap_pop();
    ++stats_[index_of(p->dir)].dropped_shutdown;
    pool_.release(p);
  }
}

void relay::enlarge_buffers(uv_udp_t* handle) noexcept {
  uv_os_fd_t fd{};
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(handle), &fd) != 0) return;
  const int want = cfg_.socket_buffer_bytes;
  // The FORCE variants ignore net.core.[rw]mem_max but need CAP_NET_ADMIN; without it the plain
  // options still get us up to the sysctl limit.
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want)) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want));
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof(want)) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof(want));
  if (handle == &listen_) {
    socklen_t length = sizeof(int);
    ::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffers_.first, &length);
    length = sizeof(int);
    ::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffers_.second, &length);
  }
}

// ---- Callbacks ----------------------------------------------------------------------------

void relay::on_alloc(uv_handle_t* handle, std::size_t, uv_buf_t* buf) noexcept {
  // Every datagram is forwarded or copied before its receive callback returns, so one slab can
  // serve all sockets of this single-threaded loop.
  auto& self = *static_cast<relay*>(handle->loop->data);
  *buf = uv_buf_init(self.slab_.get(), static_cast<unsigned>(self.slab_size_));
}

bool relay::receivable(direction d, ssize_t nread, const sockaddr* addr, unsigned flags) noexcept {
  auto& st = stats_[index_of(d)];
  if ((flags & UV_UDP_MMSG_FREE) != 0) return false;
  if (nread < 0) {
    // Upstream, typically ECONNREFUSED: an ICMP port unreachable because the server is not up.
    ++st.recv_errors;
    return false;
  }
  if (addr == nullptr || stopping_) return false;
  if ((flags & UV_UDP_PARTIAL) != 0) {
    ++st.received;
    ++st.dropped_truncated;
    return false;
  }
  return true;
}

void relay::on_listen_recv(uv_udp_t* handle, ssize_t nread, const uv_buf_t* buf,
                           const sockaddr* addr, unsigned flags) noexcept {
  auto& self = *static_cast<relay*>(handle->loop->data);
  if (!self.receivable(direction::up, nread, addr, flags)) return;
  auto& st = self.stats_[index_of(direction::up)];
  try {
    mapping* m = self.find_or_create_mapping(addr);
    if (m == nullptr) {
      ++st.received;
      ++st.dropped_no_mapping;
      return;
    }
    self.handle_datagram(direction::up, *m, buf->base, static_cast<std::size_t>(nread));
  } catch (...) {
    // Only allocation can fail here; the datagram is lost and the proxy keeps running.
    ++st.dropped_memory;
  }
}

void relay::on_upstream_recv(uv_udp_t* handle, ssize_t nread, const uv_buf_t* buf,
                             const sockaddr* addr, unsigned flags) noexcept {
  auto& self = *static_cast<relay*>(handle->loop->data);
  if (!self.receivable(direction::down, nread, addr, flags)) return;
  auto& m = *static_cast<mapping*>(handle->data);
  if (self.cfg_.follow_upstream_port) {
    // The socket is unconnected, so the kernel no longer filters by source; we do, by host.
    client_key from = key_of(addr);
    from.port = self.upstream_key_.port;
    if (!(from == self.upstream_key_)) {
      auto& st = self.stats_[index_of(direction::down)];
      ++st.received;
      ++st.dropped_foreign;
      return;
    }
    m.server_length = length_of(addr);
    std::memcpy(&m.server, addr, m.server_length);
  }
  try {
    self.handle_datagram(direction::down, m, buf->base, static_cast<std::size_t>(nread));
  } catch (...) {
    ++self.stats_[index_of(direction::down)].dropped_memory;
  }
}

void relay::on_send(uv_udp_send_t* req, int status) noexcept {
  auto& self = *static_cast<relay*>(req->handle->loop->data);
  auto* p = reinterpret_cast<packet*>(req);
  auto& st = self.stats_[index_of(p->dir)];
  if (status == 0)
    ++st.forwarded;
  else if (status == UV_ECANCELED)
    ++st.dropped_shutdown;
  else
    ++st.dropped_send;
  self.pool_.release(p);
}

void relay::on_heap_timer(uv_timer_t* timer) noexcept {
  auto& self = *static_cast<relay*>(timer->loop->data);
  self.armed_due_ns_ = 0;
  const std::uint64_t now = uv_hrtime();
  while (!self.heap_.empty() && self.heap_.front()->due_ns <= now + drain_slack_ns) {
    packet* p = self.heap_pop();
    if (p->held) {
      // Nothing overtook it within --reorder-timeout; let it go anyway.
      self.unlink_held(p);
      const direction d = p->dir;
      try {
        self.release_held(p, now);
      } catch (...) {
        // Re-queueing a just-popped packet cannot grow the heap, so this is only a safeguard;
        // heap_push has already returned the packet to the pool.
        ++self.stats_[index_of(d)].dropped_memory;
      }
      continue;
    }
    self.transmit(p->dir, self.mapping_for(p->slot, p->generation), p->data(), p->size, p);
  }
  self.rearm_heap_timer();
}

void relay::on_sweep_timer(uv_timer_t* timer) noexcept {
  auto& self = *static_cast<relay*>(timer->loop->data);
  const std::uint64_t now = uv_now(&self.loop_);
  const auto idle_ms = static_cast<std::uint64_t>(self.cfg_.idle_timeout_s * 1000.0);
  for (mapping* m : self.slots_)
    if (m != nullptr && now - m->last_active_ms > idle_ms) self.close_mapping(m);
}

void relay::on_deadline(uv_timer_t* timer) noexcept {
  static_cast<relay*>(timer->loop->data)->stop();
}

void relay::on_signal(uv_signal_t* handle, int) noexcept {
  static_cast<relay*>(handle->loop->data)->stop();
}

// ---- Client mappings ----------------------------------------------------------------------

mapping* relay::find_or_create_mapping(const sockaddr* addr) {
  const client_key key = key_of(addr);
  if (auto it = by_client_.find(key); it != by_client_.end()) return slots_[it->second];
  if (free_slots_.empty()) return nullptr;

  auto m = std::make_unique<mapping>();
  m->slot = free_slots_.back();
  m->generation = next_generation_++;
  m->key = key;
  m->client_length = length_of(addr);
  std::memcpy(&m->client, addr, m->client_length);
  m->last_active_ms = uv_now(&loop_);
  m->socket.data = m.get();
  by_client_.emplace(key, m->slot);

  const auto flags = static_cast<unsigned>(cfg_.upstream.family()) | UV_UDP_RECVMMSG;
  if (int rc = uv_udp_init_ex(&loop_, &m->socket, flags); rc < 0) {
    by_client_.erase(key);
    if (!std::exchange(mapping_error_reported_, true))
      fmt::print(stderr, "ferry_impair: cannot create an upstream socket: {}\n", uv_strerror(rc));
    return nullptr;
  }
  enlarge_buffers(&m->socket);
  // A connected socket lets the kernel filter replies to the upstream address and lets us use
  // uv_udp_try_send without an address; --follow-upstream-port does both itself instead.
  int rc = cfg_.follow_upstream_port ? 0 : uv_udp_connect(&m->socket, cfg_.upstream.addr());
  if (rc == 0) rc = uv_udp_recv_start(&m->socket, on_alloc, on_upstream_recv);
  if (rc < 0) {
    by_client_.erase(key);
    uv_close(reinterpret_cast<uv_handle_t*>(&m->socket), close_mapping_cb);
    (void)m.release();  // close_mapping_cb deletes it.
    if (!std::exchange(mapping_error_reported_, true))
      fmt::print(stderr, "ferry_impair: cannot connect to {}: {}\n",
                 to_string(cfg_.upstream.addr()), uv_strerror(rc));
    return nullptr;
  }
  free_slots_.pop_back();
  slots_[m->slot] = m.get();
  return m.release();
}

void relay::close_mapping(mapping* m) noexcept {
  // Packets of this mapping still in the heap notice the changed generation when they come due.
  by_client_.erase(m->key);
  slots_[m->slot] = nullptr;
  free_slots_.push_back(m->slot);
  uv_close(reinterpret_cast<uv_handle_t*>(&m->socket), close_mapping_cb);
}

mapping* relay::mapping_for(std::uint32_t slot, std::uint64_t generation) const noexcept {
  if (slot >= slots_.size()) return nullptr;
  mapping* m = slots_[slot];
  return m != nullptr && m->generation == generation ? m : nullptr;
}

// ---- The impairment pipeline --------------------------------------------------------------

relay::fate relay::draw_fate(direction d) noexcept {
  auto& rng = rng_[index_of(d)];
  fate f{};
  f.loss = rng.uniform01();
  f.dup = rng.uniform01();
  f.reorder = rng.uniform01();
  f.corrupt = rng.uniform01();
  f.corrupt_position = rng.next();
  f.corrupt_mask = rng.next();
  f.jitter = rng.uniform01();
  f.dup_jitter = rng.uniform01();
  return f;
}

void relay::begin_blackouts_at(std::uint64_t n, std::uint64_t now_ns) noexcept {
  for (direction_config* dc : {&cfg_.up, &cfg_.down})
    for (blackout_window& w : dc->blackouts)
      if (w.at_datagram == n) w.start_s = static_cast<double>(now_ns - epoch_ns_) / 1e9;
}

bool relay::in_blackout(const direction_config& dc, std::uint64_t now_ns) const noexcept {
  const double t = static_cast<double>(now_ns - epoch_ns_) / 1e9;
  return std::any_of(dc.blackouts.begin(), dc.blackouts.end(), [t](const blackout_window& w) {
    return w.start_s >= 0 && t >= w.start_s && t < w.start_s + w.duration_s;
  });
}

void relay::handle_datagram(direction d, mapping& m, char* data, std::size_t size) {
  const std::size_t i = index_of(d);
  auto& st = stats_[i];
  ++st.received;
  m.last_active_ms = uv_now(&loop_);
  if (epoch_ns_ == 0) epoch_ns_ = uv_hrtime();
  begin_blackouts_at(++received_total_, uv_hrtime());
  if (cfg_.stats_interval_ms > 0) count_in_series(st);
  if (!impaired_[i]) {
    transmit(d, &m, data, size, nullptr);
    return;
  }

  const std::uint64_t now = uv_hrtime();
  const direction_config& dc = cfg_.dir(d);
  const fate f = draw_fate(d);
  if (in_blackout(dc, now)) {
    ++st.dropped_blackout;
    return;
  }
  if (f.loss < dc.loss) {
    ++st.dropped_loss;
    return;
  }
  if (f.corrupt < dc.corrupt) {
    const bool payload =
        cfg_.corrupt_payload && size > 5 && static_cast<std::uint8_t>(data[5]) == data_block_type;
    // An empty payload (a block at the end of the file) leaves nothing to corrupt.
    const std::size_t from = payload ? data_payload_offset : cfg_.corrupt_skip;
    if (size > from) {
      // The receive slab is ours until this callback returns, so flipping in place is safe.
      const std::size_t at = from + f.corrupt_position % (size - from);
      data[at] = static_cast<char>(data[at] ^ static_cast<char>(1 + f.corrupt_mask % 255));
      ++st.corrupted;
      if (payload) ++st.corrupted_payload;
    }
  }
  const bool held = f.reorder < dc.reorder;
  if (held) {
    ++st.reordered;
    hold(d, m, data, size, f.jitter, now);
  } else {
    forward_buffer(d, m, data, size, f.jitter, now);
  }
  if (f.dup < dc.dup) {
    ++st.duplicated;
    forward_buffer(d, m, data, size, f.dup_jitter, now);
  }
  if (!held) advance_held(d, m, now);
}

void relay::count_in_series(direction_stats& st) {
  const auto elapsed_ms = static_cast<double>(uv_hrtime() - epoch_ns_) / 1e6;
  const auto i = static_cast<std::size_t>(elapsed_ms / cfg_.stats_interval_ms);
  if (i >= max_series_intervals) return;
  if (st.received_series.size() <= i) st.received_series.resize(i + 1);
  ++st.received_series[i];
}

bool relay::admit(direction d, std::size_t size, double jitter_u, std::uint64_t now_ns,
                  std::uint64_t& due_ns) {
  const direction_config& dc = cfg_.dir(d);
  std::uint64_t depart = now_ns;
  if (dc.rate_bytes_per_s > 0) {
    // Serialization model: the link sends one datagram after the other at the configured rate.
    // What is still unsent when this one arrives is the queue; an idle link always accepts.
    link_state& link = links_[index_of(d)];
    const std::uint64_t start = std::max(now_ns, link.free_at_ns);
    const double backlog = static_cast<double>(start - now_ns) * dc.rate_bytes_per_s / 1e9;
    if (backlog > 0 && backlog + static_cast<double>(size) > static_cast<double>(dc.queue_bytes)) {
      ++stats_[index_of(d)].dropped_queue;
      return false;
    }
    link.free_at_ns =
        start + static_cast<std::uint64_t>(static_cast<double>(size) * 1e9 / dc.rate_bytes_per_s);
    depart = link.free_at_ns;
  }
  double delay_ms = dc.delay_ms + (2 * jitter_u - 1) * dc.jitter_ms;
  if (delay_ms < 0) delay_ms = 0;
  due_ns = depart + static_cast<std::uint64_t>(delay_ms * 1e6);
  return true;
}

void relay::forward_buffer(direction d, mapping& m, char* data, std::size_t size, double jitter_u,
                           std::uint64_t now_ns) {
  std::uint64_t due = 0;
  if (!admit(d, size, jitter_u, now_ns, due)) return;
  if (due <= now_ns) {
    transmit(d, &m, data, size, nullptr);
    return;
  }
  if (held_bytes_ + size > max_held_bytes) {
    ++stats_[index_of(d)].dropped_memory;
    return;
  }
  packet* p = make_packet(d, m, data, size);
  p->due_ns = due;
  heap_push(p);
}

void relay::hold(direction d, mapping& m, const char* data, std::size_t size, double jitter_u,
                 std::uint64_t now_ns) {
  const std::size_t i = index_of(d);
  if (m.held_count[i] == detail::max_held_per_mapping) {
    // Too many held at once (a reorder probability near 1): the oldest goes first.
    packet* oldest = m.held[i][0];
    unlink_held(oldest);
    heap_remove(oldest);
    release_held(oldest, now_ns);
  }
  if (held_bytes_ + size > max_held_bytes) {
    ++stats_[i].dropped_memory;
    return;
  }
  packet* p = make_packet(d, m, data, size);
  p->held = true;
  p->remaining = cfg_.reorder_gap;
  p->jitter_u = jitter_u;
  p->due_ns = now_ns + static_cast<std::uint64_t>(cfg_.reorder_timeout_ms * 1e6);
  heap_push(p);
  m.held[i][m.held_count[i]++] = p;
}

void relay::advance_held(direction d, mapping& m, std::uint64_t now_ns) {
  const std::size_t i = index_of(d);
  auto& held = m.held[i];
  for (std::size_t k = 0; k < m.held_count[i]; ++k)
    if (held[k]->remaining > 0) --held[k]->remaining;
  // All holds start with the same count, so they reach zero in the order they were taken.
  while (m.held_count[i] > 0 && held[0]->remaining == 0) {
    packet* p = held[0];
    unlink_held(p);
    heap_remove(p);
    release_held(p, now_ns);
  }
}

void relay::release_held(packet* p, std::uint64_t now_ns) {
  p->held = false;
  std::uint64_t due = 0;
  if (!admit(p->dir, p->size, p->jitter_u, now_ns, due)) {
    pool_.release(p);
    return;
  }
  if (due <= now_ns) {
    transmit(p->dir, mapping_for(p->slot, p->generation), p->data(), p->size, p);
    return;
  }
  p->due_ns = due;
  heap_push(p);
}

void relay::unlink_held(packet* p) noexcept {
  mapping* m = mapping_for(p->slot, p->generation);
  if (m == nullptr) return;
  const std::size_t i = index_of(p->dir);
  auto& held = m->held[i];
  auto& count = m->held_count[i];
  auto* end = held.data() + count;
  auto* it = std::find(held.data(), end, p);
  if (it == end) return;
  std::copy(it + 1, end, it);
  --count;
}

packet* relay::make_packet(direction d, const mapping& m, const char* data, std::size_t size) {
  packet* p = pool_.acquire(size);
  p->dir = d;
  p->slot = m.slot;
  p->generation = m.generation;
  p->size = static_cast<std::uint32_t>(size);
  p->held = false;
  p->remaining = 0;
  p->jitter_u = 0;
  // Replies must reach this client even if its mapping expires while they wait in the heap.
  std::memcpy(&p->client, &m.client, m.client_length);
  p->client_length = m.client_length;
  if (size > 0) std::memcpy(p->data(), data, size);
  return p;
}

void relay::transmit(direction d, mapping* m, char* data, std::size_t size,
                     packet* owned) noexcept {
  auto& st = stats_[index_of(d)];
  uv_udp_t* handle = &listen_;
  const sockaddr* addr = nullptr;
  if (d == direction::up) {
    if (m == nullptr) {
      ++st.dropped_no_mapping;
      if (owned != nullptr) pool_.release(owned);
      return;
    }
    handle = &m->socket;
    if (cfg_.follow_upstream_port)
      addr = m->server_length != 0 ? reinterpret_cast<const sockaddr*>(&m->server)
                                   : cfg_.upstream.addr();
  } else {
    addr = owned != nullptr ? reinterpret_cast<const sockaddr*>(&owned->client)
                            : reinterpret_cast<const sockaddr*>(&m->client);
  }
  if (stopping_) {
    ++st.dropped_shutdown;
    if (owned != nullptr) pool_.release(owned);
    return;
  }

  uv_buf_t buf = uv_buf_init(data, static_cast<unsigned>(size));
  int rc = uv_udp_try_send(handle, &buf, 1, addr);
  if (rc >= 0) {
    ++st.forwarded;
    if (owned != nullptr) pool_.release(owned);
    return;
  }
  if (rc != UV_EAGAIN || uv_udp_get_send_queue_size(handle) > send_queue_limit) {
    // Other errors are usually a pending ICMP error on the connected socket; the kernel has
    // not sent the datagram, so it counts as lost.
    ++st.dropped_send;
    if (owned != nullptr) pool_.release(owned);
    return;
  }

  // The socket buffer is full: let libuv queue it and send when the socket is writable.
  packet* p = owned;
  if (p == nullptr) {
    try {
      p = make_packet(d, *m, data, size);
    } catch (...) {
      ++st.dropped_memory;
      return;
    }
  }
  buf = uv_buf_init(p->data(), p->size);
  if (rc = uv_udp_send(&p->req, handle, &buf, 1, addr, on_send); rc < 0) {
    ++st.dropped_send;
    pool_.release(p);
  }
}

// ---- Delay heap ---------------------------------------------------------------------------

void relay::heap_push(packet* p) {
  try {
    heap_.push_back(p);
  } catch (...) {
    pool_.release(p);
    throw;
  }
  p->seq = next_seq_++;
  p->heap_index = heap_.size() - 1;
  held_bytes_ += p->size;
  heap_sift_up(p->heap_index);
  rearm_heap_timer();
}

packet* relay::heap_pop() noexcept {
  packet* top = heap_.front();
  packet* last = heap_.back();
  heap_.pop_back();
  if (!heap_.empty()) {
    heap_[0] = last;
    last->heap_index = 0;
    heap_sift_down(0);
  }
  held_bytes_ -= top->size;
  return top;
}

void relay::heap_remove(packet* p) noexcept {
  const std::size_t i = p->heap_index;
  packet* last = heap_.back();
  heap_.pop_back();
  if (i < heap_.size()) {
    heap_[i] = last;
    last->heap_index = i;
    heap_sift_up(i);
    heap_sift_down(last->heap_index);
  }
  held_bytes_ -= p->size;
}

void relay::heap_sift_up(std::size_t i) noexcept {
  packet* p = heap_[i];
  while (i > 0) {
    const std::size_t parent = (i - 1) / 2;
    if (!earlier(p, heap_[parent])) break;
    heap_[i] = heap_[parent];
    heap_[i]->heap_index = i;
    i = parent;
  }
  heap_[i] = p;
  p->heap_index = i;
}

void relay::heap_sift_down(std::size_t i) noexcept {
  const std::size_t n = heap_.size();
  packet* p = heap_[i];
  for (;;) {
    std::size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && earlier(heap_[child + 1], heap_[child])) ++child;
    if (!earlier(heap_[child], p)) break;
    heap_[i] = heap_[child];
    heap_[i]->heap_index = i;
    i = child;
  }
  heap_[i] = p;
  p->heap_index = i;
}

void relay::rearm_heap_timer() noexcept {
  if (stopping_) return;
  if (heap_.empty()) {
    if (armed_due_ns_ != 0) uv_timer_stop(&heap_timer_);
    armed_due_ns_ = 0;
    return;
  }
  const std::uint64_t due = heap_.front()->due_ns;
  if (armed_due_ns_ != 0 && armed_due_ns_ <= due) return;
  // libuv timers count in whole milliseconds of the loop clock, which never runs ahead of
  // uv_hrtime; rounding up therefore never fires before the datagram is due.
  const std::uint64_t loop_ns = uv_now(&loop_) * 1'000'000;
  const std::uint64_t timeout_ms = due > loop_ns ? (due - loop_ns + 999'999) / 1'000'000 : 0;
  uv_timer_start(&heap_timer_, on_heap_timer, timeout_ms, 0);
  armed_due_ns_ = due;
}

}  // namespace ferry::impair
