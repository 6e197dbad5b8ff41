#include "server/stats.hpp"

#include <string>
#include <tuple>

#include "common/log.hpp"
#include "common/protocol.hpp"

namespace ferry::server {

using protocol::errc;

void log_counters(std::span<const stats* const> servers, bool force) noexcept {
  try {
    auto n = [&](const std::atomic<std::uint64_t> stats::*field) {
      std::uint64_t sum = 0;
      for (const auto* s : servers) sum += (s->*field).load();
      return std::to_string(sum);
    };
    std::string refused;
    for (std::size_t i = 1; i < std::tuple_size_v<decltype(stats::refusals)>; ++i) {
      std::uint64_t count = 0;
      for (const auto* s : servers) count += s->refusals[i].load();
      if (count > 0) {
        if (!refused.empty()) refused += ',';
        refused += fmt::format("{}:{}", protocol::code_name(static_cast<errc>(i)), count);
      }
    }
    std::string gets;
    for (const auto* s : servers) {
      if (!gets.empty()) gets += ',';
      gets += std::to_string(s->get_requests.load());
    }
    log::write(log::level::info, "counters",
               {{"requests_list", n(&stats::list_requests)},
                {"requests_stat", n(&stats::stat_requests)},
                {"requests_get", n(&stats::get_requests)},
                {"worker_gets", gets},
                {"blocks_asked", n(&stats::blocks_asked)},
                {"datagrams_in", n(&stats::datagrams_in)},
                {"bytes_in", n(&stats::bytes_in)},
                {"datagrams_out", n(&stats::datagrams_out)},
                {"bytes_out", n(&stats::bytes_out)},
                {"drop_malformed", n(&stats::dropped_malformed)},
                {"drop_corrupt", n(&stats::dropped_corrupt)},
                {"drop_truncated", n(&stats::dropped_truncated)},
                {"unvalidated", n(&stats::unvalidated)},
                {"tokens_sent", n(&stats::tokens_sent)},
                {"denied", n(&stats::denied)},
                {"unauthenticated", n(&stats::unauthenticated)},
                {"drop_unauthenticated", n(&stats::dropped_unauthenticated)},
                {"tokens_refreshed", n(&stats::tokens_refreshed)},
                {"amplification_withheld", n(&stats::amplification_withheld)},
                {"drop_queue_full", n(&stats::dropped_queue_full)},
                {"rate_waits", n(&stats::rate_waits)},
                {"drop_send_queue", n(&stats::send_dropped)},
                {"recv_errors", n(&stats::recv_errors)},
                {"send_errors", n(&stats::send_errors)},
                {"busy", n(&stats::busy_sent)},
                {"errors_sent", n(&stats::errors_sent)},
                {"refusals", refused.empty() ? "none" : refused},
                {"reads_inline", n(&stats::reads_inline)},
                {"reads_pooled", n(&stats::reads_pooled)},
                {"gso_sends", n(&stats::gso_sends)},
                {"gso_refused", n(&stats::gso_refused)},
                {"digests", n(&stats::digests_computed)},
                {"internal_errors", n(&stats::internal_errors)},
                {"prefix_full", n(&stats::prefix_full)},
                {"clients_evicted", n(&stats::clients_evicted)},
                {"held_peak", n(&stats::held_peak)},
                {"access_lines_dropped", n(&stats::access_lines_dropped)},
                {"active_addresses", n(&stats::active_addresses)}},
               force);
  } catch (...) {
  }
}

}  // namespace ferry::server
