#include "client/server_address.hpp"

#include <fmt/format.h>

#include <optional>
#include <vector>

#include "client/errors.hpp"
#include "client/request_engine.hpp"
#include "client/task.hpp"
#include "common/log.hpp"

namespace ferry::client {

namespace {

// The index of the first connection whose server answers a STAT of the root, with anything
// (an error reply, too, comes from a ferryd). Throws the first address's failure if none does.
task<std::size_t> first_to_answer(request_engine& engine, std::vector<connection*> conns,
                                  clock::duration timeout) {
  std::optional<std::size_t> winner;
  std::vector<std::optional<failure>> failures(conns.size());
  std::size_t failed = 0;
  std::vector<std::uint64_t> keys;
  gate g{engine};
  // Whatever is still asked when this ends, by return or by destruction, is forgotten.
  const cancel_on_exit forget{engine, keys};
  for (std::size_t i = 0; i < conns.size(); ++i) {
    keys.push_back(engine.start(*conns[i], protocol::stat_request{""}, {timeout},
                                [&, i](request_engine::outcome o) {
                                  if (auto* f = std::get_if<failure>(&o)) {
                                    failures[i] = *f;
                                    ++failed;
                                  } else if (!winner) {
                                    winner = i;
                                  }
                                  g.open();
                                }));
  }
  while (!winner && failed < conns.size()) co_await g.wait();
  if (!winner) throw *failures.front();
  co_return *winner;
}

}  // namespace

endpoint resolve_address(const std::string& text, clock::duration timeout) {
  std::string why;
  auto hp = parse_host_port(text, why);
  if (!hp)
    throw failure{
        exit_code::usage,
        fmt::format("bad address '{}': {} (write HOST[:PORT], e.g. 127.0.0.1:7070 or [::1]:7070)",
                    text, why)};
  const auto all = resolve_all(*hp, why);
  if (all.empty()) throw failure{exit_code::network, why};
  for (const auto& ep : all) log::debug("{} resolves to {}", text, to_string(ep));
  if (all.size() == 1) return all.front();
  connection_group group{all};
  request_engine engine{group.loop()};
  const auto i = first_to_answer(engine, group.members(), timeout).run_on(group.loop());
  log::debug("using {}, the first address of {} to answer", to_string(all[i]), text);
  return all[i];
}

}  // namespace ferry::client
