#pragma once

#include <uv.h>

#include <coroutine>
#include <exception>
#include <optional>
#include <utility>

#include "client/errors.hpp"

namespace ferry::client {

template <typename T = void>
class task;

namespace detail {

struct promise_base {
  std::coroutine_handle<> continuation = std::noop_coroutine();
  uv_loop_t* stop_loop = nullptr;  // set on the outermost task while the loop runs for it
  std::exception_ptr error;

  std::suspend_always initial_suspend() noexcept { return {}; }
  struct final_awaiter {
    bool await_ready() noexcept { return false; }
    template <typename P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      auto& p = h.promise();
      if (p.stop_loop != nullptr) uv_stop(p.stop_loop);
      return p.continuation;
    }
    void await_resume() noexcept {}
  };
  final_awaiter final_suspend() noexcept { return {}; }
  // What the body throws waits here for whoever awaits the task: it never reaches the libuv
  // callback that resumed the coroutine.
  void unhandled_exception() noexcept { error = std::current_exception(); }
};

template <typename T>
struct promise : promise_base {
  std::optional<T> value;
  task<T> get_return_object() noexcept;
  void return_value(T v) { value.emplace(std::move(v)); }
  T take() {
    if (error) std::rethrow_exception(error);
    return std::move(*value);
  }
};

template <>
struct promise<void> : promise_base {
  task<void> get_return_object() noexcept;
  void return_void() noexcept {}
  void take() const {
    if (error) std::rethrow_exception(error);
  }
};

}  // namespace detail

// A command, or a step of one, written as a coroutine that waits for the network with
// co_await, so that the whole command runs on one run of the loop instead of running the loop
// again for every exchange. It starts when awaited or run; what it throws comes out there.
//
// GCC 12 destroys a temporary that is an argument in a co_await expression twice (ASan: a
// double free of a std::string in a request built in place), so a task with arguments is
// made in a statement of its own and then awaited by name:
//   auto asking = engine.ask(conn, protocol::stat_request{path}, {timeout});
//   auto reply = co_await asking;
template <typename T>
class [[nodiscard]] task {
 public:
  using promise_type = detail::promise<T>;

  explicit task(std::coroutine_handle<promise_type> h) noexcept : h_{h} {}
  task(task&& other) noexcept : h_{std::exchange(other.h_, {})} {}
  task& operator=(task&&) = delete;
  ~task() {
    if (h_) h_.destroy();
  }

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> caller) noexcept {
    h_.promise().continuation = caller;
    return h_;
  }
  T await_resume() { return h_.promise().take(); }

  // Runs the task to its end with one run of `loop`, which nothing else may be running.
  T run_on(uv_loop_t* loop) {
    h_.resume();
    if (!h_.done()) {
      // Only now: a stop requested before uv_run would end the next run of the loop instead.
      h_.promise().stop_loop = loop;
      uv_run(loop, UV_RUN_DEFAULT);
      h_.promise().stop_loop = nullptr;
    }
    if (!h_.done()) throw failure{exit_code::internal, "the event loop stopped before the command"};
    return h_.promise().take();
  }

 private:
  std::coroutine_handle<promise_type> h_;
};

namespace detail {
template <typename T>
task<T> promise<T>::get_return_object() noexcept {
  return task<T>{std::coroutine_handle<promise<T>>::from_promise(*this)};
}
inline task<void> promise<void>::get_return_object() noexcept {
  return task<void>{std::coroutine_handle<promise<void>>::from_promise(*this)};
}
}  // namespace detail

}  // namespace ferry::client
