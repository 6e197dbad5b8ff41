#pragma once

#include <uv.h>

#include <coroutine>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>
#include <variant>
#include <vector>

#include "client/connection.hpp"
#include "client/errors.hpp"
#include "client/task.hpp"
#include "common/uv_owned.hpp"

namespace ferry::client {

// How one exchange waits.
struct ask_options {
  // It fails after this long without an answer. "busy" is no answer: a server that says only
  // that for so long is as good as gone, for this request.
  clock::duration timeout = std::chrono::seconds{10};
  // A STAT of a file whose digest the server is still computing is asked again, gently, until
  // the digest is ready or this long has passed; 0 takes the first answer as it is.
  clock::duration digest_wait{0};
};

// The client's one request engine on one loop. Every request that expects one answer (STAT,
// LIST) is an exchange here: sent, sent again at the RTO with backoff, sent again at once with
// the address token a server asks for, waited out while the server is busy, and ended by one
// outcome, the reply or a failure. Replies that answer no exchange (the blocks a fetch asks
// for, which its congestion control recovers) go to the connection's stream handler.
//
// Nothing here resumes a coroutine from inside a socket callback: a coroutine that an answer
// wakes goes on from the loop a moment later, so it may destroy what delivered the answer.
// Connections given to the engine must outlive it.
class request_engine {
 public:
  explicit request_engine(uv_loop_t* loop);
  ~request_engine();
  request_engine(const request_engine&) = delete;
  request_engine& operator=(const request_engine&) = delete;

  using outcome = std::variant<protocol::reply, failure>;
  using done_fn = std::function<void(outcome)>;

  // Starts an exchange; `done` gets its outcome once, from inside the loop, unless it is
  // cancelled first. `done` must not throw. Returns a key for cancel().
  std::uint64_t start(connection& conn, protocol::request req, ask_options opt, done_fn done);
  // Forgets an exchange; its late answers are dropped. Unknown keys are ignored.
  void cancel(std::uint64_t key) noexcept;
  [[nodiscard]] std::size_t active() const noexcept { return exchanges_.size(); }

  // The exchange as a coroutine: the reply, or the failure thrown.
  task<protocol::reply> ask(connection& conn, protocol::request req, ask_options opt);

  // Where replies to `conn` that answer no exchange go; nullptr for nowhere.
  void set_stream(connection& conn, connection::reply_handler h);

  // Resumes `h` from the loop, soon.
  void resume_soon(std::coroutine_handle<> h);
  [[nodiscard]] uv_loop_t* loop() const noexcept { return loop_; }

 private:
  struct exchange {
    connection* conn = nullptr;
    protocol::request req;
    ask_options opt;
    done_fn done;
    std::vector<std::uint64_t> ids;  // every transmission's request id
    clock::time_point started{}, sent{}, next_send{}, alive{};
    bool answered = false;  // the last transmission drew an answer that was not the outcome
    bool busy = false;      // the server said busy since the last sign of life
    int token_rounds = 0;
    clock::duration poll = std::chrono::milliseconds{2};
  };

  void attach(connection& conn);
  void dispatch(connection& conn, const codec::decoded_reply& r) noexcept;
  void on_answer(std::uint64_t key, const codec::decoded_reply& r);
  void transmit(std::uint64_t key, exchange& x, clock::time_point now);
  void complete(std::uint64_t key, outcome o) noexcept;
  void on_timer() noexcept;
  // The kernel says nothing listens at `conn`'s server (`err`, an ICMP refusal). While the
  // server has never answered on this connection, its requests end now, as curl's do on
  // "connection refused", rather than at the timeout; once it has, this is a restart or a
  // late report, and only loss.
  void on_unreachable(connection& conn, int err) noexcept;
  // A refusal that a send took, read once the send is over.
  void check_refusal(connection& conn) noexcept;
  void rearm() noexcept;

  uv_loop_t* loop_;
  uv_owned<uv_timer_t> timer_;  // the next retransmission or deadline of any exchange
  uv_owned<uv_timer_t> wake_;   // resumes the coroutines in ready_
  std::vector<std::coroutine_handle<>> ready_;
  std::map<std::uint64_t, exchange> exchanges_;
  std::uint64_t next_key_ = 1;
  // Request id to exchange, per connection.
  std::map<std::pair<const connection*, std::uint64_t>, std::uint64_t> by_id_;
  std::unordered_map<const connection*, connection::reply_handler> streams_;
  std::vector<connection*> attached_;
};

// Forgets the exchanges in `keys` when it goes out of scope: for a coroutine that starts
// several and may return, or be destroyed, before all of them have answered. Declare it after
// whatever their completions refer to, so it goes first.
class cancel_on_exit {
 public:
  cancel_on_exit(request_engine& engine, const std::vector<std::uint64_t>& keys) noexcept
      : engine_{engine}, keys_{keys} {}
  ~cancel_on_exit() {
    for (auto k : keys_) engine_.cancel(k);
  }
  cancel_on_exit(const cancel_on_exit&) = delete;
  cancel_on_exit& operator=(const cancel_on_exit&) = delete;

 private:
  request_engine& engine_;
  const std::vector<std::uint64_t>& keys_;
};

// A point where one coroutine waits until something opens it or a time limit passes. Opening
// a gate nobody waits at lets the next wait pass at once.
class gate {
 public:
  explicit gate(request_engine& engine) noexcept : engine_{engine} {}
  gate(const gate&) = delete;
  gate& operator=(const gate&) = delete;

  void open() noexcept;

  struct awaiter {
    gate& g;
    clock::duration limit;
    bool await_ready() noexcept { return std::exchange(g.opened_, false); }
    void await_suspend(std::coroutine_handle<> h);
    void await_resume() noexcept { g.opened_ = false; }
  };
  // co_await wait(limit): until open(), or `limit` has passed.
  [[nodiscard]] awaiter wait(clock::duration limit = clock::duration::max()) noexcept {
    return awaiter{*this, limit};
  }

 private:
  void wake() noexcept;

  request_engine& engine_;
  std::coroutine_handle<> waiter_;
  bool opened_ = false;
  std::unique_ptr<uv_owned<uv_timer_t>> timer_;
};

}  // namespace ferry::client
