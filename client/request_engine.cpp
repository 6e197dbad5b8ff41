#include "client/request_engine.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.hpp"

namespace ferry::client {

using protocol::errc;

namespace {
// Token replies answered by asking again at once, per exchange; a server that rejects every
// token it hands out is left to the timeout.
constexpr int max_token_rounds = 4;
constexpr auto busy_wait = std::chrono::milliseconds{20};
constexpr auto max_poll = std::chrono::milliseconds{100};

// A libuv timeout for `d`, rounded up so the timer never fires just before what it waits for.
std::uint64_t timeout_ms(clock::duration d) {
  if (d <= clock::duration::zero()) return 0;
  return static_cast<std::uint64_t>(std::chrono::ceil<std::chrono::milliseconds>(d).count());
}
}  // namespace

request_engine::request_engine(uv_loop_t* loop)
    : loop_{loop}, timer_{loop, uv_timer_init}, wake_{loop, uv_timer_init} {
  timer_.get()->data = this;
  wake_.get()->data = this;
}

request_engine::~request_engine() {
  for (auto* c : attached_) {
    c->set_handler(nullptr);
    c->set_unreachable(nullptr);
  }
}

void request_engine::attach(connection& conn) {
  if (std::find(attached_.begin(), attached_.end(), &conn) != attached_.end()) return;
  if (conn.loop() != loop_)
    throw failure{exit_code::internal, "a connection on another loop than its request engine"};
  conn.set_handler([this, &conn](const codec::decoded_reply& r) { dispatch(conn, r); });
  conn.set_unreachable([this, &conn](int err) { on_unreachable(conn, err); });
  attached_.push_back(&conn);
}

void request_engine::set_stream(connection& conn, connection::reply_handler h) {
  attach(conn);
  if (h)
    streams_[&conn] = std::move(h);
  else
    streams_.erase(&conn);
}

std::uint64_t request_engine::start(connection& conn, protocol::request req, ask_options opt,
                                    done_fn done) {
  attach(conn);
  const auto key = next_key_++;
  auto& x = exchanges_[key];
  x.conn = &conn;
  x.req = std::move(req);
  x.opt = opt;
  x.done = std::move(done);
  x.started = x.alive = clock::now();
  transmit(key, x, x.started);
  rearm();
  check_refusal(conn);
  return key;
}

void request_engine::cancel(std::uint64_t key) noexcept {
  auto it = exchanges_.find(key);
  if (it == exchanges_.end()) return;
  for (auto id : it->second.ids) by_id_.erase({it->second.conn, id});
  exchanges_.erase(it);
  rearm();
}

void request_engine::transmit(std::uint64_t key, exchange& x, clock::time_point now) {
  // A retransmission of a request that drew nothing at all: the path or the server may be
  // slower than we thought.
  if (!x.ids.empty() && !x.answered) x.conn->rtt().backoff();
  try {
    x.ids.push_back(x.conn->send(x.req));
  } catch (const failure& f) {
    return complete(key, f);
  }
  by_id_[{x.conn, x.ids.back()}] = key;
  x.sent = now;
  x.answered = false;
  x.next_send = now + x.conn->rtt().rto();
}

void request_engine::complete(std::uint64_t key, outcome o) noexcept {
  auto it = exchanges_.find(key);
  if (it == exchanges_.end()) return;
  auto done = std::move(it->second.done);
  for (auto id : it->second.ids) by_id_.erase({it->second.conn, id});
  exchanges_.erase(it);
  rearm();
  try {
    if (done) done(std::move(o));
  } catch (const std::exception& e) {
    log::error("internal: a request's completion failed: {}", e.what());
  }
}

void request_engine::dispatch(connection& conn, const codec::decoded_reply& r) noexcept {
  // It runs inside the connection's read callback: nothing may escape it.
  try {
    if (auto it = by_id_.find({&conn, r.hdr.request_id}); it != by_id_.end()) {
      on_answer(it->second, r);
      return;
    }
    if (auto s = streams_.find(&conn); s != streams_.end()) s->second(r);
  } catch (const std::exception& e) {
    log::error("internal: a reply's handling failed: {}", e.what());
  }
}

void request_engine::on_answer(std::uint64_t key, const codec::decoded_reply& r) {
  auto& x = exchanges_.at(key);
  const auto now = clock::now();
  const bool latest = r.hdr.request_id == x.ids.back();
  if (latest && !x.answered) x.conn->rtt().sample(now - x.sent);
  if (latest) x.answered = true;
  if (std::holds_alternative<protocol::token_reply>(r.body)) {
    // Not an answer yet: the server wants its token echoed, which the connection now has.
    if (!latest || ++x.token_rounds > max_token_rounds) return;
    x.alive = now;
    auto* conn = x.conn;
    transmit(key, x, now);
    check_refusal(*conn);
    return rearm();
  } else if (auto* e = std::get_if<protocol::error_reply>(&r.body); e && e->code == errc::busy) {
    x.busy = true;
    if (latest) x.next_send = now + busy_wait;
  } else if (auto* st = std::get_if<protocol::stat_reply>(&r.body);
             st && x.opt.digest_wait.count() > 0 && st->type == protocol::entry_type::file &&
             !st->digest_ready) {
    // The server is hashing this version, which it does once: ask again, gently.
    if (now - x.started >= x.opt.digest_wait) {
      const auto* path = std::get_if<protocol::stat_request>(&x.req);
      return complete(key, failure{exit_code::network,
                                   fmt::format("{}: the server did not produce the file's digest",
                                               path ? path->path : std::string{"?"})});
    }
    x.alive = now;
    x.busy = false;
    if (latest) {
      x.next_send = now + x.poll;
      x.poll = std::min<clock::duration>(x.poll * 2, max_poll);
    }
  } else if (std::holds_alternative<protocol::data_reply>(r.body)) {
    return;  // a block answers no exchange
  } else {
    return complete(key, r.body);
  }
  rearm();
}

void request_engine::on_timer() noexcept {
  const auto now = clock::now();
  std::vector<std::uint64_t> due;
  for (const auto& [key, x] : exchanges_)
    if (now >= x.next_send || now - x.alive >= x.opt.timeout) due.push_back(key);
  for (auto key : due) {
    auto it = exchanges_.find(key);
    if (it == exchanges_.end()) continue;  // a completion before this one cancelled it
    auto& x = it->second;
    if (now - x.alive >= x.opt.timeout) {
      const auto& server = x.conn->server();
      complete(key,
               no_answer(to_string(server), std::chrono::duration<double>(x.opt.timeout).count(),
                         server.port(), x.busy));
      continue;
    }
    auto* conn = x.conn;
    transmit(key, x, now);
    check_refusal(*conn);
  }
  rearm();
}

void request_engine::on_unreachable(connection& conn, int err) noexcept {
  if (conn.heard()) return;
  std::vector<std::uint64_t> silent;
  for (const auto& [key, x] : exchanges_)
    if (x.conn == &conn) silent.push_back(key);
  const auto& server = conn.server();
  try {
    const auto why = err == ECONNREFUSED
                         ? fmt::format(
                               "{} refused the request (ICMP port unreachable): nothing listens on "
                               "UDP port {} there; is ferryd running?",
                               to_string(server), server.port())
                         : fmt::format(
                               "{} cannot be reached: {} (an ICMP error; a router or firewall on "
                               "the way says so)",
                               to_string(server), std::strerror(err));
    for (auto key : silent) complete(key, failure{exit_code::network, why});
  } catch (const std::exception&) {
    // Out of memory for the message: the timeout ends these requests instead.
  }
}

void request_engine::check_refusal(connection& conn) noexcept {
  if (const int err = conn.take_refusal(); err != 0) on_unreachable(conn, err);
}

void request_engine::rearm() noexcept {
  if (exchanges_.empty()) {
    uv_timer_stop(timer_.get());
    return;
  }
  auto next = clock::time_point::max();
  for (const auto& [key, x] : exchanges_)
    next = std::min({next, x.next_send, x.alive + x.opt.timeout});
  uv_timer_start(
      timer_.get(), [](uv_timer_t* t) { static_cast<request_engine*>(t->data)->on_timer(); },
      timeout_ms(next - clock::now()), 0);
}

void request_engine::resume_soon(std::coroutine_handle<> h) {
  ready_.push_back(h);
  if (ready_.size() > 1) return;
  uv_timer_start(
      wake_.get(),
      [](uv_timer_t* t) {
        auto& self = *static_cast<request_engine*>(t->data);
        auto ready = std::move(self.ready_);
        self.ready_.clear();
        for (auto waiting : ready) waiting.resume();
      },
      0, 0);
}

task<protocol::reply> request_engine::ask(connection& conn, protocol::request req,
                                          ask_options opt) {
  std::optional<outcome> got;
  gate g{*this};
  // If this coroutine is destroyed while it waits, the exchange must not call into it later.
  std::vector<std::uint64_t> keys;
  keys.reserve(1);  // so that recording the key cannot fail once the exchange has started
  const cancel_on_exit forget{*this, keys};
  keys.push_back(start(conn, std::move(req), opt, [&](outcome o) {
    got = std::move(o);
    g.open();
  }));
  while (!got) co_await g.wait();
  if (auto* f = std::get_if<failure>(&*got)) throw *f;
  co_return std::get<protocol::reply>(std::move(*got));
}

void gate::open() noexcept {
  opened_ = true;
  wake();
}

void gate::wake() noexcept {
  if (!waiter_) return;
  if (timer_) uv_timer_stop(timer_->get());
  engine_.resume_soon(std::exchange(waiter_, {}));
}

void gate::awaiter::await_suspend(std::coroutine_handle<> h) {
  g.waiter_ = h;
  if (limit == clock::duration::max()) return;
  if (!g.timer_) {
    g.timer_ = std::make_unique<uv_owned<uv_timer_t>>(g.engine_.loop(), uv_timer_init);
    g.timer_->get()->data = &g;
  }
  uv_timer_start(
      g.timer_->get(), [](uv_timer_t* t) { static_cast<gate*>(t->data)->wake(); },
      timeout_ms(limit), 0);
}

}  // namespace ferry::client
