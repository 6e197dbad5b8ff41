#include "client/discovery.hpp"

#include <fmt/format.h>
#include <netdb.h>

#include <algorithm>
#include <cstdlib>

#include "client/dnssd.hpp"
#include "client/errors.hpp"
#include "common/log.hpp"

namespace ferry::client {

namespace {

double seconds(clock::duration d) { return std::chrono::duration<double>(d).count(); }

// `host` as a numeric IPv4 or IPv6 address (no DNS is asked), or nullopt.
std::optional<endpoint> numeric(const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0)
    return std::nullopt;
  auto ep = endpoint::from(res->ai_addr);
  ::freeaddrinfo(res);
  return ep;
}

// A loop of its own for one discovery, closed with everything on it.
class owned_loop {
 public:
  owned_loop() { uv_check(uv_loop_init(&loop_), "uv_loop_init"); }
  ~owned_loop() {
    // The close callbacks of what was on it; a uv_stop() left over ends one run early.
    for (int i = 0; i < 3 && uv_run(&loop_, UV_RUN_DEFAULT) != 0;) ++i;
    (void)uv_loop_close(&loop_);
  }
  owned_loop(const owned_loop&) = delete;
  owned_loop& operator=(const owned_loop&) = delete;
  uv_loop_t* get() noexcept { return &loop_; }

 private:
  uv_loop_t loop_{};
};

// What a discovery found so far; the callbacks fill it in on the loop.
struct findings {
  dns_status status;                // of the name's own lookup (addresses, or SRV)
  std::vector<endpoint> addresses;  // of the name itself
  std::vector<srv_record> targets;  // SRV, in the order to try them, at most the bound
  std::vector<dns_status> target_status;
  std::vector<std::vector<endpoint>> target_addresses;
  std::size_t srv_total = 0;  // SRV records in the answer
};

// Looks up what `spec` names on `loop`, each lookup bounded by `timeout` altogether.
void look_up(uv_loop_t* loop, const server_spec& spec, clock::duration timeout,
             const dns_options& dns, findings& f) {
  dns_options opt = dns;
  // A few tries of each query fit in the time; c-ares sends each to every server in turn.
  opt.query_timeout = std::clamp<clock::duration>(timeout / 4, millis{100}, millis{2000});
  dns_resolver resolver{loop, opt};
  uv_owned<uv_timer_t> deadline{loop, uv_timer_init};
  deadline.get()->data = &resolver;
  const auto ms = static_cast<std::uint64_t>(std::chrono::ceil<millis>(timeout).count());
  uv_timer_start(
      deadline.get(), [](uv_timer_t* t) { static_cast<dns_resolver*>(t->data)->cancel_all(); }, ms,
      0);
  auto check_done = [&] {
    if (resolver.pending() == 0) {
      uv_timer_stop(deadline.get());
      uv_stop(loop);
    }
  };
  if (!spec.srv) {
    resolver.addresses(spec.host, spec.port, [&](dns_status st, std::vector<endpoint> all) {
      f.status = std::move(st);
      f.addresses = std::move(all);
      check_done();
    });
  } else {
    resolver.srv(
        std::string{srv_service} + spec.host, [&](dns_status st, std::vector<srv_record> records) {
          f.status = std::move(st);
          f.srv_total = records.size();
          std::mt19937_64 rng{std::random_device{}()};
          f.targets = order_srv(std::move(records), rng);
          if (f.targets.size() > max_found_servers) f.targets.resize(max_found_servers);
          // RFC 2782: a lone target "." says the service is not offered there.
          if (f.targets.size() == 1 && (f.targets[0].target.empty() || f.targets[0].target == "."))
            f.targets.clear();
          f.target_status.resize(f.targets.size());
          f.target_addresses.resize(f.targets.size());
          for (std::size_t i = 0; i < f.targets.size(); ++i)
            resolver.addresses(f.targets[i].target, f.targets[i].port,
                               [&f, &check_done, i](dns_status s, std::vector<endpoint> all) {
                                 f.target_status[i] = std::move(s);
                                 f.target_addresses[i] = std::move(all);
                                 check_done();
                               });
          check_done();
        });
  }
  if (resolver.pending() > 0) uv_run(loop, UV_RUN_DEFAULT);
  resolver.cancel_all();  // nothing is left; should anything be, it ends here
}

failure not_resolved(const std::string& what, const dns_status& st, clock::duration timeout) {
  if (st.timed_out)
    return failure{exit_code::network, fmt::format("cannot resolve '{}': no answer from DNS "
                                                   "within {:g} s",
                                                   what, seconds(timeout))};
  return failure{exit_code::network, fmt::format("cannot resolve '{}': {}", what, st.error)};
}

}  // namespace

