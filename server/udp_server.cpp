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
// Runs of at least this many bytes are sent from a mapping of the file rather than read.
constexpr std::uint64_t min_mapped_run = 48 * 1024;

iovec make_iov(const void* p, std::size_t n) { return iovec{const_cast<void*>(p), n}; }
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
      send_queue_{cfg_.max_send_queue, stats_},
      jobs_{loop, *this, clients_, {cfg_.max_jobs, cfg_.max_client_jobs, cfg_.max_digest_jobs},
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
      if (!udp_batch::buffer_full(errno)) ++stats_.recv_errors;
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
  uv_idle_start(serve_idle_.get(), [](uv_idle_t* h) {
    static_cast<udp_server*>(h->data)->serve_turn();
  });
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
  std::size_t done = 0;
  const auto* cached = files_.find(run[0].rel, uv_now(loop_));
  if (cached != nullptr && cached->whole) done = serve_mapped(c, *cached, run);
  if (done == 0 && cached != nullptr && run.size() > 1) {
    const auto block = run[0].block;
    std::byte* slots[scheduler::max_run];
    read_outcome outcomes[scheduler::max_run];
    const auto n = batch_.payload_slots(block, {slots, std::min(run.size(), scheduler::max_run)});
    const auto whole = read_blocks(cached->fd->get(), run[0].offset, block, {slots, n},
                                   {outcomes, n}, !cached->in_memory);
    for (; done < whole; ++done) {
      if (batch_.next_payload() != slots[done]) break;
      ++stats_.reads_inline;
      batch_.add(c, run[done].id, run[done].offset, outcomes[done]);
      c.rate.charge(outcomes[done].length + protocol::data_reply_overhead);
    }
  }
  for (; done < run.size(); ++done) serve_get(c, run[done]);
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
    if (!batch_.add_mapped(c, g.id, g.offset, r, map)) break;
    ++stats_.reads_inline;
    c.rate.charge(r.length + protocol::data_reply_overhead);
  }
  return done;
}

void udp_server::serve_get(client_state& c, pending_get& g) {
  const auto* cached = files_.find(g.rel, uv_now(loop_));
  std::shared_ptr<unique_fd> file = cached != nullptr ? cached->fd : nullptr;
  if (file) {
    // Page-cache hits are served right here; anything that would wait for a disk goes to the pool.
    const bool in_memory = cached->in_memory;
    auto r = read_block(file->get(), g.offset, g.block, batch_.payload_slot(g.block), !in_memory);
    if (!r.would_block) {
      ++stats_.reads_inline;
      if (r.error != errc::ok) return send_error(c.peer, g.id, r.error, no_limit);
      batch_.add(c, g.id, g.offset, r);
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
  job->client = c.key;
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
  job->peer = c.peer;
  job->request_id = id;
  job->rel = std::move(*rel);
  job->root_fd = root_.get();
  job->has_client = true;
  job->client = c.key;
  (void)jobs_.submit(std::move(job));
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
  (void)jobs_.submit(std::move(job));
}

void udp_server::finish_stat(const endpoint& peer, std::uint64_t id, stat_info& info) {
  protocol::stat_reply r;
  r.type = info.type;
  r.size = info.type == protocol::entry_type::file ? info.version.size : 0;
  r.mtime_ns = info.mtime_ns;
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

void udp_server::send_block(const endpoint& peer, std::uint64_t id, std::uint64_t offset,
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
  const iovec bufs[2] = {make_iov(prefix, *n), make_iov(payload, r.length)};
  // Its bytes were charged to the rate limits when its job was admitted.
  send(peer, {bufs, r.length > 0 ? 2u : 1u}, false);
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
