#include "server/access_log.hpp"

#include <array>
#include <functional>

namespace ferry::server {

namespace {
std::string_view name_of(access_op op) noexcept {
  switch (op) {
    case access_op::get:
      return "get";
    case access_op::stat:
      return "stat";
    case access_op::list:
      return "list";
  }
  return "?";
}
}  // namespace

std::size_t access_log::key_hash::operator()(const key_view& k) const noexcept {
  return peer_key_hash{}(k.peer) ^
         (std::hash<std::string_view>{}(k.rel) * 31 + static_cast<unsigned>(k.op));
}

void access_log::record(const access_event& e, std::uint64_t now_ms) noexcept {
  if (!sink_) return;
  try {
    if (e.op == access_op::stat && e.result == protocol::errc::ok) return;
    const key_view k{peer_key::of(e.peer.addr()), e.op, e.rel.substr(0, max_path_logged)};
    const bool ends = e.op == access_op::stat ||
                      (e.op == access_op::list && (e.last || e.result != protocol::errc::ok));
    auto it = entries_.find(k);
    if (it == entries_.end() && ends) {
      // A refused STAT or a listing of one page: its line at once, taking no place from the
      // transfers under way.
      entry en;
      en.peer = e.peer;
      en.first_ms = now_ms;
      add(en, e, now_ms);
      write(k, en);
      return;
    }
    if (it == entries_.end()) {
      if (entries_.size() >= limits_.max_open && !order_.empty())
        end(entries_.find(*order_.front()));
      it = entries_.emplace(key{k.peer, k.op, std::string{k.rel}}, entry{}).first;
      try {
        it->second.place = order_.insert(order_.end(), &it->first);
      } catch (...) {
        entries_.erase(it);
        throw;
      }
      it->second.peer = e.peer;
      it->second.first_ms = now_ms;
    } else {
      order_.splice(order_.end(), order_, it->second.place);
    }
    add(it->second, e, now_ms);
    if (ends) end(it);
  } catch (...) {
    // No memory for the entry: the line is lost, the request was still served.
  }
}

void access_log::add(entry& en, const access_event& e, std::uint64_t now_ms) noexcept {
  en.last_ms = now_ms;
  en.requests += e.requests;
  en.bytes += e.bytes;
  en.entries += e.entries;
  if (e.result != protocol::errc::ok) {
    ++en.refusals;
    if (en.result == protocol::errc::ok && e.result != protocol::errc::busy) en.result = e.result;
  }
}

void access_log::expire(std::uint64_t now_ms) noexcept {
  while (!order_.empty()) {
    auto it = entries_.find(*order_.front());
    if (now_ms < it->second.last_ms + limits_.idle_ms) break;
    end(it);
  }
  if (sink_) sink_->flush();
}

void access_log::end_all() noexcept {
  while (!order_.empty()) end(entries_.find(*order_.front()));
  if (sink_) sink_->flush();
}

void access_log::end(table::iterator it) noexcept {
  write(it->first, it->second);
  order_.erase(it->second.place);
  entries_.erase(it);
}

void access_log::write(const key_view& k, const entry& en) noexcept {
  try {
    const bool list = k.op == access_op::list;
    // Only ever refused as busy, it ends as busy; a transfer that got bytes through busy
    // refusals ends ok.
    auto result = en.result;
    if (result == protocol::errc::ok && en.refusals > 0 && en.bytes == 0 && en.entries == 0)
      result = protocol::errc::busy;
    std::array<log::field, 8> fields{{
        {"op", std::string{name_of(k.op)}},
        {"client", to_string(en.peer)},
        {"path", k.rel.empty()                    ? std::string{"."}
                 : k.rel.size() < max_path_logged ? std::string{k.rel}
                                                  : std::string{k.rel} + "..."},
        {"result", std::string{protocol::code_name(result)}},
        {list ? "entries" : "bytes", std::to_string(list ? en.entries : en.bytes)},
        {"requests", std::to_string(en.requests)},
        {"refusals", std::to_string(en.refusals)},
        {"duration_ms", std::to_string(en.last_ms - en.first_ms)},
    }};
    sink_->write(fields);
  } catch (...) {
  }
}

}  // namespace ferry::server
