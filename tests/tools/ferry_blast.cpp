// ferry_blast: the raw UDP ceiling of this machine, for scripts/bench.sh. `recv` counts what
// arrives with recvmmsg (optionally UDP_GRO); `send` blasts fixed-size datagrams with sendmmsg
// (optionally UDP_SEGMENT, i.e. GSO). The receiver reports its progress to the sender, which keeps
// at most a window of datagrams in flight, so that the receiver is never overdriven into loss
// and the figure is what the receiver really takes in. Loopback only; every wait is bounded.
//
//   ferry_blast recv --listen 127.0.0.1:0 --seconds 3 [--gro]   # prints "listening on ADDR"
//   ferry_blast send --to ADDR --size 1472 --seconds 3 [--gso]
//
// Each prints a summary line and then one JSON line on stdout; the receiver's is the result.

#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

// Every datagram starts with one of these, then its fields as native 64-bit words: both ends
// run on this machine. A data segment carries its index, so that the receiver can say how far
// the sender's stream has got even when some of it was lost.
constexpr std::uint64_t data_magic = 0x4642'4C41'5354'4441ULL;    // "FBLASTDA"
constexpr std::uint64_t end_magic = 0x4642'4C41'5354'454EULL;     // data: segments, bytes, gso
constexpr std::uint64_t report_magic = 0x4642'4C41'5354'5250ULL;  // received, next index, rcvbuf
constexpr std::size_t header_bytes = 16;
constexpr std::size_t max_udp_payload = 65507;
constexpr std::size_t max_gso_segments = 64;  // the kernel's UDP_MAX_SEGMENTS
constexpr std::size_t batch = 64;
constexpr int marker_copies = 5;

struct socket_address {
  sockaddr_storage storage{};
  socklen_t length = 0;
  [[nodiscard]] const sockaddr* addr() const noexcept {
    return reinterpret_cast<const sockaddr*>(&storage);
  }
};

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// Parses "127.0.0.1:PORT" or "[::1]:PORT", numeric only, and refuses anything but loopback.
socket_address parse_loopback(const std::string& option, const std::string& text) {
  std::string host;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      throw std::invalid_argument(fmt::format("{}: expected [IPV6]:PORT, got '{}'", option, text));
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos)
      throw std::invalid_argument(fmt::format("{}: expected HOST:PORT, got '{}'", option, text));
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0)
    throw std::invalid_argument(fmt::format("{}: '{}': {}", option, text, gai_strerror(rc)));
  socket_address out;
  std::memcpy(&out.storage, found->ai_addr, found->ai_addrlen);
  out.length = found->ai_addrlen;
  ::freeaddrinfo(found);
  bool loopback = false;
  if (out.storage.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(out.storage);
    loopback = (ntohl(a.sin_addr.s_addr) >> 24) == 127;
  } else if (out.storage.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(out.storage);
    loopback = IN6_IS_ADDR_LOOPBACK(&a.sin6_addr);
  }
  if (!loopback)
    throw std::invalid_argument(fmt::format(
        "{}: {} is not a loopback address; ferry_blast stays on loopback", option, host));
  return out;
}

