#include "server/announce.hpp"

#include <arpa/inet.h>
#include <avahi-client/client.h>
#include <avahi-client/publish.h>
#include <avahi-common/alternative.h>
#include <avahi-common/error.h>
#include <avahi-common/malloc.h>
#include <avahi-common/strlst.h>
#include <avahi-common/thread-watch.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "common/dnssd.hpp"
#include "common/log.hpp"
#include "common/protocol.hpp"

namespace ferry::server {

struct announcer::state {
  announce_options opt;
  std::string name;                      // the instance name now, after any collision
  std::vector<std::string> txt;          // key=value strings
  AvahiIfIndex iface = AVAHI_IF_UNSPEC;  // where to announce
  AvahiThreadedPoll* poll = nullptr;
  AvahiClient* client = nullptr;  // avahi's thread only, once started
  AvahiEntryGroup* group = nullptr;
  bool said_waiting = false;  // the "no daemon yet" warning is given once
};

namespace {

using state = announcer::state;

void warn(const state& s, const std::string& what, int err) {
  log::write(log::level::warn, what,
             {{"service", s.name},
              {"why", avahi_strerror(err)},
              {"bus", [] {
                 const char* a = std::getenv("DBUS_SYSTEM_BUS_ADDRESS");
                 return std::string{a != nullptr && *a != '\0' ? a : "the system bus"};
               }()}});
}

// The interface that holds `bind`, so that a server listening on one address is announced
// only where that address is; AVAHI_IF_UNSPEC (every interface) for a wildcard or no match.
AvahiIfIndex interface_of(const std::string& bind) {
  in_addr v4{};
  in6_addr v6{};
  const bool is_v4 = ::inet_pton(AF_INET, bind.c_str(), &v4) == 1;
  const bool is_v6 = !is_v4 && ::inet_pton(AF_INET6, bind.c_str(), &v6) == 1;
  if ((!is_v4 && !is_v6) || (is_v4 && v4.s_addr == INADDR_ANY) ||
      (is_v6 && IN6_IS_ADDR_UNSPECIFIED(&v6)))
    return AVAHI_IF_UNSPEC;
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0) return AVAHI_IF_UNSPEC;
  unsigned found = 0;
  for (auto* i = all; i != nullptr && found == 0; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    const auto* sa = i->ifa_addr;
    const bool same =
        is_v4 ? sa->sa_family == AF_INET &&
                    reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr == v4.s_addr
              : sa->sa_family == AF_INET6 &&
                    std::memcmp(&reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, &v6,
                                sizeof v6) == 0;
    if (same) found = ::if_nametoindex(i->ifa_name);
  }
  ::freeifaddrs(all);
  return found == 0 ? AVAHI_IF_UNSPEC : static_cast<AvahiIfIndex>(found);
}

void rename_after_collision(state& s) {
  char* next = avahi_alternative_service_name(s.name.c_str());
  log::write(log::level::warn, "DNS-SD service name taken on the network; trying another",
             {{"service", s.name}, {"next", next != nullptr ? next : ""}});
  if (next != nullptr) s.name = next;
  avahi_free(next);
}

void add_service(state& s, AvahiClient* c);

void on_group(AvahiEntryGroup* g, AvahiEntryGroupState st, void* data) noexcept {
  auto& s = *static_cast<state*>(data);
  switch (st) {
    case AVAHI_ENTRY_GROUP_ESTABLISHED:
      log::write(log::level::info, "announced",
                 {{"service", s.name},
                  {"type", std::string{dnssd::service_type}},
                  {"port", std::to_string(s.opt.port)}});
      break;
    case AVAHI_ENTRY_GROUP_COLLISION:
      rename_after_collision(s);
      add_service(s, avahi_entry_group_get_client(g));
      break;
    case AVAHI_ENTRY_GROUP_FAILURE:
      warn(s, "DNS-SD announce failed", avahi_client_errno(avahi_entry_group_get_client(g)));
      break;
    default:
      break;
  }
}

// Adds the service to the (new or emptied) entry group and commits it.
void add_service(state& s, AvahiClient* c) {
  if (s.group == nullptr) {
    s.group = avahi_entry_group_new(c, on_group, &s);
    if (s.group == nullptr) return warn(s, "DNS-SD announce failed", avahi_client_errno(c));
  }
  avahi_entry_group_reset(s.group);
  std::vector<const char*> strings;
  for (const auto& t : s.txt) strings.push_back(t.c_str());
  for (int tries = 0; tries < 16; ++tries) {
    AvahiStringList* txt =
        avahi_string_list_new_from_array(strings.data(), static_cast<int>(strings.size()));
    const int rc = avahi_entry_group_add_service_strlst(
        s.group, s.iface, AVAHI_PROTO_UNSPEC, static_cast<AvahiPublishFlags>(0), s.name.c_str(),
        std::string{dnssd::service_type}.c_str(), nullptr, nullptr, s.opt.port, txt);
    avahi_string_list_free(txt);
    if (rc == AVAHI_ERR_COLLISION) {
      rename_after_collision(s);
      continue;
    }
    if (rc < 0) return warn(s, "DNS-SD announce failed", rc);
    if (const int r = avahi_entry_group_commit(s.group); r < 0)
      return warn(s, "DNS-SD announce failed", r);
    return;
  }
  warn(s, "DNS-SD announce failed: no free service name", AVAHI_ERR_COLLISION);
}

void connect(state& s);

void on_client(AvahiClient* c, AvahiClientState st, void* data) noexcept {
  auto& s = *static_cast<state*>(data);
  switch (st) {
    case AVAHI_CLIENT_S_RUNNING:
      s.said_waiting = false;
      add_service(s, c);
      break;
    case AVAHI_CLIENT_S_COLLISION:
    case AVAHI_CLIENT_S_REGISTERING:
      // The host name is being (re)registered; the service follows it once it is running.
      if (s.group != nullptr) avahi_entry_group_reset(s.group);
      break;
    case AVAHI_CLIENT_CONNECTING:
      if (!s.said_waiting)
        warn(s, "not announced yet: avahi-daemon is not running; announcing once it starts",
             AVAHI_ERR_NO_DAEMON);
      s.said_waiting = true;
      break;
    case AVAHI_CLIENT_FAILURE:
      if (avahi_client_errno(c) == AVAHI_ERR_DISCONNECTED) {
        // The daemon went away (restarted, say): start over, waiting for it to come back.
        warn(s, "avahi-daemon went away; announcing again once it is back", AVAHI_ERR_DISCONNECTED);
        avahi_client_free(c);
        s.client = nullptr;
        s.group = nullptr;  // freed with its client
        s.said_waiting = true;
        connect(s);
      } else {
        warn(s, "DNS-SD announce failed", avahi_client_errno(c));
      }
      break;
  }
}

void connect(state& s) {
  int err = 0;
  s.client =
      avahi_client_new(avahi_threaded_poll_get(s.poll), AVAHI_CLIENT_NO_FAIL, on_client, &s, &err);
  if (s.client == nullptr) warn(s, "not announced: cannot reach avahi-daemon", err);
}

}  // namespace

