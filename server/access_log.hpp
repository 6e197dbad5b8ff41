#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/address.hpp"
#include "common/log.hpp"
#include "common/protocol.hpp"
#include "server/client_table.hpp"

namespace ferry::server {

enum class access_op : std::uint8_t { get, stat, list };

// What one request did, as the access log counts it.
struct access_event {
  access_op op = access_op::get;
  endpoint peer;
  std::string_view rel;
  std::uint64_t requests = 1;  // GETs it stands for (a run counts each)
  std::uint64_t bytes = 0;     // GET: payload bytes sent
  std::uint64_t entries = 0;   // LIST: names in the page
  bool last = false;           // LIST: the page that ends the listing
  protocol::errc result = protocol::errc::ok;
};

// Where the access log's lines go: one call a line, its fields in order.
class access_sink {
 public:
  virtual void write(std::span<const log::field> fields) noexcept = 0;
  // Hands on what write() gathered; called about once a second.
  virtual void flush() noexcept {}
  virtual ~access_sink() = default;
};

// The access log's lines as events of ferryd's own log, at info level.
class access_to_log final : public access_sink {
 public:
  void write(std::span<const log::field> fields) noexcept override {
    log::write(log::level::info, "access", fields);
  }
};

// One line per finished transfer or listing: client, path, what was sent, how long it took and
// how it ended. The server keeps no state for a transfer, so the log keeps a little of its own:
// what each (client, operation, path) was sent. An entry ends when it has been idle for
// `idle_ms`, when a listing's last page goes out, or when the table is full and it is the least
// recently active; a refused STAT ends at once, and a successful one makes no line of its own.
// Loop thread only.
class access_log {
 public:
  // Paths are kept and logged up to this many bytes (a wire path may have 4,096): 4,096 open
  // entries then hold at most about 4 MiB of paths. A cut path ends in "...".
  static constexpr std::size_t max_path_logged = 1024;

  struct limits {
    std::uint64_t idle_ms = 5'000;
    std::size_t max_open = 4'096;
  };
  // A null `sink` turns the log off: nothing is then kept or written.
  access_log(limits l, std::unique_ptr<access_sink> sink) noexcept
      : limits_{l}, sink_{std::move(sink)} {}

  [[nodiscard]] bool on() const noexcept { return sink_ != nullptr; }
  // Never throws: an event that cannot be kept (no memory) is dropped.
  void record(const access_event& e, std::uint64_t now_ms) noexcept;
  // Ends the entries idle for idle_ms or more, and hands the sink its lines.
  void expire(std::uint64_t now_ms) noexcept;
  // Ends every entry (the server is stopping), and hands the sink its lines.
  void end_all() noexcept;
  [[nodiscard]] std::size_t open() const noexcept { return entries_.size(); }

 private:
  struct key {
    peer_key peer;
    access_op op = access_op::get;
    std::string rel;
  };
  // A key's parts without a copy of the path: finding the entry of a transfer under way, once
  // per run of blocks served, allocates nothing.
  struct key_view {
    peer_key peer;
    access_op op = access_op::get;
    std::string_view rel;
    key_view(const peer_key& p, access_op o, std::string_view r) noexcept
        : peer{p}, op{o}, rel{r} {}
    key_view(const key& k) noexcept : peer{k.peer}, op{k.op}, rel{k.rel} {}  // NOLINT: implicit
    friend bool operator==(const key_view&, const key_view&) = default;
  };
  struct key_hash {
    using is_transparent = void;
    std::size_t operator()(const key_view& k) const noexcept;
  };
  struct key_equal {
    using is_transparent = void;
    bool operator()(const key_view& a, const key_view& b) const noexcept { return a == b; }
  };
  struct entry {
    endpoint peer;
    std::uint64_t first_ms = 0, last_ms = 0;
    std::uint64_t requests = 0, bytes = 0, entries = 0, refusals = 0;
    protocol::errc result = protocol::errc::ok;  // the first refusal other than busy
    std::list<const key*>::iterator place;       // in order_
  };
  using table = std::unordered_map<key, entry, key_hash, key_equal>;

  static void add(entry& en, const access_event& e, std::uint64_t now_ms) noexcept;
  // Writes the line of `en` and forgets it.
  void end(table::iterator it) noexcept;
  void write(const key_view& k, const entry& en) noexcept;

  limits limits_;
  std::unique_ptr<access_sink> sink_;
  table entries_;
  std::list<const key*> order_;  // least recently active first
};

}  // namespace ferry::server
