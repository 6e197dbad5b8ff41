// ferry_delay: a user-space delay line between two network interfaces, for scripts/netpath.sh.
// This kernel has no netem qdisc, so the real-path harness delays frames here: every Ethernet
// frame that arrives on interface A leaves interface B a fixed delay later, and B to A likewise.
// Each direction has its own FIFO queue; as the delay is fixed, the order is kept. A queue is
// bounded in bytes, and a frame beyond the bound, or one that the outgoing interface refuses (its
// qdisc is full, or the frame is larger than its MTU), is dropped and counted: the bridge never
// blocks, so it behaves as a tail-drop link. Each direction runs on its own thread and sleeps
// in ppoll until a frame arrives or the next one is due. Standalone on purpose, like
// ferry_impair: it must not share bugs with the code under test.
//
//   ip netns exec MIDDLE ferry_delay --a veth-to-server --b veth-to-router --delay-ms 30
//
// It prints "ready ..." on stdout once both sockets are bound, runs until SIGTERM or SIGINT or
// --max-seconds, and then prints one counters line per direction on stderr.

#include <arpa/inet.h>
#include <fmt/format.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using nanos = std::int64_t;
constexpr nanos ns_per_s = 1'000'000'000;

// Frames are read and written this many at a time with recvmmsg and sendmmsg.
constexpr std::size_t batch = 64;
// The size of struct virtio_net_hdr, which PACKET_VNET_HDR puts before every frame (see
// open_port). <linux/virtio_net.h> is not valid C++ (a member is named `class`), hence the number.
constexpr std::size_t vnet_bytes = 10;
// A receive slot holds the largest frame the kernel can hand over (a GRO super-frame, should
// someone leave GRO on), so that nothing is truncated.
constexpr std::size_t slot_bytes = 65536 + 64 + vnet_bytes;
// Receiving stops after this many full batches in a row, so that a flood in one direction
// cannot hold back the releases of either queue.
constexpr int max_receive_rounds = 8;

struct options {
  std::string a;
  std::string b;
  double delay_ms = 0;
  double max_seconds = 3600;
  std::size_t limit_bytes = std::size_t{64} << 20;
  int socket_buffer = 16 << 20;
};

nanos now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<nanos>(ts.tv_sec) * ns_per_s + ts.tv_nsec;
}

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// Owns a file descriptor; closes it on every path out, including exceptions.
class fd_owner {
 public:
  explicit fd_owner(int fd) : fd_(fd) {}
  fd_owner(const fd_owner&) = delete;
  fd_owner& operator=(const fd_owner&) = delete;
  ~fd_owner() {
    if (fd_ >= 0) ::close(fd_);
  }
  [[nodiscard]] int get() const noexcept { return fd_; }

 private:
  int fd_;
};

void set_int_option(int fd, int level, int name, int value, const char* what) {
  if (setsockopt(fd, level, name, &value, sizeof value) != 0) throw_errno(what);
}

// Opens a raw packet socket that sees every frame received on IFNAME and sends frames out of it.
// The socket is created with protocol 0, which receives nothing, and only bound to ETH_P_ALL on
// the interface once configured, so that no frame of another interface slips in before the bind.
int open_port(const std::string& ifname, int buffer_bytes) {
  const unsigned index = if_nametoindex(ifname.c_str());
  if (index == 0) throw_errno(fmt::format("interface '{}'", ifname));
  const int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_errno("socket(AF_PACKET)");
  try {
    // Our own sends on this interface must not come back to us as received frames.
    set_int_option(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING");
    // With the virtio-net header, a frame whose checksum the sender left to the hardware
    // (CHECKSUM_PARTIAL, the default on a veth) goes out with the same instruction instead of
    // a wrong checksum, so the end hosts need not turn checksum offload off.
    set_int_option(fd, SOL_PACKET, PACKET_VNET_HDR, 1, "PACKET_VNET_HDR");
    // Large buffers absorb bursts between two wake-ups; the FORCE variants, allowed to root,
    // go beyond net.core.rmem_max, and the plain ones are the fallback for everyone else.
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer_bytes, sizeof buffer_bytes) != 0)
      set_int_option(fd, SOL_SOCKET, SO_RCVBUF, buffer_bytes, "SO_RCVBUF");
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buffer_bytes, sizeof buffer_bytes) != 0)
      set_int_option(fd, SOL_SOCKET, SO_SNDBUF, buffer_bytes, "SO_SNDBUF");
    sockaddr_ll address{};
    address.sll_family = AF_PACKET;
    address.sll_protocol = htons(ETH_P_ALL);
    address.sll_ifindex = static_cast<int>(index);
    if (bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0)
      throw_errno(fmt::format("bind to '{}'", ifname));
  } catch (...) {
    ::close(fd);
    throw;
  }
  return fd;
}

