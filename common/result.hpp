#pragma once

#include <utility>
#include <variant>

#include "common/protocol.hpp"

namespace ferry {

// A value or a protocol error code. Spelled like std::expected so it can be swapped in later.
template <typename T>
class result {
 public:
  result(T value) : v_{std::move(value)} {}
  result(protocol::errc e) : v_{e} {}

  [[nodiscard]] explicit operator bool() const noexcept { return std::holds_alternative<T>(v_); }
  [[nodiscard]] bool has_value() const noexcept { return static_cast<bool>(*this); }
  T& operator*() & { return std::get<T>(v_); }
  const T& operator*() const& { return std::get<T>(v_); }
  T* operator->() { return &std::get<T>(v_); }
  const T* operator->() const { return &std::get<T>(v_); }
  [[nodiscard]] protocol::errc error() const noexcept {
    auto* e = std::get_if<protocol::errc>(&v_);
    return e ? *e : protocol::errc::ok;
  }

 private:
  std::variant<T, protocol::errc> v_;
};

}  // namespace ferry
