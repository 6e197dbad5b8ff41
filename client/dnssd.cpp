#include "client/dnssd.hpp"

#include <avahi-client/client.h>
#include <avahi-client/lookup.h>
#include <avahi-common/error.h>
#include <avahi-common/simple-watch.h>
#include <avahi-common/strlst.h>
#include <fmt/format.h>
#include <fmt/ostream.h>
#include <net/if.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>

#include "client/discovery.hpp"
#include "client/errors.hpp"
#include "client/terminal_text.hpp"
#include "common/log.hpp"
#include "common/protocol.hpp"

namespace ferry::client {

namespace {

double seconds(clock::duration d) { return std::chrono::duration<double>(d).count(); }

// DNS-SD names compare without regard to ASCII case, as DNS names do.
bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// `text` with control characters as '?': what anyone on the LAN announces must not add lines
// or fields to the output a script reads.
std::string printable(std::string text) {
  for (auto& c : text)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return text;
}

// What a browse has found so far; avahi's callbacks fill it in.
struct browse_state {
  std::string only;
  AvahiClient* client = nullptr;
  std::map<std::string, dnssd_service> found;  // by name and domain
  std::size_t resolvers = 0;                   // started and not yet answered
  std::size_t started = 0;
  bool all_for_now = false;
  bool left_out = false;  // more than max_dnssd_services
  std::string error;      // the browser failed
};

// Owns avahi's objects for one browse; frees them in the order avahi wants.
struct avahi_session {
  AvahiSimplePoll* poll = avahi_simple_poll_new();
  AvahiClient* client = nullptr;
  AvahiServiceBrowser* browser = nullptr;
  avahi_session() = default;
  avahi_session(const avahi_session&) = delete;
  avahi_session& operator=(const avahi_session&) = delete;
  ~avahi_session() {
    if (browser != nullptr) avahi_service_browser_free(browser);
    if (client != nullptr) avahi_client_free(client);  // frees the resolvers still open
    if (poll != nullptr) avahi_simple_poll_free(poll);
  }
};

std::optional<endpoint> endpoint_of(const AvahiAddress& a, std::uint16_t port, AvahiIfIndex ifc) {
  sockaddr_storage ss{};
  if (a.proto == AVAHI_PROTO_INET) {
    auto& in = reinterpret_cast<sockaddr_in&>(ss);
    in.sin_family = AF_INET;
    in.sin_port = htons(port);
    in.sin_addr.s_addr = a.data.ipv4.address;
  } else if (a.proto == AVAHI_PROTO_INET6) {
    auto& in6 = reinterpret_cast<sockaddr_in6&>(ss);
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(port);
    std::memcpy(&in6.sin6_addr, a.data.ipv6.address, sizeof in6.sin6_addr);
    // A link-local address means something only with the interface it was found on.
    if (IN6_IS_ADDR_LINKLOCAL(&in6.sin6_addr) && ifc > 0)
      in6.sin6_scope_id = static_cast<std::uint32_t>(ifc);
  } else {
    return std::nullopt;
  }
  return endpoint::from(reinterpret_cast<const sockaddr*>(&ss));
}

std::vector<std::string> txt_strings(AvahiStringList* txt) {
  std::vector<std::string> out;
  for (auto* l = txt; l != nullptr && out.size() < 64; l = avahi_string_list_get_next(l))
    out.emplace_back(reinterpret_cast<const char*>(avahi_string_list_get_text(l)),
                     avahi_string_list_get_size(l));
  return out;
}

void on_resolved(AvahiServiceResolver* r, AvahiIfIndex ifc, AvahiProtocol, AvahiResolverEvent ev,
                 const char* name, const char*, const char* domain, const char* host,
                 const AvahiAddress* addr, std::uint16_t port, AvahiStringList* txt,
                 AvahiLookupResultFlags, void* data) noexcept {
  auto& st = *static_cast<browse_state*>(data);
  --st.resolvers;
  try {
    if (ev == AVAHI_RESOLVER_FOUND && name != nullptr && addr != nullptr) {
      auto& s = st.found[std::string{name} + '\0' + (domain != nullptr ? domain : "")];
      s.name = name;
      s.domain = domain != nullptr ? domain : "";
      if (host != nullptr && s.host.empty()) s.host = host;
      auto ep = endpoint_of(*addr, port, ifc);
      if (ep && s.addresses.size() < max_found_servers &&
          std::find(s.addresses.begin(), s.addresses.end(), *ep) == s.addresses.end())
        s.addresses.push_back(*ep);
      char ifname[IF_NAMESIZE] = {};
      if (ifc > 0 && ::if_indextoname(static_cast<unsigned>(ifc), ifname) != nullptr &&
          std::find(s.interfaces.begin(), s.interfaces.end(), ifname) == s.interfaces.end())
        s.interfaces.emplace_back(ifname);
      if (!s.txt) s.txt = dnssd::parse_txt(txt_strings(txt), s.why_not);
      if (s.txt) s.why_not.clear();
    } else if (name != nullptr) {
      log::debug("DNS-SD: '{}' did not resolve: {}", name,
                 avahi_strerror(avahi_client_errno(st.client)));
    }
  } catch (const std::exception& e) {
    log::debug("DNS-SD: a resolved service was dropped: {}", e.what());
  }
  avahi_service_resolver_free(r);
}

void on_browse(AvahiServiceBrowser*, AvahiIfIndex ifc, AvahiProtocol proto, AvahiBrowserEvent ev,
               const char* name, const char* type, const char* domain, AvahiLookupResultFlags,
               void* data) noexcept {
  auto& st = *static_cast<browse_state*>(data);
  switch (ev) {
    case AVAHI_BROWSER_NEW:
      if (name == nullptr || (!st.only.empty() && !same_name(st.only, name))) break;
      if (st.started == max_dnssd_services) {
        st.left_out = true;
        break;
      }
      // Each interface and protocol it is on has its own resolver, which asks for the address
      // of that protocol's family (A over IPv4, AAAA over IPv6): so every address is found, and
      // none waits for a record its host does not have.
      if (avahi_service_resolver_new(st.client, ifc, proto, name, type, domain, proto,
                                     static_cast<AvahiLookupFlags>(0), on_resolved,
                                     &st) != nullptr) {
        ++st.resolvers;
        ++st.started;
      }
      break;
    case AVAHI_BROWSER_ALL_FOR_NOW:
      st.all_for_now = true;
      break;
    case AVAHI_BROWSER_FAILURE:
      st.error = avahi_strerror(avahi_client_errno(st.client));
      break;
    default:
      break;
  }
}

failure unreachable(int err) {
  return failure{exit_code::network,
                 fmt::format("cannot browse DNS-SD: avahi-daemon is not running or not reachable "
                             "on the system D-Bus ({}); start it, or name the server by address",
                             avahi_strerror(err))};
}

}  // namespace

std::vector<dnssd_service> browse_services(clock::duration timeout, const std::string& only) {
  const auto deadline = clock::now() + timeout;
  browse_state st;
  st.only = only;
  avahi_session av;
  if (av.poll == nullptr) throw failure{exit_code::internal, "cannot start avahi's poll"};
  int err = 0;
  // Without AVAHI_CLIENT_NO_FAIL: no daemon is an error at once, not a wait.
  av.client = avahi_client_new(
      avahi_simple_poll_get(av.poll), static_cast<AvahiClientFlags>(0),
      [](AvahiClient*, AvahiClientState, void*) noexcept {}, nullptr, &err);
  if (av.client == nullptr) throw unreachable(err);
  st.client = av.client;
  av.browser = avahi_service_browser_new(av.client, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC,
                                         std::string{dnssd::service_type}.c_str(), nullptr,
                                         static_cast<AvahiLookupFlags>(0), on_browse, &st);
  if (av.browser == nullptr) throw unreachable(avahi_client_errno(av.client));
  while (st.error.empty() && !(st.all_for_now && st.resolvers == 0)) {
    const auto left = std::chrono::ceil<millis>(deadline - clock::now()).count();
    if (left <= 0) break;
    if (avahi_simple_poll_iterate(av.poll, static_cast<int>(left)) != 0) break;
  }
  if (!st.error.empty())
    throw failure{exit_code::network, fmt::format("DNS-SD browse failed: {}", st.error)};
  if (st.resolvers > 0)
    log::debug("DNS-SD: {} service(s) still unresolved after {:g} s", st.resolvers,
               seconds(timeout));
  if (st.left_out)
    log::warn("more than {} DNS-SD services of type {}; the rest are left out", max_dnssd_services,
              dnssd::service_type);
  std::vector<dnssd_service> out;
  for (auto& [key, s] : st.found) out.push_back(std::move(s));
  return out;
}

std::vector<endpoint> resolve_dnssd(const std::string& name, clock::duration timeout) {
  auto all = browse_services(timeout, name);
  if (all.empty())
    throw failure{exit_code::network,
                  fmt::format("no DNS-SD service '{}' of type {} was found within {:g} s ('ferry "
                              "discover' lists those there are)",
                              name, dnssd::service_type, seconds(timeout))};
  // The same name in several domains: the first (by name of domain, "local" on a LAN) is used.
  const auto& s = all.front();
  if (!s.txt) throw failure{exit_code::network, fmt::format("'{}': {}", name, s.why_not)};
  if (s.txt->protocol != protocol::version)
    throw failure{exit_code::network,
                  fmt::format("'{}' speaks ferry protocol {}, and this ferry speaks {}", name,
                              s.txt->protocol, protocol::version)};
  if (s.addresses.empty())
    throw failure{exit_code::network, fmt::format("'{}' resolved to no address", name)};
  return s.addresses;
}

void run_discover(const discover_options& o, std::ostream& out) {
  const auto timeout =
      std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(o.timeout_s));
  auto all = browse_services(timeout);
  std::vector<const dnssd_service*> ferry;
  for (const auto& s : all) {
    std::string why;
    if (!dnssd::valid_instance_name(s.name, why))
      log::warn("a service on {} is left out: {}", printable(s.host), why);
    else if (s.txt)
      ferry.push_back(&s);
    else
      log::warn("'{}' on {} is announced as {} but left out: {}", s.name, printable(s.host),
                dnssd::service_type, s.why_not);
  }
  if (o.json) {
    auto list = nlohmann::json::array();
    for (const auto* s : ferry) {
      auto addresses = nlohmann::json::array();
      for (const auto& a : s->addresses) addresses.push_back(to_string(a));
      list.push_back({{"name", s->name},
                      {"source", std::string{dnssd_prefix} + s->name},
                      {"domain", s->domain},
                      {"host", s->host},
                      {"port", s->addresses.empty() ? 0 : s->addresses.front().port()},
                      {"addresses", addresses},
                      {"interfaces", s->interfaces},
                      {"root", s->txt->root},
                      {"protocol", s->txt->protocol},
                      {"compatible", s->txt->protocol == protocol::version}});
    }
    out << list.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    return;
  }
  if (ferry.empty()) log::warn("no ferry server found within {:g} s", o.timeout_s);
  auto shown = [&](const std::string& s) {
    return o.terminal ? quote_for_terminal(s) : printable(s);
  };
  for (const auto* s : ferry) {
    std::string addresses;
    for (const auto& a : s->addresses) addresses += (addresses.empty() ? "" : " ") + to_string(a);
    std::string note;
    if (s->txt->protocol != protocol::version)
      note =
          fmt::format("  (protocol {}; this ferry speaks {})", s->txt->protocol, protocol::version);
    fmt::print(out, "{}\t{}\troot={}\t{}{}\n", shown(std::string{dnssd_prefix} + s->name),
               shown(s->host), shown(s->txt->root), addresses, note);
  }
}

}  // namespace ferry::client