struct frame {
  nanos release = 0;
  std::vector<unsigned char> bytes;  // the virtio-net header, then the Ethernet frame
};

// One direction of the bridge: what arrives on `from` waits in `queue` and leaves by `to`.
struct direction {
  std::string name;
  int from = -1;
  int to = -1;
  std::deque<frame> queue;
  std::size_t queued_bytes = 0;
  std::uint64_t received = 0;
  std::uint64_t forwarded = 0;
  std::uint64_t forwarded_bytes = 0;
  std::uint64_t dropped_limit = 0;      // the queue was at --limit-bytes
  std::uint64_t dropped_full = 0;       // the outgoing qdisc or socket buffer was full
  std::uint64_t dropped_too_big = 0;    // larger than the outgoing interface's MTU
  std::uint64_t dropped_truncated = 0;  // larger than a receive slot (cannot happen below 64 KiB)
  std::string error;                    // why this direction stopped early, if it did
};

// The receive slots of one direction.
struct receive_slots {
  std::unique_ptr<unsigned char[]> memory =
      std::make_unique_for_overwrite<unsigned char[]>(batch * slot_bytes);
  std::array<iovec, batch> iov{};
  std::array<mmsghdr, batch> msgs{};
  receive_slots() {
    for (std::size_t i = 0; i < batch; ++i) {
      iov[i] = iovec{memory.get() + i * slot_bytes, slot_bytes};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
  }
};

// Reads what is waiting on d.from and queues it for release at now + delay. All frames of one
// recvmmsg get the same time: they were waiting together, and it keeps them in order.
void receive(direction& d, receive_slots& slots, nanos delay, std::size_t limit) {
  for (int round = 0; round < max_receive_rounds; ++round) {
    const int n = recvmmsg(d.from, slots.msgs.data(), batch, MSG_DONTWAIT, nullptr);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      throw_errno(fmt::format("{}: recvmmsg", d.name));
    }
    const nanos release = now_ns() + delay;
    for (int i = 0; i < n; ++i) {
      const auto& m = slots.msgs[static_cast<std::size_t>(i)];
      ++d.received;
      if ((m.msg_hdr.msg_flags & MSG_TRUNC) != 0) {
        ++d.dropped_truncated;
        continue;
      }
      if (d.queued_bytes + m.msg_len > limit) {
        ++d.dropped_limit;
        continue;
      }
      const auto* start = static_cast<const unsigned char*>(m.msg_hdr.msg_iov->iov_base);
      d.queue.push_back(frame{release, std::vector<unsigned char>(start, start + m.msg_len)});
      d.queued_bytes += m.msg_len;
    }
    if (static_cast<std::size_t>(n) < batch) return;
  }
}

void pop_front(direction& d) {
  d.queued_bytes -= d.queue.front().bytes.size();
  d.queue.pop_front();
}