announcer::announcer(announce_options opt) : s_{std::make_unique<state>()} {
  auto& s = *s_;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "localhost");
  // "--root ." and "--root /srv/files/" are named by the directory they are.
  std::error_code ec;
  auto root_path = std::filesystem::canonical(opt.root, ec);
  if (ec) root_path = std::filesystem::path{opt.root}.lexically_normal();
  const auto root_name = root_path.filename().string();
  s.name = opt.name.empty() ? dnssd::default_instance_name(root_name, host) : opt.name;
  if (std::string why; !dnssd::valid_instance_name(s.name, why))
    s.name = dnssd::default_instance_name("", host);  // a root name with control characters
  s.txt = dnssd::make_txt({dnssd::txt_version, protocol::version, root_name});
  s.iface = interface_of(opt.bind);
  s.opt = std::move(opt);
  s.poll = avahi_threaded_poll_new();
  if (s.poll == nullptr) throw std::runtime_error{"cannot start avahi's thread for --announce"};
  // The connection is made on avahi's thread, by a timeout due at once, so that a D-Bus that
  // is slow to answer holds up only that thread.
  const AvahiPoll* api = avahi_threaded_poll_get(s.poll);
  const timeval now{0, 0};
  api->timeout_new(
      api, &now, [](AvahiTimeout*, void* data) { connect(*static_cast<state*>(data)); }, &s);
  if (avahi_threaded_poll_start(s.poll) < 0) {
    avahi_threaded_poll_free(s.poll);
    throw std::runtime_error{"cannot start avahi's thread for --announce"};
  }
}

announcer::~announcer() {
  auto& s = *s_;
  // Stopped first, so that nothing runs on avahi's thread while the client goes; freeing the
  // client withdraws the service.
  avahi_threaded_poll_stop(s.poll);
  if (s.client != nullptr) avahi_client_free(s.client);
  avahi_threaded_poll_free(s.poll);
}

}  // namespace ferry::server
