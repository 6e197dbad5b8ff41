#include "server/udp_server.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "common/codec.hpp"
#include "common/log.hpp"
#include "common/path_safety.hpp"
#include "server/request_log.hpp"
#include "server/server_socket.hpp"

namespace ferry::server {

using protocol::errc;

namespace {
// Datagrams read per recvmmsg call, and calls per wake-up: enough to drain a busy socket in
// one turn of the loop, so that every client's requests are seen before any is served.
constexpr unsigned recv_batch = 64;
constexpr int recv_rounds = 16;
// A slot holds what UDP GRO coalesces from one client (its runs of GETs, sent with GSO), up to
// 64 KiB. A datagram longer than any request is dropped as truncated, never decoded.
constexpr std::size_t recv_slot = 64 * 1024;
constexpr std::uint64_t prune_every_ms = 1'000;
}  // namespace

udp_server::udp_server(uv_loop_t* loop, config cfg, std::shared_ptr<shared_state> shared)
    : loop_{loop},
      cfg_{std::move(cfg)},
      shared_{shared ? std::move(shared) : std::make_shared<shared_state>(cfg_.max_rate)},
      validator_{shared_->validator},
      total_rate_{shared_->total_rate},
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
      receiver_{recv_batch, recv_slot},
      clients_{{cfg_.max_clients, cfg_.max_clients_per_prefix, cfg_.max_client_rate}, stats_},
      scheduler_{clients_,
                 total_rate_,
                 {cfg_.max_client_queue, cfg_.max_client_jobs,
                  cfg_.max_rate != 0 || cfg_.max_client_rate != 0},
                 stats_},
      batch_{*this, total_rate_, stats_},
      reader_{files_, batch_, stats_},
      send_queue_{cfg_.max_send_queue, stats_},
      jobs_{loop,
            *this,
            clients_,
            {cfg_.max_jobs, cfg_.max_client_jobs, cfg_.max_digest_jobs},
            stats_},
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
        s.clients_.prune(uv_now(s.loop_));
        s.check_root();
      },
      prune_every_ms, prune_every_ms);
  ::uv_unref(stop_async_.handle());
  ::uv_unref(counters_async_.handle());

  const int root = ::open(cfg_.root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0)
    throw std::runtime_error{fmt::format("cannot serve '{}': {}", cfg_.root, std::strerror(errno))};
  root_.reset(root);
  // The server owns its socket rather than a uv_udp_t, to read and serve in batches.
  socket_ = open_server_socket(cfg_);
  poll_ = std::make_unique<uv_owned<uv_poll_t>>(loop_, uv_poll_init, socket_.get());
  poll_->get()->data = this;
  update_poll();
}

udp_server::~udp_server() { stop(); }

endpoint udp_server::local_endpoint() const { return bound_endpoint(socket_.get()); }