// Sends every frame of d whose time has come, in batches. A frame the kernel refuses for want of
// room or for its size is dropped, never retried: a real link does not wait for a full queue.
void release(direction& d, nanos now) {
  std::array<iovec, batch> iov{};
  std::array<mmsghdr, batch> msgs{};
  while (!d.queue.empty() && d.queue.front().release <= now) {
    std::size_t k = 0;
    for (auto it = d.queue.begin(); it != d.queue.end() && k < batch && it->release <= now;
         ++it, ++k) {
      iov[k] = iovec{it->bytes.data(), it->bytes.size()};
      msgs[k] = mmsghdr{};
      msgs[k].msg_hdr.msg_iov = &iov[k];
      msgs[k].msg_hdr.msg_iovlen = 1;
    }
    const int sent = sendmmsg(d.to, msgs.data(), static_cast<unsigned>(k), MSG_DONTWAIT);
    if (sent > 0) {
      for (int i = 0; i < sent; ++i) {
        ++d.forwarded;
        d.forwarded_bytes += d.queue.front().bytes.size() - vnet_bytes;
        pop_front(d);
      }
      continue;
    }
    // sendmmsg reports the error of the first frame it could not send; that frame is dropped
    // and the rest are tried again.
    switch (errno) {
      case EINTR:
        continue;
      case EAGAIN:
      case ENOBUFS:
        ++d.dropped_full;
        break;
      case EMSGSIZE:
        ++d.dropped_too_big;
        break;
      default:
        throw_errno(fmt::format("{}: sendmmsg", d.name));
    }
    pop_front(d);
  }
}

void print_counters(const direction& d) {
  fmt::print(stderr,
             "ferry_delay: {} received={} forwarded={} forwarded_bytes={} dropped_limit={} "
             "dropped_full={} dropped_too_big={} dropped_truncated={} left_in_queue={}\n",
             d.name, d.received, d.forwarded, d.forwarded_bytes, d.dropped_limit, d.dropped_full,
             d.dropped_too_big, d.dropped_truncated, d.queue.size());
}

void wake_all(int stop) {
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(stop, &one, sizeof one);
}

