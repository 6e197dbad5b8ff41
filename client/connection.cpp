#include "client/connection.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <optional>
#include <random>

#include "client/errors.hpp"
#include "common/log.hpp"

namespace ferry::client {

using protocol::errc;

void rtt_estimator::sample(clock::duration rtt) noexcept {
  latest_ = rtt;
  backoff_ = 0;
  if (!has_sample_) {
    srtt_ = rtt;
    rttvar_ = rtt / 2;
    has_sample_ = true;
    return;
  }
  const auto err = srtt_ > rtt ? srtt_ - rtt : rtt - srtt_;
  rttvar_ = (3 * rttvar_ + err) / 4;
  srtt_ = (7 * srtt_ + rtt) / 8;
}

void rtt_estimator::backoff() noexcept {
  if (backoff_ < 16) ++backoff_;
}

clock::duration rtt_estimator::rto() const noexcept {
  clock::duration base =
      has_sample_ ? srtt_ + std::max<clock::duration>(4 * rttvar_, std::chrono::milliseconds{1})
                  : initial_rto;
  base = std::clamp(base, min_rto, max_rto);
  for (int i = 0; i < backoff_ && base < max_rto; ++i) base *= 2;
  return std::min(base, max_rto);
}

connection::connection(const endpoint& server, uv_loop_t* shared)
    : loop_{shared != nullptr ? shared : &own_loop_},
      server_{server},
      recv_buf_{std::make_unique_for_overwrite<std::byte[]>(65536)} {
  if (shared == nullptr) uv_check(uv_loop_init(&own_loop_), "uv_loop_init");
  udp_ = std::make_unique<uv_owned<uv_udp_t>>(loop_, uv_udp_init);
  udp_->get()->data = this;
  // Connected: the kernel then delivers only datagrams from the server's address.
  uv_check(uv_udp_connect(udp_->get(), server_.addr()), "cannot reach server address");
  int fd = -1;
  if (uv_fileno(udp_->handle(), &fd) == 0) {
    const int want = 8 << 20;
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0)
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
  }
  std::random_device rd;
  // Request ids start at a random point so replies meant for an earlier run are not taken.
  first_id_ = next_id_ = (static_cast<std::uint64_t>(rd()) << 32 | rd()) & 0x3fff'ffff'ffff'ffffULL;
  uv_check(uv_udp_recv_start(udp_->get(), on_alloc, on_recv), "uv_udp_recv_start");
}

connection::~connection() {
  udp_.reset();
  if (loop_ != &own_loop_) return;  // the loop's owner runs the close callback
  uv_run(&own_loop_, UV_RUN_DEFAULT);
  (void)uv_loop_close(&own_loop_);
}

int connection::path_mtu() const noexcept {
  int fd = -1;
  if (uv_fileno(udp_->handle(), &fd) != 0) return 0;
  int mtu = 0;
  socklen_t len = sizeof mtu;
  const bool v6 = server_.family() == AF_INET6;
  if (::getsockopt(fd, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_MTU : IP_MTU, &mtu, &len) != 0)
    return 0;
  return mtu;
}

std::size_t connection::receive_buffer() const noexcept {
  int fd = -1, size = 0;
  socklen_t len = sizeof size;
  if (uv_fileno(udp_->handle(), &fd) != 0 ||
      ::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, &len) != 0)
    return 208 * 1024;
  return static_cast<std::size_t>(size) / 2;  // Linux reports twice what it lets data use
}

void connection::on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) noexcept {
  auto& self = *static_cast<connection*>(h->data);
  *buf = uv_buf_init(reinterpret_cast<char*>(self.recv_buf_.get()), 65536);
}

void connection::on_recv(uv_udp_t* h, ssize_t nread, const uv_buf_t* buf, const sockaddr*,
                         unsigned flags) noexcept {
  auto& self = *static_cast<connection*>(h->data);
  if (nread <= 0 || (flags & UV_UDP_PARTIAL)) return;
  auto decoded = codec::decode_reply(
      {reinterpret_cast<const std::byte*>(buf->base), static_cast<std::size_t>(nread)});
  if (!decoded) {
    ++self.malformed_;  // corrupted on the way, or not from a ferry server: ask again later
    return;
  }
  if (auto* t = std::get_if<protocol::token_reply>(&decoded->body)) {
    // The handler sees it too: a request answered so must be sent again, with this token.
    self.token_ = t->token;
    ++self.token_replies_;
  }
  if (!self.handler_) return;
  try {
    self.handler_(*decoded);
  } catch (const std::exception& e) {
    log::debug("reply handler failed: {}", e.what());
    uv_stop(self.loop_);
  }
}