std::optional<server_spec> parse_server_spec(std::string_view text, std::string& why) {
  if (text.substr(0, dnssd_prefix.size()) == dnssd_prefix) {
    server_spec s;
    s.dnssd = true;
    s.host = std::string{text.substr(dnssd_prefix.size())};
    if (!dnssd::valid_instance_name(s.host, why)) return std::nullopt;
    return s;
  }
  if (text.substr(0, srv_prefix.size()) == srv_prefix) {
    server_spec s;
    s.srv = true;
    s.host = std::string{text.substr(srv_prefix.size())};
    if (s.host.empty()) {
      why = "empty name after 'srv+'";
      return std::nullopt;
    }
    if (s.host.find_first_of(":[]/ ") != std::string::npos) {
      why = "srv+NAME takes a DNS name and no port: the SRV records give each server's";
      return std::nullopt;
    }
    if (s.host.size() + srv_service.size() > 253) {
      why = "the name is longer than DNS allows";
      return std::nullopt;
    }
    return s;
  }
  auto hp = parse_host_port(text, why);
  if (!hp) return std::nullopt;
  return server_spec{hp->host, hp->port, false};
}

std::vector<srv_record> order_srv(std::vector<srv_record> records, std::mt19937_64& rng) {
  std::stable_sort(records.begin(), records.end(),
                   [](const auto& a, const auto& b) { return a.priority < b.priority; });
  std::vector<srv_record> out;
  out.reserve(records.size());
  for (auto first = records.begin(); first != records.end();) {
    const auto last = std::find_if(first, records.end(),
                                   [&](const auto& r) { return r.priority != first->priority; });
    // RFC 2782: weight-0 records first, then pick by a running sum of weights, one at a time.
    std::vector<srv_record> group(first, last);
    std::stable_partition(group.begin(), group.end(), [](const auto& r) { return r.weight == 0; });
    while (!group.empty()) {
      std::uint64_t total = 0;
      for (const auto& r : group) total += r.weight;
      const auto pick = std::uniform_int_distribution<std::uint64_t>{0, total}(rng);
      std::uint64_t sum = 0;
      auto chosen = group.begin();
      for (auto it = group.begin(); it != group.end(); ++it) {
        sum += it->weight;
        if (sum >= pick) {
          chosen = it;
          break;
        }
      }
      out.push_back(std::move(*chosen));
      group.erase(chosen);
    }
    first = last;
  }
  return out;
}

dns_options dns_from_environment() {
  dns_options o;
  if (const char* v = std::getenv("FERRY_DNS_SERVER"); v != nullptr) o.servers = v;
  return o;
}

std::vector<found_server> discover(const server_spec& spec, clock::duration timeout,
                                   const dns_options& dns) {
  if (spec.dnssd) {
    std::vector<found_server> out;
    for (const auto& ep : resolve_dnssd(spec.host, timeout))
      out.push_back({ep, 0, std::string{dnssd_prefix} + spec.host});
    return out;
  }
  if (!spec.srv) {
    if (auto ep = numeric(spec.host, spec.port)) return {found_server{*ep, 0, {}}};
  }
  findings f;
  {
    owned_loop loop;
    look_up(loop.get(), spec, timeout, dns, f);
  }
  std::vector<found_server> out;
  if (!spec.srv) {
    if (!f.status.ok()) throw not_resolved(spec.host, f.status, timeout);
    if (f.addresses.size() > max_found_servers) {
      log::warn("'{}' has {} addresses; using the first {}", spec.host, f.addresses.size(),
                max_found_servers);
      f.addresses.resize(max_found_servers);
    }
    for (const auto& ep : f.addresses) out.push_back({ep, 0, {}});
    return out;
  }
  const auto name = std::string{srv_service} + spec.host;
  if (!f.status.ok())
    throw not_resolved(name, f.status, timeout);  // no SRV records: no fallback, as asked
  if (f.targets.empty())
    throw failure{exit_code::network,
                  fmt::format("'{}' says no ferry service is offered there (its one SRV target "
                              "is '.')",
                              name)};
  if (f.srv_total > f.targets.size())
    log::warn("'{}' has {} SRV records; using the first {} by priority and weight", name,
              f.srv_total, f.targets.size());
  std::optional<failure> first_error;
  for (std::size_t i = 0; i < f.targets.size(); ++i) {
    const auto& t = f.targets[i];
    const auto via = fmt::format("{}:{}", t.target, t.port);
    if (!f.target_status[i].ok()) {
      log::warn("SRV target {} of '{}': {}", via, name,
                not_resolved(t.target, f.target_status[i], timeout).what());
      if (!first_error) first_error = not_resolved(t.target, f.target_status[i], timeout);
      continue;
    }
    for (const auto& ep : f.target_addresses[i]) {
      if (out.size() == max_found_servers) break;
      if (std::none_of(out.begin(), out.end(), [&](auto& s) { return s.address == ep; }))
        out.push_back({ep, t.priority, via});
    }
  }
  if (out.empty())
    throw failure{exit_code::network,
                  fmt::format("none of the {} SRV targets of '{}' resolves ({})", f.targets.size(),
                              name, first_error ? first_error->what() : "no address")};
  return out;
}

}  // namespace ferry::client
