#include "client/server_address.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "client/discovery.hpp"
#include "client/errors.hpp"
#include "client/request_engine.hpp"
#include "client/task.hpp"
#include "common/log.hpp"

namespace ferry::client {

namespace {

// How long, after the first server of an ADDR answers, the others of it are waited for.
constexpr clock::duration grace = std::chrono::milliseconds{300};

// One server an ADDR stands for, in a roll call.
struct candidate {
  found_server found;
  std::size_t group = 0;  // which ADDR
  std::optional<failure> failed;
  int answered = -1;  // the order of its answer, 0 first; -1 none
};

// Whether a roll call may end for the candidates of `group`.
bool group_settled(const std::vector<candidate>& cs, std::size_t group, bool first_only,
                   clock::time_point first_answer, clock::time_point now) {
  bool pending = false, answered = false;
  for (const auto& c : cs) {
    if (c.group != group) continue;
    if (c.answered >= 0) answered = true;
    if (c.answered < 0 && !c.failed) pending = true;
  }
  if (!pending) return true;
  if (!answered) return false;
  if (now >= first_answer + grace) return true;
  if (!first_only) return false;
  // One answer is enough once nothing of a lower priority may still answer.
  for (const auto& c : cs) {
    if (c.group != group || c.answered < 0) continue;
    if (std::none_of(cs.begin(), cs.end(), [&](const candidate& o) {
          return o.group == group && o.answered < 0 && !o.failed &&
                 o.found.priority < c.found.priority;
        }))
      return true;
  }
  return false;
}

// Asks every candidate for the STAT of the served directory at once, and records who answers
// (with anything: an error reply, too, comes from a ferryd) and who fails, until every group
// is settled.
task<void> roll_call(request_engine& engine, std::vector<connection*> conns,
                     std::vector<candidate>& cs, std::size_t groups, clock::duration timeout,
                     bool first_only) {
  int answers = 0;
  std::vector<std::optional<clock::time_point>> first(groups);
  std::vector<std::uint64_t> keys;
  gate g{engine};
  // Whatever is still asked when this ends, by return or by destruction, is forgotten.
  const cancel_on_exit forget{engine, keys};
  for (std::size_t i = 0; i < conns.size(); ++i) {
    keys.push_back(engine.start(*conns[i], protocol::stat_request{""}, {timeout},
                                [&, i](request_engine::outcome o) {
                                  if (auto* f = std::get_if<failure>(&o)) {
                                    cs[i].failed = *f;
                                  } else {
                                    cs[i].answered = answers++;
                                    if (!first[cs[i].group]) first[cs[i].group] = clock::now();
                                  }
                                  g.open();
                                }));
  }
  for (;;) {
    const auto now = clock::now();
    auto limit = clock::duration::max();
    bool settled = true;
    for (std::size_t k = 0; k < groups; ++k) {
      const auto at = first[k].value_or(clock::time_point::max() - grace);
      if (group_settled(cs, k, first_only, at, now)) continue;
      settled = false;
      if (first[k]) limit = std::min(limit, *first[k] + grace - now);
    }
    if (settled) co_return;
    co_await g.wait(limit);
  }
}

// The servers of each text, found through DNS; texts that are one server are left out of the
// roll call.
std::vector<candidate> find_all(const std::vector<std::string>& texts, clock::duration timeout) {
  std::vector<candidate> cs;
  for (std::size_t k = 0; k < texts.size(); ++k) {
    std::string why;
    const auto spec = parse_server_spec(texts[k], why);
    if (!spec)
      throw failure{
          exit_code::usage,
          fmt::format(
              "bad address '{}': {} (write HOST[:PORT], e.g. 127.0.0.1:7070 or "
              "[::1]:7070, srv+NAME for NAME's _ferry._udp SRV records, or dnssd+NAME for a "
              "server 'ferry discover' lists)",
              texts[k], why)};
    for (auto& f : discover(*spec, timeout, dns_from_environment())) {
      log::debug(
          "{} resolves to {}{}", texts[k], to_string(f.address),
          f.via.empty() ? std::string{} : fmt::format(" (SRV {}, priority {})", f.via, f.priority));
      cs.push_back({std::move(f), k, std::nullopt, -1});
    }
  }
  return cs;
}

void call_roll(std::vector<candidate>& cs, std::size_t groups, clock::duration timeout,
               bool first_only) {
  std::vector<endpoint> all;
  for (const auto& c : cs) all.push_back(c.found.address);
  connection_group group{all};
  request_engine engine{group.loop()};
  roll_call(engine, group.members(), cs, groups, timeout, first_only).run_on(group.loop());
}

// The candidates of `group` to use: those that answered, of the lowest priority among them.
// Throws the first one's failure if none answered.
std::vector<const candidate*> chosen(const std::vector<candidate>& cs, std::size_t group) {
  std::vector<const candidate*> mine;
  for (const auto& c : cs)
    if (c.group == group) mine.push_back(&c);
  std::vector<const candidate*> out;
  for (const auto* c : mine)
    if (c->answered >= 0 && (out.empty() || c->found.priority <= out.front()->found.priority)) {
      if (!out.empty() && c->found.priority < out.front()->found.priority) out.clear();
      out.push_back(c);
    }
  if (out.empty()) throw mine.front()->failed.value_or(failure{exit_code::network, "no answer"});
  return out;
}

}  // namespace

endpoint resolve_address(const std::string& text, clock::duration timeout) {
  auto cs = find_all({text}, timeout);
  if (cs.size() == 1) return cs.front().found.address;
  call_roll(cs, 1, timeout, true);
  auto use = chosen(cs, 0);
  const auto* best = *std::min_element(use.begin(), use.end(),
                                       [](auto* a, auto* b) { return a->answered < b->answered; });
  log::debug("using {}, the first address of {} to answer", to_string(best->found.address), text);
  return best->found.address;
}

std::vector<named_server> resolve_sources(const std::vector<std::string>& texts,
                                          clock::duration timeout) {
  auto cs = find_all(texts, timeout);
  std::vector<std::size_t> size(texts.size(), 0);
  for (const auto& c : cs) ++size[c.group];
  // Only the texts that stand for several servers are asked who is there.
  std::vector<candidate> several;
  for (const auto& c : cs)
    if (size[c.group] > 1) several.push_back(c);
  if (!several.empty()) call_roll(several, texts.size(), timeout, false);
  std::vector<named_server> out;
  for (std::size_t k = 0; k < texts.size(); ++k) {
    if (size[k] == 1) {
      for (const auto& c : cs)
        if (c.group == k) out.push_back({c.found.address, texts[k]});
      continue;
    }
    const auto use = chosen(several, k);
    const auto priority = use.front()->found.priority;
    for (const auto* c : use)
      if (out.size() < max_found_servers)
        out.push_back({c->found.address, to_string(c->found.address)});
    log::debug("{}: using {} of its {} servers, of priority {}", texts[k], use.size(), size[k],
               priority);
    // Higher priorities, held back in their order; each distinct priority is one more step.
    std::vector<std::uint16_t> later;
    for (const auto& c : several)
      if (c.group == k && c.found.priority > priority) later.push_back(c.found.priority);
    std::sort(later.begin(), later.end());
    later.erase(std::unique(later.begin(), later.end()), later.end());
    for (const auto& c : several) {
      if (c.group != k || c.found.priority <= priority || out.size() == max_found_servers) continue;
      const auto step = std::lower_bound(later.begin(), later.end(), c.found.priority);
      out.push_back({c.found.address, to_string(c.found.address),
                     static_cast<int>(step - later.begin()) + 1});
    }
  }
  // The ones used first, then each standby step in turn.
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.standby < b.standby; });
  return out;
}

}  // namespace ferry::client
