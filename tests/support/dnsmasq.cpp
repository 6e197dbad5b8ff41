#include "support/dnsmasq.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/unique_fd.hpp"
#include "support/loopback.hpp"

extern char** environ;

namespace ferry::test {

namespace {

std::string find_dnsmasq() {
  for (const char* p : {"/usr/sbin/dnsmasq", "/usr/local/sbin/dnsmasq", "/sbin/dnsmasq"})
    if (::access(p, X_OK) == 0) return p;
  return {};
}

// A UDP port on 127.0.0.1 that was free a moment ago.
std::uint16_t free_port() {
  unique_fd s{::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  REQUIRE(s);
  return bind_loopback(s.get()).port();
}

// Whether something listens on UDP 127.0.0.1:`port`, as /proc/net/udp shows it.
bool udp_bound(std::uint16_t port) {
  std::ifstream in{"/proc/net/udp"};
  const auto want = fmt::format("0100007F:{:04X}", port);
  std::string line;
  while (std::getline(in, line))
    if (line.find(want) != std::string::npos) return true;
  return false;
}

}  // namespace

dnsmasq::dnsmasq(const std::vector<std::string>& records) {
  const auto bin = find_dnsmasq();
  // Missing in CI would hide the discovery tests: it is a failure, not a skip.
  REQUIRE_MESSAGE(!bin.empty(),
                  "dnsmasq is not installed (Debian: dnsmasq-base; scripts/install-deps.sh)");
  for (int attempt = 0; attempt < 3 && pid_ < 0; ++attempt) {
    port_ = free_port();
    std::vector<std::string> args{"timeout",
                                  "60",
                                  bin,
                                  "--keep-in-foreground",
                                  "--no-resolv",
                                  "--no-hosts",
                                  "--conf-file=/dev/null",
                                  "--pid-file=",
                                  "--listen-address=127.0.0.1",
                                  "--bind-interfaces",
                                  fmt::format("--port={}", port_),
                                  "--local=/ferry.test/",
                                  "--log-facility=/dev/null"};
    if (::geteuid() == 0) args.emplace_back("--user=root");  // no dnsmasq user needed
    args.insert(args.end(), records.begin(), records.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    REQUIRE(::posix_spawnp(&pid, "timeout", nullptr, nullptr, argv.data(), environ) == 0);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{5};
    bool up = false;
    while (std::chrono::steady_clock::now() < deadline) {
      if (udp_bound(port_)) {
        up = true;
        break;
      }
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) break;  // the port was taken: another one
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
    if (up) {
      pid_ = pid;
    } else if (::kill(pid, SIGTERM) == 0) {
      (void)::waitpid(pid, nullptr, 0);
    }
  }
  REQUIRE_MESSAGE(pid_ > 0, "dnsmasq did not start on 127.0.0.1");
}

dnsmasq::~dnsmasq() {
  if (pid_ <= 0) return;
  // timeout passes the signal on to dnsmasq and exits with it.
  (void)::kill(pid_, SIGTERM);
  (void)::waitpid(pid_, nullptr, 0);
}

std::string dnsmasq::server() const { return fmt::format("127.0.0.1:{}", port_); }

}  // namespace ferry::test
