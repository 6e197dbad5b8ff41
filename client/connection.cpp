#include "client/connection.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <random>
#include <utility>

#include "client/errors.hpp"
#include "client/keying.hpp"
#include "common/log.hpp"
#include "common/udp_gso.hpp"

namespace ferry::client {

using protocol::errc;

namespace {
// Datagrams read per recvmmsg call, each into a slot that holds the largest datagram, or as
// much as UDP GRO coalesces into one (64 KiB).
constexpr unsigned recv_batch = 16;
constexpr std::size_t recv_slot = 65536;
// Calls per wake-up, so that one busy socket cannot keep the loop from its timers.
constexpr int recv_rounds = 8;
// Requests sent with one sendmmsg, and the bytes they may fill.
constexpr std::size_t send_batch = 128;
constexpr std::size_t send_capacity = 64 * 1024;
constexpr std::size_t max_sealed_request = protocol::max_request_size + envelope::max_trailer;
static_assert(send_capacity >= max_sealed_request);
}  // namespace

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
      receiver_{recv_batch, recv_slot},
      send_buf_{std::make_unique_for_overwrite<std::byte[]>(send_capacity)} {
  sends_.reserve(send_batch);
  if (const auto& k = process_key(); k.key) {
    sealer_.emplace(k.key);
    seal_mode_ = k.mode;
  }
  const int fd = ::socket(server_.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) uv_check(uv_translate_sys_error(errno), "cannot open a UDP socket");
  socket_.reset(fd);
  // Connected: the kernel then delivers only datagrams from the server's address.
  if (::connect(fd, server_.addr(), server_.length) != 0)
    uv_check(uv_translate_sys_error(errno), "cannot reach server address");
  const int want = 8 << 20;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
  // Equal-sized replies sent with UDP GSO then arrive as one buffer, not one datagram each.
  // A kernel without it delivers them one by one, which works as well, only slower.
  const int on = 1;
  (void)::setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on);
  std::random_device rd;
  // Request ids start at a random point so replies meant for an earlier run are not taken.
  // Never 0: a token reply with id 0 is the server's own refresh. Ids only grow from here.
  first_id_ = next_id_ = std::max<std::uint64_t>(
      1, (static_cast<std::uint64_t>(rd()) << 32 | rd()) & 0x3fff'ffff'ffff'ffffULL);
  if (shared == nullptr) uv_check(uv_loop_init(&own_loop_), "uv_loop_init");
  try {
    poll_ = std::make_unique<uv_owned<uv_poll_t>>(loop_, uv_poll_init, fd);
    poll_->get()->data = this;
    uv_check(start_polling(), "uv_poll_start");
  } catch (...) {
    // The destructor will not run: close what was opened here, and the loop if it is ours.
    poll_.reset();
    socket_.reset();
    if (loop_ == &own_loop_) {
      uv_run(&own_loop_, UV_RUN_DEFAULT);
      (void)uv_loop_close(&own_loop_);
    }
    throw;
  }
}

int connection::start_polling() noexcept {
  return uv_poll_start(poll_->get(), UV_READABLE, [](uv_poll_t* h, int status, int) {
    auto& self = *static_cast<connection*>(h->data);
    if (status < 0) {
      // libuv stops a poll handle on POLLERR, which an ICMP error (a server not up yet, say)
      // raises on a connected socket. Clear the error, which is no more than a loss, and poll
      // again, or this connection would never read another reply.
      int err = 0;
      socklen_t len = sizeof err;
      (void)::getsockopt(self.socket_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (self.start_polling() != 0) return;
      self.on_socket_error(err);
    }
    self.on_readable();
  });
}

connection::~connection() {
  // Closing the poll handle stops it at once, so the socket can be closed right after.
  poll_.reset();
  socket_.reset();
  if (loop_ != &own_loop_) return;  // the loop's owner runs the close callbacks
  uv_run(&own_loop_, UV_RUN_DEFAULT);
  (void)uv_loop_close(&own_loop_);
}

int connection::path_mtu() const noexcept {
  int mtu = 0;
  socklen_t len = sizeof mtu;
  const bool v6 = server_.family() == AF_INET6;
  if (::getsockopt(socket_.get(), v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_MTU : IP_MTU, &mtu,
                   &len) != 0)
    return 0;
  return mtu;
}

std::size_t connection::receive_buffer() const noexcept {
  int size = 0;
  socklen_t len = sizeof size;
  if (::getsockopt(socket_.get(), SOL_SOCKET, SO_RCVBUF, &size, &len) != 0) return 208 * 1024;
  return static_cast<std::size_t>(size) / 2;  // Linux reports twice what it lets data use
}

void connection::on_readable() noexcept {
  for (int round = 0; round < recv_rounds; ++round) {
    const int n = receiver_.receive(socket_.get());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // An ICMP error for an earlier send, which this call consumed: read on.
      on_socket_error(errno);
      continue;
    }
    for (unsigned i = 0; i < static_cast<unsigned>(n); ++i) {
      if (receiver_.truncated(i)) {
        ++malformed_;
        continue;
      }
      receiver_.for_each_datagram(i, [this](auto d) { deliver(d); });
    }
    if (batch_end_) batch_end_();
    flush();
    if (static_cast<unsigned>(n) < receiver_.slots()) return;
  }
}

bool connection::is_refusal(int err) noexcept {
  // EACCES: an IPv6 "administratively prohibited", which IPv4 reports as EHOSTUNREACH.
  return err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH || err == EACCES;
}

int connection::take_refusal() noexcept { return std::exchange(refusal_, 0); }

void connection::on_socket_error(int err) noexcept {
  if (!is_refusal(err) || !unreachable_) return;
  try {
    unreachable_(err);
  } catch (const std::exception& e) {
    log::debug("unreachable handler failed: {}", e.what());
  }
}

void connection::deliver(std::span<std::byte> datagram) noexcept {
  if (datagram.empty()) return;
  bool sealed = false;
  if (sealer_) {
    auto o = sealer_->open(datagram);
    sealed = o.why == envelope::refusal::none;
    if (o.why != envelope::refusal::none && o.why != envelope::refusal::plain) {
      ++unauthenticated_;  // another key, or forged
      return;
    }
    datagram = sealed ? o.plain : datagram;
  }
  auto decoded = codec::decode_reply(datagram);
  if (!decoded) {
    ++malformed_;  // corrupted on the way, or not from a ferry server: ask again later
    return;
  }
  if (sealer_ && !sealed) {
    // Unsealed, and so anyone's: believed only when it says that the server has no key or
    // wants another mode, which ends the command (as dropping every reply would, later).
    const auto* e = std::get_if<protocol::error_reply>(&decoded->body);
    if (e == nullptr || e->code != errc::authentication_required) {
      ++unauthenticated_;
      return;
    }
  }
  heard_ = true;
  if (auto* t = std::get_if<protocol::token_reply>(&decoded->body)) {
    token_ = t->token;
    // Id 0 is the server replacing a token before it expires: nothing is to be sent again.
    if (decoded->hdr.request_id == 0) {
      ++token_refreshes_;
      return;
    }
    // The handler sees it too: a request answered so must be sent again, with this token.
    ++token_replies_;
  }
  if (!handler_) return;
  try {
    handler_(*decoded);
  } catch (const std::exception& e) {
    log::debug("reply handler failed: {}", e.what());
    uv_stop(loop_);
  }
}

std::uint64_t connection::send(const protocol::request& req) {
  const auto id = queue(req);
  flush();
  return id;
}

std::uint64_t connection::queue(const protocol::request& req) {
  if (sends_.size() == send_batch || send_capacity - send_used_ < max_sealed_request) flush();
  // A GET-RUN stands for as many GETs, with the ids that follow its own.
  const auto* get = std::get_if<protocol::get_request>(&req);
  const auto id = next_id_;
  next_id_ += get != nullptr ? get->count : 1;
  std::byte* at = send_buf_.get() + send_used_;
  auto n =
      codec::encode_request({at, protocol::max_request_size}, id, req, token_ ? &*token_ : nullptr);
  if (!n)
    throw failure{exit_code::usage,
                  fmt::format("request too large: {}", protocol::to_string(n.error()))};
  auto size = *n;
  if (sealer_) size = sealer_->seal({at, max_sealed_request}, size, seal_mode_);
  udp_batch::datagram d;
  d.parts[0] = iovec{at, size};
  d.size = size;
  d.gso = gso_;
  sends_.push_back(d);
  send_used_ += size;
  return id;
}

void connection::flush() noexcept {
  std::size_t next = 0;  // the first request not yet sent or given up
  bool refusal_retried = false;
  while (next < sends_.size() && socket_) {
    // GETs of one file are all the same size: a run of them goes out as one UDP GSO send,
    // which crosses the sending side of the network stack once instead of once each.
    (void)msgs_.build({sends_.data() + next, sends_.size() - next});
    const int n = ::sendmmsg(socket_.get(), msgs_.data(), msgs_.size(), MSG_DONTWAIT);
    if (n > 0) {
      next += msgs_.datagrams_before(static_cast<unsigned>(n));
      continue;
    }
    const int err = n < 0 ? errno : EAGAIN;
    if (err == EINTR) continue;
    if (msgs_.datagrams_of(0) > 1 && udp_batch::gso_refusal(err)) {
      // This kernel, or this path's MTU, cannot take them segmented: one datagram each.
      gso_ = false;
      for (auto& d : sends_) d.gso = false;
      log::debug("UDP GSO refused for requests to {} ({}); sending them one by one",
                 to_string(server_), std::strerror(err));
      continue;
    }
    if (udp_batch::buffer_full(err)) break;
    if (is_refusal(err) && !refusal_retried) {
      // An ICMP error for an earlier datagram, which this call consumed: note it for the
      // request engine to read once this send is over, and send these again.
      refusal_ = err;
      refusal_retried = true;
      continue;
    }
    next += msgs_.datagrams_of(0);  // another error for an earlier datagram: skip these
  }
  // Whatever did not go (a full socket buffer) is the same as loss: the caller asks again.
  sends_.clear();
  send_used_ = 0;
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
