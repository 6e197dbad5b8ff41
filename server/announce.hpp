#pragma once

// ferryd --announce: publishes the server as a DNS-SD service (_ferry._udp) through the local
// avahi-daemon, over D-Bus, on a thread of avahi's own (AvahiThreadedPoll), so that nothing of
// it ever runs on, or waits in, a server's loop.

#include <cstdint>
#include <memory>
#include <string>

namespace ferry::server {

struct announce_options {
  std::string name;        // the instance name; empty: dnssd::default_instance_name
  std::string root;        // the served directory, whose last component goes into the TXT record
  std::string bind;        // the address listened on: a specific one limits the announce to its
                           // interface
  std::uint16_t port = 0;  // the port listened on, as bound (never 0)
};

// Announces while it lives. The constructor only starts avahi's thread and returns at once: the
// connection to avahi-daemon is made there, and what goes wrong (no D-Bus, no daemon, a name
// taken) is logged as a warning, never fatal, since serving goes on without the announce.
// Without a daemon it waits for one to appear and announces then, as avahi's own services do.
// Throws std::runtime_error only if avahi's thread cannot be started. The destructor withdraws
// the service and joins the thread. Use it from one thread.
class announcer {
 public:
  explicit announcer(announce_options opt);
  ~announcer();
  announcer(const announcer&) = delete;
  announcer& operator=(const announcer&) = delete;

  struct state;  // lives on avahi's thread once started

 private:
  std::unique_ptr<state> s_;
};

}  // namespace ferry::server