std::string to_string(const socket_address& a) {
  char host[NI_MAXHOST];
  char port[NI_MAXSERV];
  if (::getnameinfo(a.addr(), a.length, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return "?";
  return a.storage.ss_family == AF_INET6 ? fmt::format("[{}]:{}", host, port)
                                         : fmt::format("{}:{}", host, port);
}

// Owns one socket.
class udp_socket {
 public:
  explicit udp_socket(int family) : fd_{::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0)} {
    if (fd_ < 0) throw_errno("socket");
  }
  udp_socket(const udp_socket&) = delete;
  udp_socket& operator=(const udp_socket&) = delete;
  ~udp_socket() { ::close(fd_); }
  [[nodiscard]] int fd() const noexcept { return fd_; }

  // Asks for `bytes` of socket buffer, past the sysctl cap when root; returns what the kernel
  // grants, as getsockopt reports it (twice the request, for its bookkeeping).
  int buffer(int force_opt, int opt, int bytes) const {
    if (::setsockopt(fd_, SOL_SOCKET, force_opt, &bytes, sizeof bytes) != 0)
      (void)::setsockopt(fd_, SOL_SOCKET, opt, &bytes, sizeof bytes);
    int got = 0;
    socklen_t len = sizeof got;
    (void)::getsockopt(fd_, SOL_SOCKET, opt, &got, &len);
    return got;
  }

  // Waits up to `ms` for `events`; true if they came.
  [[nodiscard]] bool wait(short events, int ms) const {
    pollfd p{fd_, events, 0};
    const int rc = ::poll(&p, 1, std::max(ms, 0));
    if (rc < 0 && errno != EINTR) throw_errno("poll");
    return rc > 0;
  }

 private:
  int fd_;
};

void put_u64(std::byte* p, std::uint64_t v) noexcept { std::memcpy(p, &v, sizeof v); }
std::uint64_t get_u64(const std::byte* p) noexcept {
  std::uint64_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// CPU seconds and peak RSS of this process, for the JSON line.
std::string usage_json() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  const auto secs = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return fmt::format(R"("cpu_s": {:.3f}, "max_rss_kb": {})", secs(ru.ru_utime) + secs(ru.ru_stime),
                     ru.ru_maxrss);
}

// ---------------------------------------------------------------------------------------------
// recv

struct recv_options {
  std::string listen = "127.0.0.1:0";
  bool gro = false;
  double seconds = 0;  // the sender's duration; 0: until the end marker or idle
  double wait = 10;    // for the first datagram
  double idle = 1;     // after the last one
  int rcvbuf = 64 << 20;
};

int run_recv(const recv_options& o) {
  const auto local = parse_loopback("--listen", o.listen);
  udp_socket sock{local.storage.ss_family};
  const int rcvbuf = sock.buffer(SO_RCVBUFFORCE, SO_RCVBUF, o.rcvbuf);
  bool gro = o.gro;
  if (gro) {
    const int on = 1;
    if (::setsockopt(sock.fd(), SOL_UDP, UDP_GRO, &on, sizeof on) != 0) {
      fmt::print(stderr, "ferry_blast: UDP_GRO refused ({}); receiving without it\n",
                 std::strerror(errno));
      gro = false;
    }
  }
  if (::bind(sock.fd(), local.addr(), local.length) != 0) throw_errno("bind " + o.listen);
  socket_address bound;
  bound.length = sizeof bound.storage;
  if (::getsockname(sock.fd(), reinterpret_cast<sockaddr*>(&bound.storage), &bound.length) != 0)
    throw_errno("getsockname");
  fmt::print("listening on {}\n", to_string(bound));
  std::fflush(stdout);

  // Progress reports go out a few times per window the sender may use, and the window must
  // fit in the receive buffer, so they follow the buffer's size.
  const std::uint64_t report_every =
      std::min<std::uint64_t>(512 << 10, static_cast<std::uint64_t>(rcvbuf) / 16);
  constexpr std::size_t slot = 65536;
  constexpr std::size_t cmsg_space = CMSG_SPACE(sizeof(int));
  std::vector<std::byte> buffers(batch * slot);
  std::vector<std::byte> controls(batch * cmsg_space);
  std::vector<iovec> iovs(batch);
  std::vector<mmsghdr> msgs(batch);
  std::vector<sockaddr_storage> names(batch);

  std::uint64_t segments = 0, bytes = 0, next_index = 0, reported = 0, other = 0, truncated = 0;
  std::uint64_t sent_segments = 0, sent_bytes = 0, sender_gso = 0;
  bool have_end = false, have_data = false;
  socket_address peer;
  clock_type::time_point first{}, last{};
  const auto start = clock_type::now();
  const auto ms_until = [](clock_type::time_point t) {
    return static_cast<int>(
        std::chrono::ceil<std::chrono::milliseconds>(t - clock_type::now()).count());
  };

  const auto report = [&] {
    std::byte r[40];
    put_u64(r, report_magic);
    put_u64(r + 8, segments);
    put_u64(r + 16, bytes);
    put_u64(r + 24, next_index);
    put_u64(r + 32, static_cast<std::uint64_t>(rcvbuf));
    (void)::sendto(sock.fd(), r, sizeof r, MSG_DONTWAIT, peer.addr(), peer.length);
    reported = bytes;
  };

  while (!have_end) {
    auto deadline = have_data ? last + std::chrono::duration_cast<clock_type::duration>(
                                           std::chrono::duration<double>(o.idle))
                              : start + std::chrono::duration_cast<clock_type::duration>(
                                            std::chrono::duration<double>(o.wait));
    if (have_data && o.seconds > 0)
      deadline = std::min(deadline, first + std::chrono::duration_cast<clock_type::duration>(
                                                std::chrono::duration<double>(o.seconds + 1)));
    const int ms = ms_until(deadline);
    if (ms <= 0 || !sock.wait(POLLIN, ms)) {
      if (clock_type::now() >= deadline) break;
      continue;
    }
    for (std::size_t i = 0; i < batch; ++i) {
      iovs[i] = {&buffers[i * slot], slot};
      msgs[i].msg_hdr = {};
      msgs[i].msg_hdr.msg_name = &names[i];
      msgs[i].msg_hdr.msg_namelen = sizeof names[i];
      msgs[i].msg_hdr.msg_iov = &iovs[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      if (gro) {
        msgs[i].msg_hdr.msg_control = &controls[i * cmsg_space];
        msgs[i].msg_hdr.msg_controllen = cmsg_space;
      }
    }
    const int n = ::recvmmsg(sock.fd(), msgs.data(), batch, MSG_DONTWAIT, nullptr);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      throw_errno("recvmmsg");
    }
    const auto now = clock_type::now();
    bool got_data = false;
    for (int i = 0; i < n; ++i) {
      const auto& h = msgs[static_cast<std::size_t>(i)].msg_hdr;
      const std::byte* p = static_cast<const std::byte*>(h.msg_iov->iov_base);
      const std::size_t len = msgs[static_cast<std::size_t>(i)].msg_len;
      if (h.msg_flags & MSG_TRUNC) ++truncated;
      if (len < header_bytes) {
        ++other;
        continue;
      }
      const auto magic = get_u64(p);
      if (magic == end_magic && len >= 32) {
        sent_segments = get_u64(p + 8);
        sent_bytes = get_u64(p + 16);
        sender_gso = get_u64(p + 24);
        have_end = true;
        continue;
      }
      if (magic != data_magic) {
        ++other;
        continue;
      }
      // A GRO datagram is many segments glued together; the cmsg says where they split.
      std::size_t seg = len;
      for (cmsghdr* c = CMSG_FIRSTHDR(&h); gro && c != nullptr;
           c = CMSG_NXTHDR(const_cast<msghdr*>(&h), c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int size = 0;
          std::memcpy(&size, CMSG_DATA(c), sizeof size);
          if (size > 0) seg = static_cast<std::size_t>(size);
        }
      }
      for (std::size_t off = 0; off < len; off += seg) {
        ++segments;
        if (len - off >= header_bytes && get_u64(p + off) == data_magic)
          next_index = std::max(next_index, get_u64(p + off + 8) + 1);
      }
      bytes += len;
      got_data = true;
      std::memcpy(&peer.storage, h.msg_name, h.msg_namelen);
      peer.length = h.msg_namelen;
    }
    if (got_data) {
      // The first report goes out at once: it tells the sender how large a window may be.
      const bool first_data = !have_data;
      if (first_data) first = now;
      have_data = true;
      last = now;
      if (first_data || bytes - reported >= report_every) report();
    }
  }
  if (have_data) report();

  const double secs = have_data ? seconds_between(first, last) : 0;
  const double mbps = secs > 0 ? static_cast<double>(bytes) / secs / 1e6 : 0;
  const double lost =
      have_end && sent_segments > 0
          ? 100.0 * static_cast<double>(sent_segments - std::min(segments, sent_segments)) /
                static_cast<double>(sent_segments)
          : -1;
  fmt::print("received {:.1f} MB/s: {} bytes in {} datagrams over {:.3f} s; {}\n", mbps, bytes,
             segments, secs,
             have_end ? fmt::format("sent {} datagrams, lost {:.2f}%", sent_segments, lost)
                      : std::string{"no end marker, loss unknown"});
  fmt::print(
      R"({{"role": "recv", "mbps": {:.1f}, "bytes": {}, "datagrams": {}, "seconds": {:.6f}, )"
      R"("sent_datagrams": {}, "sent_bytes": {}, "lost_percent": {}, "gro": {}, "gso": {}, )"
      R"("rcvbuf": {}, "other": {}, "truncated": {}, {}}})"
      "\n",
      mbps, bytes, segments, secs, sent_segments, sent_bytes,
      lost < 0 ? std::string{"null"} : fmt::format("{:.3f}", lost), gro, sender_gso != 0, rcvbuf,
      other, truncated, usage_json());
  return have_data ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// send

struct send_options {
  std::string to;
  std::size_t size = 1472;
  double seconds = 3;
  bool gso = false;
  std::uint64_t window = 16 << 20;  // bytes in flight; 0: no limit, as fast as the socket takes
  int sndbuf = 4 << 20;
};

int run_send(const send_options& o) {
  const auto target = parse_loopback("--to", o.to);
  if (o.size < 32 || o.size > max_udp_payload)
    throw std::invalid_argument(fmt::format("--size must be 32..{}", max_udp_payload));
  udp_socket sock{target.storage.ss_family};
  (void)sock.buffer(SO_SNDBUFFORCE, SO_SNDBUF, o.sndbuf);
  if (::connect(sock.fd(), target.addr(), target.length) != 0) throw_errno("connect " + o.to);

  std::size_t segs = 1;
  if (o.gso) {
    segs = std::min(max_gso_segments, max_udp_payload / o.size);
    const int size = static_cast<int>(o.size);
    if (segs < 2) {
      fmt::print(stderr, "ferry_blast: --size {} leaves no room for GSO; sending without it\n",
                 o.size);
      segs = 1;
    } else if (::setsockopt(sock.fd(), SOL_UDP, UDP_SEGMENT, &size, sizeof size) != 0) {
      fmt::print(stderr, "ferry_blast: UDP_SEGMENT refused ({}); sending without it\n",
                 std::strerror(errno));
      segs = 1;
    }
  }
  // Sized for the first choice of segments; a fallback to one segment needs less.
  std::vector<std::byte> buffer(batch * segs * o.size);
  std::vector<iovec> iovs(batch);
  std::vector<mmsghdr> msgs(batch);
  const auto layout = [&] {
    for (std::size_t i = 0; i < batch; ++i) {
      iovs[i] = {&buffer[i * segs * o.size], segs * o.size};
      msgs[i] = {};
      msgs[i].msg_hdr.msg_iov = &iovs[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    for (std::size_t s = 0; s < batch * segs; ++s) put_u64(&buffer[s * o.size], data_magic);
  };
  layout();

  // Until the first report says how large the receive buffer is, a small window.
  std::uint64_t window_segs =
      o.window == 0
          ? UINT64_MAX
          : std::max<std::uint64_t>(std::min<std::uint64_t>(o.window, 256 << 10) / o.size, 1);
  std::uint64_t sent = 0, acked = 0, stalls = 0, blocked = 0, reports = 0;
  const auto drain_reports = [&] {
    std::byte r[64];
    for (;;) {
      const auto n = ::recv(sock.fd(), r, sizeof r, MSG_DONTWAIT);
      if (n < 40) return;
      if (get_u64(r) != report_magic) continue;
      ++reports;
      acked = std::max(acked, get_u64(r + 24));
      const auto cap = std::min<std::uint64_t>(o.window, get_u64(r + 32) / 4);
      window_segs = std::max<std::uint64_t>(cap / o.size, segs);
    }
  };

  const auto start = clock_type::now();
  const auto end = start + std::chrono::duration_cast<clock_type::duration>(
                               std::chrono::duration<double>(o.seconds));
  while (clock_type::now() < end) {
    std::size_t n = batch;
    if (o.window != 0) {
      drain_reports();
      if (sent - std::min(acked, sent) + segs > window_segs) {
        ++blocked;
        // A report may be lost; after a short wait, go on rather than stall for good.
        if (!sock.wait(POLLIN, 20)) ++stalls;
        drain_reports();
      }
      const auto room = window_segs - std::min(window_segs, sent - std::min(acked, sent));
      n = std::clamp<std::size_t>(static_cast<std::size_t>(room / segs), 1, batch);
    }
    for (std::size_t s = 0; s < n * segs; ++s) put_u64(&buffer[s * o.size + 8], sent + s);
    const int rc = ::sendmmsg(sock.fd(), msgs.data(), static_cast<unsigned>(n), 0);
    if (rc < 0) {
      if (errno == EAGAIN || errno == ENOBUFS || errno == EINTR || errno == ECONNREFUSED) {
        (void)sock.wait(POLLOUT, 10);
        continue;
      }
      // Some kernels and devices refuse GSO only when it is used; go on without it.
      if (segs > 1 && sent == 0 && (errno == EIO || errno == EINVAL || errno == EOPNOTSUPP)) {
        fmt::print(stderr, "ferry_blast: GSO send refused ({}); sending without it\n",
                   std::strerror(errno));
        const int off = 0;
        (void)::setsockopt(sock.fd(), SOL_UDP, UDP_SEGMENT, &off, sizeof off);
        segs = 1;
        layout();
        continue;
      }
      throw_errno("sendmmsg");
    }
    sent += static_cast<std::uint64_t>(rc) * segs;
  }
  const double secs = seconds_between(start, clock_type::now());
  const std::uint64_t bytes = sent * o.size;

  // The marker says how much was sent. It is sent a few times, since it may be lost too.
  std::byte m[32];
  put_u64(m, end_magic);
  put_u64(m + 8, sent);
  put_u64(m + 16, bytes);
  put_u64(m + 24, segs > 1 ? 1 : 0);
  for (int i = 0; i < marker_copies; ++i) {
    (void)::send(sock.fd(), m, sizeof m, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  drain_reports();

  const double mbps = secs > 0 ? static_cast<double>(bytes) / secs / 1e6 : 0;
  fmt::print(
      "sent {:.1f} MB/s: {} datagrams of {} bytes in {:.3f} s{}; window {} datagrams, "
      "{} waits, {} without a report\n",
      mbps, sent, o.size, secs, segs > 1 ? fmt::format(", GSO x{}", segs) : "",
      o.window == 0 ? std::string{"off"} : fmt::format("{}", window_segs), blocked, stalls);
  fmt::print(
      R"({{"role": "send", "mbps": {:.1f}, "bytes": {}, "datagrams": {}, "seconds": {:.6f}, )"
      R"("size": {}, "gso": {}, "gso_segments": {}, "window_datagrams": {}, "waits": {}, )"
      R"("stalls": {}, "acked_datagrams": {}, "reports": {}, {}}})"
      "\n",
      mbps, bytes, sent, secs, o.size, segs > 1, segs, o.window == 0 ? 0 : window_segs, blocked,
      stalls, acked, reports, usage_json());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ferry_blast: the raw UDP ceiling on loopback (recvmmsg/sendmmsg, GRO/GSO)"};
  app.require_subcommand(1);
  recv_options ro;
  auto* recv = app.add_subcommand("recv", "Count what arrives; print MB/s received and loss");
  recv->add_option("--listen", ro.listen, "Loopback address to bind")->capture_default_str();
  recv->add_flag("--gro", ro.gro, "Receive with UDP_GRO (falls back if the kernel refuses)");
  recv->add_option("--seconds", ro.seconds, "Stop this long + 1 s after the first datagram")
      ->check(CLI::NonNegativeNumber);
  recv->add_option("--wait", ro.wait, "Give up if nothing arrives within this (s)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  recv->add_option("--idle", ro.idle, "Stop when nothing arrives for this long (s)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  recv->add_option("--rcvbuf", ro.rcvbuf, "Receive buffer to ask for (bytes)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  send_options so;
  auto* send = app.add_subcommand("send", "Blast fixed-size datagrams for a while");
  send->add_option("--to", so.to, "The receiver's loopback address")->required();
  send->add_option("--size", so.size, "Datagram (GSO segment) payload bytes")
      ->check(CLI::Range(std::size_t{32}, max_udp_payload))
      ->capture_default_str();
  send->add_option("--seconds", so.seconds, "How long to send")
      ->check(CLI::Range(0.01, 600.0))
      ->capture_default_str();
  send->add_flag("--gso", so.gso, "Send 64 KiB UDP_SEGMENT super-datagrams (with a fallback)");
  send->add_option("--window", so.window,
                   "Bytes in flight beyond the receiver's last report; 0: no limit")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return recv->parsed() ? run_recv(ro) : run_send(so);
  } catch (const std::exception& e) {
    fmt::print(stderr, "ferry_blast: {}\n", e.what());
    return 2;
  }
}