void udp_server::stop() noexcept {
  if (stopping_) return;
  stopping_ = true;
  jobs_.stop();
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
  batch_.clear();
  send_queue_.clear();
  clients_.clear();
  scheduler_.clear();
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
  for (int round = 0; round < recv_rounds && !stopping_; ++round) {
    const int n = receiver_.receive(socket_.get());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) ++stats_.recv_errors;
      return;
    }
    for (unsigned i = 0; i < static_cast<unsigned>(n) && !stopping_; ++i) {
      if (receiver_.truncated(i)) {
        ++stats_.datagrams_in;
        stats_.bytes_in += receiver_.bytes(i).size();
        ++stats_.dropped_truncated;
        continue;
      }
      const auto peer = endpoint::from(receiver_.from(i));
      receiver_.for_each_datagram(i, [&](auto one) {
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
    if (static_cast<unsigned>(n) < receiver_.slots()) return;
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
  std::optional<protocol::header> header;
  auto decoded = codec::decode_request(bytes, header);
  if (!decoded && decoded.error() == errc::corrupt) {
    // Damaged on the way: nothing in it can be trusted, not even the address to answer.
    ++stats_.dropped_corrupt;
    return;
  }
  if (!decoded) {
    ++stats_.dropped_malformed;
    // Answer only what is recognisably a ferry request, so garbage draws no reply at all, and
    // never a reply-typed datagram: two servers must not be made to answer each other forever.
    if (!header || !protocol::is_request_type(static_cast<std::uint8_t>(header->type))) return;
    if (decoded.error() == errc::unsupported_version)
      send_error(peer, header->request_id, errc::unsupported_version, limit);
    else
      send_error(peer, header->request_id, decoded.error(), validated(*header) ? no_limit : limit);
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
  auto* client = clients_.client_for(peer, now);
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
  // A GET-RUN is that many GETs, queued and served one by one like any others.
  scheduler_.enqueue(c, id, std::move(*rel), req.offset, req.block_size,
                     std::min(req.block_size, cfg_.max_block), req.count);
  note_held();
  schedule_serving();
}

void udp_server::schedule_serving() noexcept {
  if (stopping_ || !scheduler_.waiting() || !send_queue_.empty() || rate_timer_armed_) return;
  uv_idle_start(serve_idle_.get(),
                [](uv_idle_t* h) { static_cast<udp_server*>(h->data)->serve_turn(); });
}

void udp_server::serve_turn() noexcept {
  uv_idle_stop(serve_idle_.get());
  if (stopping_) return;
  const auto done = scheduler_.turn(
      uv_now(loop_), [this](client_state& c, std::span<pending_get> run) { serve_run(c, run); },
      [this] { return send_queue_.empty(); });
  batch_.flush();
  if (done.rate_blocked && !rate_timer_armed_) {
    ++stats_.rate_waits;
    rate_timer_armed_ = true;
    uv_timer_start(
        rate_timer_.get(),
        [](uv_timer_t* t) {
          auto& s = *static_cast<udp_server*>(t->data);
          s.rate_timer_armed_ = false;
          s.schedule_serving();
        },
        std::max<std::uint64_t>(done.wait_ms, 1), 0);
    return;
  }
  // Whatever still waits is served next turn, after the socket has been read again. A client
  // held back only by its job cap is woken by its job's completion.
  if (done.served > 0) schedule_serving();
}

void udp_server::serve_run(client_state& c, std::span<pending_get> run) {
  const auto now = uv_now(loop_);
  for (auto done = reader_.serve_run(c, run, now); done < run.size(); ++done) {
    auto& g = run[done];
    auto one = reader_.serve_one(c, g, now);
    if (one.answered) continue;
    if (one.error != errc::ok) {
      send_error(c.peer, g.id, one.error, no_limit);
      continue;
    }
    read_off_loop(c, g, std::move(one.file));
  }
}

void udp_server::read_off_loop(client_state& c, pending_get& g, std::shared_ptr<unique_fd> file) {
  auto job = std::make_unique<get_job>();
  job->for_client(c, g.id, std::move(g.rel));
  job->root_fd = root_.get();
  job->offset = g.offset;
  job->block = g.block;
  job->file = std::move(file);
  job->buffer = std::make_unique_for_overwrite<std::byte[]>(g.block);
  job->buffer_bytes = g.block;
  // Charged now, not when the block goes out: the jobs admitted in one turn would otherwise
  // all pass the same full bucket and overshoot the rate together.
  const auto bytes = std::uint64_t{g.block} + protocol::data_reply_overhead;
  total_rate_.charge(bytes);
  c.rate.charge(bytes);
  ++stats_.reads_pooled;
  if (jobs_.submit(std::move(job))) note_held();
}

void udp_server::handle_stat(client_state& c, std::uint64_t id, const protocol::stat_request& req) {
  auto rel = normalize_wire_path(req.path);
  if (!rel) return send_error(c.peer, id, rel.error());
  auto job = std::make_unique<stat_job>();
  job->for_client(c, id, std::move(*rel));
  job->root_fd = root_.get();
  (void)jobs_.submit(std::move(job));
}

void udp_server::handle_list(client_state& c, std::uint64_t id, const protocol::list_request& req) {
  auto rel = normalize_wire_path(req.path);
  if (!rel) return send_error(c.peer, id, rel.error());
  auto job = std::make_unique<list_job>();
  job->for_client(c, id, std::move(*rel));
  job->root_fd = root_.get();
  job->cursor = req.cursor;
  job->dirs = dirs_;
  (void)jobs_.submit(std::move(job));
}

void udp_server::finish_stat(const endpoint& peer, std::uint64_t id, stat_info& info) {
  protocol::stat_reply r;
  r.type = info.type;
  r.size = info.type == protocol::entry_type::file ? info.version.size : 0;
  r.mtime_ns = info.mtime_ns;
  r.mode = info.mode;
  r.version = info.version;
  r.max_block = cfg_.max_block;
  if (info.type == protocol::entry_type::file) {
    if (const auto* digest = digests_.find(info.version); digest != nullptr) {
      r.digest_ready = true;
      r.digest = *digest;
    } else if (!digests_.computing(info.version) && jobs_.digest_room() && info.fd) {
      // Computed once per version, off the loop; the client asks again until it is ready.
      auto job = std::make_unique<digest_job>();
      job->peer = peer;
      job->fd = std::move(info.fd);
      job->version = info.version;
      job->counts_as_digest = true;
      digests_.start(info.version);
      if (!jobs_.submit(std::move(job))) digests_.finish(info.version, {}, false);
    }
  }
  send_reply(peer, id, r, no_limit);
}

void udp_server::digest_done(const protocol::file_version& v, const protocol::digest128& digest,
                             bool ok) {
  if (ok) ++stats_.digests_computed;
  digests_.finish(v, digest, ok);
}

void udp_server::send(const endpoint& peer, std::span<const iovec> bufs, bool charge) noexcept {
  if (!socket_) return;
  std::size_t total = 0;
  for (const auto& b : bufs) total += b.iov_len;
  if (charge) total_rate_.charge(total);
  if (send_queue_.send(socket_.get(), peer, bufs, total)) {
    note_held();
    update_poll();
  }
}

int udp_server::send_messages(std::span<mmsghdr> msgs) noexcept {
  if (!socket_) {
    errno = EBADF;
    return -1;
  }
  return ::sendmmsg(socket_.get(), msgs.data(), static_cast<unsigned>(msgs.size()), MSG_DONTWAIT);
}

void udp_server::keep(const endpoint& peer, std::span<const iovec> bufs,
                      std::size_t total) noexcept {
  if (send_queue_.keep(peer, bufs, total)) {
    note_held();
    update_poll();
  }
}

void udp_server::gso_refused(const peer_key& key) noexcept {
  if (auto* c = clients_.find(key); c != nullptr) c->gso = false;
}

void udp_server::note_held() noexcept {
  const std::uint64_t now = clients_.queued_bytes() + jobs_.buffer_bytes() + send_queue_.bytes();
  if (now > stats_.held_peak.load(std::memory_order_relaxed)) stats_.held_peak = now;
}

void udp_server::flush_send_queue() noexcept {
  if (socket_) send_queue_.flush(socket_.get());
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
  const iovec iov = udp_batch::iov_of(out, *n);
  send(peer, {&iov, 1});
}

void udp_server::send_error(const endpoint& peer, std::uint64_t id, errc code,
                            std::size_t limit) noexcept {
  ++stats_.errors_sent;
  if (log::current_level() == log::level::debug) log_refusal(peer, id, code);
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

void udp_server::send_block(const endpoint& peer, std::uint64_t id, std::uint64_t offset,
                            const read_outcome& r, const std::byte* payload) noexcept {
  std::byte prefix[protocol::data_reply_overhead];
  auto n = codec::encode_data_prefix(prefix, id, data_reply_of(offset, r), {payload, r.length});
  if (!n) {
    ++stats_.internal_errors;
    return;
  }
  const iovec bufs[2] = {udp_batch::iov_of(prefix, *n), udp_batch::iov_of(payload, r.length)};
  // Its bytes were charged to the rate limits when its job was admitted.
  send(peer, {bufs, r.length > 0 ? 2u : 1u}, false);
}

void udp_server::check_root() noexcept {
  // ferryd serves the directory it opened, not its name: once that directory is deleted, every
  // request is refused until a restart. Clients see not_found; the operator is told once.
  struct stat st {};
  if (root_gone_ || ::fstat(root_.get(), &st) != 0 || st.st_nlink != 0) return;
  root_gone_ = true;
  log::write(log::level::error,
             "the served directory was deleted; restart ferryd to serve it again",
             {{"root", cfg_.root}}, true);
}

void udp_server::root_refused(errc code) noexcept {
  // A client that may not read the root itself is worth one line a minute, not one a request.
  const auto now = uv_now(loop_);
  if (code != errc::permission_denied || (root_refused_ms_ != 0 && now - root_refused_ms_ < 60'000))
    return;
  root_refused_ms_ = now;
  log::write(log::level::warn, "the served directory cannot be read by ferryd's user",
             {{"root", cfg_.root}}, true);
}

std::size_t udp_server::active_addresses() noexcept { return clients_.active(uv_now(loop_)); }

void udp_server::publish_active_addresses() noexcept {
  stats_.active_addresses = active_addresses();
}

void udp_server::log_counters(bool force) noexcept {
  publish_active_addresses();
  const stats* self = &stats_;
  server::log_counters({&self, 1}, force);
}

}  // namespace ferry::server
