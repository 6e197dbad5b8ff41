#include "server/udp_server.hpp"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>

#include "common/codec.hpp"
#include "common/log.hpp"
#include "common/path_safety.hpp"
#include "server/access_file.hpp"
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
      shared_{shared ? std::move(shared) : std::make_shared<shared_state>(cfg_)},
      root_{cfg_.root},
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
      outbox_{socket_, clients_, total_rate_, cfg_.max_send_queue, stats_, *this},
      gate_{cfg_, outbox_, stats_},
      batch_{outbox_, total_rate_, stats_},
      reader_{files_, batch_, stats_},
      jobs_{loop,
            *this,
            clients_,
            {cfg_.max_jobs, cfg_.max_client_jobs, cfg_.max_digest_jobs},
            stats_},
      dirs_{std::make_shared<dir_cache>()},
      access_{access_log::limits{}, make_access_sink(loop, cfg_.access_log, stats_)} {
  cfg_.max_block = std::clamp(cfg_.max_block, protocol::min_block_size, protocol::max_block_size);
  outbox_.seal_with(gate_.sealer(), gate_.mode());
  batch_.seal_with(gate_.sealer(), gate_.mode());
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
        s.root_.check();
        s.access_.expire(uv_now(s.loop_));
      },
      prune_every_ms, prune_every_ms);
  ::uv_unref(stop_async_.handle());
  ::uv_unref(counters_async_.handle());

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
  access_.end_all();
  files_.clear();
  batch_.clear();
  outbox_.clear();
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
  const int events = UV_READABLE | (outbox_.queue_empty() ? 0 : UV_WRITABLE);
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
  if (events & UV_WRITABLE) outbox_.flush_queue();
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
        if (one.size() >
            protocol::max_request_size + envelope::trailer_size(envelope::mode_of(one))) {
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

void udp_server::handle_datagram(std::span<std::byte> wire, const endpoint& peer) {
  if (stopping_) return;
  const auto now = uv_now(loop_);
  // What an unvalidated source may be sent in answer to this datagram.
  const auto limit = wire.size() * protocol::amplification_limit;
  const auto admitted = gate_.admit(wire, peer, limit);
  if (!admitted) return;
  const auto bytes = *admitted;
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
  if (!cfg_.allow.allows(peer.addr())) {
    // Outside --allow: told so (within the limit, as any unvalidated source), never served.
    ++stats_.denied;
    const auto* h = decoded ? &decoded->hdr : (header ? &*header : nullptr);
    if (h != nullptr && protocol::is_request_type(static_cast<std::uint8_t>(h->type)))
      outbox_.send_error(peer, h->request_id, errc::permission_denied, limit);
    return;
  }
  if (!decoded) {
    ++stats_.dropped_malformed;
    // Answer only what is recognisably a ferry request, so garbage draws no reply at all, and
    // never a reply-typed datagram: two servers must not be made to answer each other forever.
    if (!header || !protocol::is_request_type(static_cast<std::uint8_t>(header->type))) return;
    if (decoded.error() == errc::unsupported_version)
      outbox_.send_error(peer, header->request_id, errc::unsupported_version, limit);
    else
      outbox_.send_error(peer, header->request_id, decoded.error(),
                         validated(*header) ? outbox::no_limit : limit);
    return;
  }
  const auto id = decoded->hdr.request_id;
  if (!validated(decoded->hdr)) {
    // Stateless: the server remembers nothing of a source until it echoes a valid token.
    ++stats_.unvalidated;
    const auto before = stats_.amplification_withheld.load();
    outbox_.send_reply(peer, id, protocol::token_reply{validator_.issue(peer.addr(), now)}, limit);
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
  refresh_token(*client, decoded->hdr, now);
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

void udp_server::refresh_token(client_state& c, const protocol::header& h,
                               std::uint64_t now) noexcept {
  // A live client gets a fresh token before the one it echoes expires, unasked (request id 0).
  if (!cfg_.validate_addresses || !validator_.refresh_due(h.token, c.token_sent_ms, now)) return;
  c.token_sent_ms = now;
  ++stats_.tokens_refreshed;
  outbox_.send_reply(c.peer, 0, protocol::token_reply{validator_.issue(c.peer.addr(), now)});
}

void udp_server::refuse(client_state& c, std::uint64_t id, access_op op, std::string_view path,
                        errc code, std::uint64_t requests) noexcept {
  access_.record({.op = op, .peer = c.peer, .rel = path, .requests = requests, .result = code},
                 uv_now(loop_));
  outbox_.send_error(c.peer, id, code);
}

void udp_server::handle_get(client_state& c, std::uint64_t id, const protocol::get_request& req) {
  auto rel = normalize_wire_path(req.path);
  if (!rel) return refuse(c, id, access_op::get, req.path, rel.error(), req.count);
  if (rel->empty()) return refuse(c, id, access_op::get, req.path, errc::not_regular, req.count);
  // A GET-RUN is that many GETs, queued and served one by one like any others.
  scheduler_.enqueue(c, id, std::move(*rel), req.offset, req.block_size,
                     std::min(req.block_size, cfg_.max_block), req.count);
  note_held();
  schedule_serving();
}

void udp_server::schedule_serving() noexcept {
  if (stopping_ || !scheduler_.waiting() || !outbox_.queue_empty() || rate_timer_armed_) return;
  uv_idle_start(serve_idle_.get(),
                [](uv_idle_t* h) { static_cast<udp_server*>(h->data)->serve_turn(); });
}

void udp_server::serve_turn() noexcept {
  uv_idle_stop(serve_idle_.get());
  if (stopping_) return;
  const auto done = scheduler_.turn(
      uv_now(loop_), [this](client_state& c, std::span<pending_get> run) { serve_run(c, run); },
      [this] { return outbox_.queue_empty(); });
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
  auto sent = c.payload_sent;
  auto done = reader_.serve_run(c, run, now);
  if (access_.on() && done > 0)
    access_.record(
        {.peer = c.peer, .rel = run[0].rel, .requests = done, .bytes = c.payload_sent - sent}, now);
  for (; done < run.size(); ++done) {
    auto& g = run[done];
    sent = c.payload_sent;
    auto one = reader_.serve_one(c, g, now);
    if (one.answered || one.error != errc::ok) {
      access_.record(
          {.peer = c.peer, .rel = g.rel, .bytes = c.payload_sent - sent, .result = one.error}, now);
    }
    if (one.answered) continue;
    if (one.error != errc::ok) {
      outbox_.send_error(c.peer, g.id, one.error);
      continue;
    }
    read_off_loop(c, g, std::move(one.file));
  }
}

void udp_server::read_off_loop(client_state& c, pending_get& g, std::shared_ptr<unique_fd> file) {
  auto job = std::make_unique<get_job>();
  job->for_client(c, g.id, std::move(g.rel));
  job->root_fd = root_.fd();
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
  if (!rel) return refuse(c, id, access_op::stat, req.path, rel.error());
  auto job = std::make_unique<stat_job>();
  job->for_client(c, id, std::move(*rel));
  job->root_fd = root_.fd();
  (void)jobs_.submit(std::move(job));
}

void udp_server::handle_list(client_state& c, std::uint64_t id, const protocol::list_request& req) {
  auto rel = normalize_wire_path(req.path);
  if (!rel) return refuse(c, id, access_op::list, req.path, rel.error());
  auto job = std::make_unique<list_job>();
  job->for_client(c, id, std::move(*rel));
  job->root_fd = root_.fd();
  job->cursor = req.cursor;
  job->page_bytes = protocol::max_small_reply - envelope::trailer_size(outbox_.seal_mode());
  job->dirs = dirs_;
  (void)jobs_.submit(std::move(job));
}

void udp_server::finish_stat(const endpoint& peer, std::uint64_t id, stat_info& info) {
  auto r = stat_reply_of(info, cfg_.max_block);
  if (info.type == protocol::entry_type::file) {
    if (const auto* digest = digests_.find_or_start(info, jobs_); digest != nullptr) {
      r.digest_ready = true;
      r.digest = *digest;
    }
  }
  outbox_.send_reply(peer, id, r);
}

void udp_server::digest_done(const protocol::file_version& v, const protocol::digest128& digest,
                             bool ok) {
  if (ok) ++stats_.digests_computed;
  digests_.finish(v, digest, ok);
}

void udp_server::queue_changed() noexcept {
  note_held();
  update_poll();
}

void udp_server::note_held() noexcept {
  const std::uint64_t now = clients_.queued_bytes() + jobs_.buffer_bytes() + outbox_.queued_bytes();
  if (now > stats_.held_peak.load(std::memory_order_relaxed)) stats_.held_peak = now;
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
