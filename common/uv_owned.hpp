#pragma once

#include <fmt/format.h>
#include <uv.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace ferry {

// A failed libuv call during setup. Carries libuv's error name and text.
class uv_error : public std::runtime_error {
 public:
  uv_error(int code, const std::string& what)
      : std::runtime_error{fmt::format("{}: {} ({})", what, ::uv_strerror(code),
                                       ::uv_err_name(code))},
        code_{code} {}
  [[nodiscard]] int code() const noexcept { return code_; }

 private:
  int code_;
};

// Throws uv_error if `rc` is a libuv error. For setup code only, never inside a callback.
inline void uv_check(int rc, const char* what) {
  if (rc < 0) throw uv_error{rc, what};
}

// Sole owner of one libuv handle (uv_udp_t, uv_timer_t, uv_async_t, uv_signal_t ...).
// libuv handles cannot move and must be closed before their memory is freed, so the handle
// lives on the heap at a fixed address and is freed by the close callback.
template <typename T>
class uv_owned {
 public:
  template <typename Init, typename... Args>
  uv_owned(uv_loop_t* loop, Init init, Args&&... args) : h_{new T{}} {
    if (int rc = init(loop, h_, std::forward<Args>(args)...); rc < 0) {
      delete h_;
      throw uv_error{rc, "uv init"};
    }
  }
  uv_owned(const uv_owned&) = delete;
  uv_owned& operator=(const uv_owned&) = delete;
  ~uv_owned() { close(); }

  // Idempotent; the memory is freed in libuv's close callback.
  void close() noexcept {
    if (T* h = std::exchange(h_, nullptr)) {
      auto* handle = reinterpret_cast<uv_handle_t*>(h);
      if (!::uv_is_closing(handle))
        ::uv_close(handle, [](uv_handle_t* p) { delete reinterpret_cast<T*>(p); });
    }
  }
  [[nodiscard]] T* get() const noexcept { return h_; }
  [[nodiscard]] uv_handle_t* handle() const noexcept { return reinterpret_cast<uv_handle_t*>(h_); }

 private:
  T* h_;
};

}  // namespace ferry