std::uint64_t connection::send(const protocol::request& req) {
  std::byte out[protocol::max_request_size];
  const auto id = next_id();
  auto n = codec::encode_request(out, id, req, token_ ? &*token_ : nullptr);
  if (!n)
    throw failure{exit_code::usage,
                  fmt::format("request too large: {}", protocol::to_string(n.error()))};
  uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(out), static_cast<unsigned>(*n));
  // A full socket buffer or a transient ICMP error is the same as loss: the caller retries.
  (void)uv_udp_try_send(udp_->get(), &b, 1, nullptr);
  return id;
}

protocol::reply connection::call(const protocol::request& req, clock::duration timeout) {
  std::optional<protocol::reply> got;  // stays empty if the timeout passes first
  const std::uint64_t first = next_id_;
  std::uint64_t last = 0;
  clock::time_point sent_at{};
  auto last_sign_of_life = clock::now();
  int token_rounds = 0;
  constexpr int max_token_rounds = 4;
  uv_owned<uv_timer_t> timer{loop_, uv_timer_init};

  struct ctx_t {
    connection* self;
    const protocol::request* req;
    std::uint64_t* last;
    clock::time_point* sent_at;
    clock::time_point* alive;
    clock::duration timeout;
    std::exception_ptr error;
  } ctx{this, &req, &last, &sent_at, &last_sign_of_life, timeout, nullptr};
  timer.get()->data = &ctx;

  auto transmit = [&] {
    last = send(req);
    sent_at = clock::now();
    const auto ms = std::chrono::duration_cast<millis>(rtt_.rto()).count();
    uv_timer_start(
        timer.get(),
        [](uv_timer_t* t) {
          auto& c = *static_cast<ctx_t*>(t->data);
          try {
            if (clock::now() - *c.alive >= c.timeout) {
              uv_stop(c.self->loop_);
              return;
            }
            c.self->rtt_.backoff();
            *c.last = c.self->send(*c.req);
            *c.sent_at = clock::now();
            const auto next = std::chrono::duration_cast<millis>(c.self->rtt_.rto()).count();
            uv_timer_start(t, t->timer_cb, static_cast<std::uint64_t>(next), 0);
          } catch (...) {
            c.error = std::current_exception();
            uv_stop(c.self->loop_);
          }
        },
        static_cast<std::uint64_t>(ms), 0);
  };

  set_handler([&](const codec::decoded_reply& r) {
    const auto id = r.hdr.request_id;
    if (id < first || id >= next_id_) return;  // an answer to something else
    if (id == last) rtt_.sample(clock::now() - sent_at);
    if (auto* e = std::get_if<protocol::error_reply>(&r.body); e && e->code == errc::busy) {
      // The server is alive but loaded: keep waiting, and let the timer ask again.
      last_sign_of_life = clock::now();
      return;
    }
    if (std::holds_alternative<protocol::data_reply>(r.body)) return;  // not for a call
    if (std::holds_alternative<protocol::token_reply>(r.body)) {
      // Not an answer yet: the server wants its token echoed. Ask again now, with it; but a
      // server that rejects every token it gives is left to the timer and the timeout.
      if (id != last || ++token_rounds > max_token_rounds) return;
      last_sign_of_life = clock::now();
      transmit();
      return;
    }
    got = r.body;
    uv_stop(loop_);
  });
  transmit();
  uv_run(loop_, UV_RUN_DEFAULT);
  set_handler(nullptr);
  uv_timer_stop(timer.get());
  if (ctx.error) std::rethrow_exception(ctx.error);
  if (!got) {
    throw failure{
        exit_code::network,
        fmt::format(
            "no answer from {} after {:g} s (is ferryd running there? is UDP port {} open?)",
            to_string(server_), std::chrono::duration<double>(timeout).count(), server_.port())};
  }
  return std::move(*got);
}

connection_group::connection_group(const std::vector<endpoint>& servers) {
  uv_check(uv_loop_init(&loop_), "uv_loop_init");
  try {
    for (const auto& s : servers) conns_.push_back(std::make_unique<connection>(s, &loop_));
  } catch (...) {
    conns_.clear();
    uv_run(&loop_, UV_RUN_DEFAULT);
    (void)uv_loop_close(&loop_);
    throw;
  }
}

connection_group::~connection_group() {
  conns_.clear();
  uv_run(&loop_, UV_RUN_DEFAULT);  // lets the sockets' close callbacks free them
  (void)uv_loop_close(&loop_);
}

std::vector<connection*> connection_group::members() const {
  std::vector<connection*> out;
  for (const auto& c : conns_) out.push_back(c.get());
  return out;
}

}  // namespace ferry::client
