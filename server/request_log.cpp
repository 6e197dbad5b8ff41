#include "server/request_log.hpp"

#include <string>

#include "common/log.hpp"

namespace ferry::server {

void log_request(const endpoint& peer, std::uint64_t id, const protocol::request& req) noexcept {
  // One line a validated request, at debug only: a busy server takes a hundred thousand a
  // second, which is a debugging aid, not an access log.
  try {
    const auto client = to_string(peer);
    const auto rid = std::to_string(id);
    if (const auto* g = std::get_if<protocol::get_request>(&req)) {
      log::write(log::level::debug, "request",
                 {{"client", client},
                  {"id", rid},
                  {"type", g->count > 1 ? "get_run" : "get"},
                  {"path", g->path},
                  {"offset", std::to_string(g->offset)},
                  {"block", std::to_string(g->block_size)},
                  {"count", std::to_string(g->count)}});
    } else if (const auto* st = std::get_if<protocol::stat_request>(&req)) {
      log::write(log::level::debug, "request",
                 {{"client", client}, {"id", rid}, {"type", "stat"}, {"path", st->path}});
    } else if (const auto* l = std::get_if<protocol::list_request>(&req)) {
      log::write(log::level::debug, "request",
                 {{"client", client},
                  {"id", rid},
                  {"type", "list"},
                  {"path", l->path},
                  {"cursor", l->cursor}});
    }
  } catch (...) {
  }
}

void log_refusal(const endpoint& peer, std::uint64_t id, protocol::errc code) noexcept {
  try {
    log::write(log::level::debug, "refused",
               {{"client", to_string(peer)},
                {"id", std::to_string(id)},
                {"code", std::string{protocol::code_name(code)}}});
  } catch (...) {
  }
}

}  // namespace ferry::server