// One direction's loop, on its own thread. Each direction gets a thread because a send runs the
// rest of the path in the sender's context (the router, the qdisc and the receiving host's TCP
// all run in softirq on the way out of sendmmsg): with one thread, the data and the
// acknowledgements would share one core, and at 500 Mbit/s that core is the bottleneck. It stops
// when `stop` (an eventfd that nobody reads, so it stays readable for both) becomes readable.
void forward(direction& d, nanos delay, std::size_t limit, int stop) noexcept {
  try {
    receive_slots slots;
    std::array<pollfd, 2> fds{pollfd{d.from, POLLIN, 0}, pollfd{stop, POLLIN, 0}};
    for (;;) {
      const nanos now = now_ns();
      release(d, now);
      // Sleep until the next frame is due, or until something arrives: no spinning.
      timespec timeout{};
      const timespec* wait = nullptr;
      if (!d.queue.empty()) {
        const nanos left = std::max<nanos>(0, d.queue.front().release - now);
        timeout =
            timespec{static_cast<time_t>(left / ns_per_s), static_cast<long>(left % ns_per_s)};
        wait = &timeout;
      }
      if (ppoll(fds.data(), fds.size(), wait, nullptr) < 0) {
        if (errno == EINTR) continue;
        throw_errno("ppoll");
      }
      if (fds[1].revents != 0) return;
      if ((fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) {
        // The kernel reports an interface that went down or away as a socket error; the
        // bridge cannot carry on without it.
        int error = 0;
        socklen_t length = sizeof error;
        getsockopt(d.from, SOL_SOCKET, SO_ERROR, &error, &length);
        throw std::system_error(error, std::generic_category(), d.name + ": receiving");
      }
      if ((fds[0].revents & POLLIN) != 0) receive(d, slots, delay, limit);
    }
  } catch (const std::exception& e) {
    d.error = e.what();
    wake_all(stop);
  }
}

int run(const options& o) {
  if (o.a == o.b) throw std::invalid_argument("--a and --b must name two interfaces");
  // SIGTERM and SIGINT are taken through a signalfd, so that a signal can never fall between a
  // check of a flag and the wait. They are blocked before the threads start, which inherit the
  // mask. A shell starts background jobs with SIGINT ignored, and an ignored signal never
  // reaches a signalfd, hence the reset to the default action, which cannot run while the
  // signals are blocked.
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGINT, SIG_DFL);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr) != 0) throw_errno("pthread_sigmask");
  const fd_owner signals(signalfd(-1, &stop_signals, SFD_NONBLOCK | SFD_CLOEXEC));
  if (signals.get() < 0) throw_errno("signalfd");
  const fd_owner stop(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (stop.get() < 0) throw_errno("eventfd");

  const fd_owner a(open_port(o.a, o.socket_buffer));
  const fd_owner b(open_port(o.b, o.socket_buffer));
  std::array<direction, 2> dirs;
  dirs[0].name = o.a + "->" + o.b;
  dirs[0].from = a.get();
  dirs[0].to = b.get();
  dirs[1].name = o.b + "->" + o.a;
  dirs[1].from = b.get();
  dirs[1].to = a.get();
  const auto delay = static_cast<nanos>(o.delay_ms * 1e6);
  const nanos end = now_ns() + static_cast<nanos>(o.max_seconds * 1e9);

  // The default timer slack (50 us) would make every frame late by up to that much; the
  // threads inherit this setting.
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  fmt::print("ready {} <-> {} delay {} ms\n", o.a, o.b, o.delay_ms);
  std::fflush(stdout);
  {
    // On every way out of this block, exceptions included, the destructor's body wakes the
    // workers, and then the jthreads, destroyed after it, join them.
    struct stop_then_join {
      int stop;
      std::array<std::jthread, 2> threads;
      ~stop_then_join() { wake_all(stop); }
    } workers{stop.get(), {}};
    for (std::size_t i = 0; i < 2; ++i)
      workers.threads[i] =
          std::jthread(forward, std::ref(dirs[i]), delay, o.limit_bytes, stop.get());
    // This thread only waits for a signal, the end of --max-seconds or a failed direction.
    std::array<pollfd, 2> fds{pollfd{signals.get(), POLLIN, 0}, pollfd{stop.get(), POLLIN, 0}};
    for (nanos now = now_ns(); now < end; now = now_ns()) {
      const nanos left = end - now;
      const timespec timeout{static_cast<time_t>(left / ns_per_s),
                             static_cast<long>(left % ns_per_s)};
      const int ready = ppoll(fds.data(), fds.size(), &timeout, nullptr);
      if (ready > 0) break;
      if (ready < 0 && errno != EINTR) break;
    }
  }
  int status = 0;
  for (const auto& d : dirs) {
    print_counters(d);
    if (!d.error.empty()) {
      fmt::print(stderr, "ferry_delay: {}\n", d.error);
      status = 1;
    }
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ferry_delay: delay every frame between two interfaces by a fixed time"};
  options o;
  app.add_option("--a", o.a, "One interface (AF_PACKET, all frames)")->required();
  app.add_option("--b", o.b, "The other interface")->required();
  app.add_option("--delay-ms", o.delay_ms, "One-way delay in milliseconds, both directions")
      ->check(CLI::Range(0.0, 10000.0))
      ->capture_default_str();
  app.add_option("--limit-bytes", o.limit_bytes, "Bytes queued per direction; beyond: dropped")
      ->check(CLI::Range(std::size_t{65536}, std::size_t{1} << 34))
      ->capture_default_str();
  app.add_option("--socket-buffer", o.socket_buffer, "SO_RCVBUF and SO_SNDBUF to ask for")
      ->check(CLI::Range(65536, 1 << 30))
      ->capture_default_str();
  app.add_option("--max-seconds", o.max_seconds, "Exit by itself after this long")
      ->check(CLI::Range(0.0, 86400.0 * 7))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    fmt::print(stderr, "ferry_delay: {}\n", e.what());
    return 2;
  }
}
