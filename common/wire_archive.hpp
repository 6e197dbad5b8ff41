#pragma once

// The cereal archives every message of the wire format is written and read through, GET and
// DATA included. They write the bytes cereal's PortableBinary archives write with the
// LittleEndian option (a leading 1, then every field little-endian, sizes as 64-bit tags),
// but straight into and out of a span: no stream, no allocation of their own. Every read is
// bounds-checked, and every size a peer chooses is checked by the caller before anything is
// allocated for it. Included by common/codec.cpp only: cereal stays out of every other file.

#include <cereal/cereal.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

#include "common/byte_order.hpp"
#include "common/protocol.hpp"

namespace ferry::codec::wire {

// Thrown inside the codec only, and always caught before a decode_* or encode_* returns.
struct codec_error {
  protocol::errc code;
};

class span_output_archive
    : public cereal::OutputArchive<span_output_archive, cereal::AllowEmptyClassElision> {
 public:
  // Writes the leading byte that says the fields are little-endian.
  explicit span_output_archive(std::span<std::byte> out) : OutputArchive{this}, out_{out} {
    (*this)(std::uint8_t{1});
  }

  // Writing past the end of the span means the message does not fit: bad_request.
  void save_bytes(const void* p, std::size_t n) {
    if (out_.size() - at_ < n) throw codec_error{protocol::errc::bad_request};
    if (n > 0) std::memcpy(out_.data() + at_, p, n);
    at_ += n;
  }
  template <class T>
  void save_integer(T v) {
    using U = std::make_unsigned_t<T>;
    std::byte b[sizeof(T)];
    bytes::put_le(b, static_cast<U>(v));
    save_bytes(b, sizeof b);
  }
  [[nodiscard]] std::size_t written() const noexcept { return at_; }

 private:
  std::span<std::byte> out_;
  std::size_t at_ = 0;
};

class span_input_archive
    : public cereal::InputArchive<span_input_archive, cereal::AllowEmptyClassElision> {
 public:
  // Reads and checks the leading byte: anything but little-endian is not one of our bodies.
  explicit span_input_archive(std::span<const std::byte> in) : InputArchive{this}, in_{in} {
    if (in_.empty() || take(1)[0] != std::byte{1}) throw codec_error{protocol::errc::malformed};
  }

  // The next `n` bytes, where they lie; reading past the end is malformed.
  const std::byte* take(std::size_t n) {
    if (in_.size() - at_ < n) throw codec_error{protocol::errc::malformed};
    const auto* p = in_.data() + at_;
    at_ += n;
    return p;
  }
  template <class T>
  T load_integer() {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(bytes::get_le<U>(take(sizeof(T))));
  }
  [[nodiscard]] std::size_t consumed() const noexcept { return at_; }
  [[nodiscard]] std::size_t remaining() const noexcept { return in_.size() - at_; }

 private:
  std::span<const std::byte> in_;
  std::size_t at_ = 0;
};

// cereal finds these by argument-dependent lookup. Integers only: the wire has no floats, and
// bool and enums travel as range-checked bytes (see codec.cpp).
template <class T>
requires std::is_integral_v<T>
void CEREAL_SAVE_FUNCTION_NAME(span_output_archive& ar, const T& t) { ar.save_integer(t); }
template <class T>
requires std::is_integral_v<T>
void CEREAL_LOAD_FUNCTION_NAME(span_input_archive& ar, T& t) { t = ar.load_integer<T>(); }

template <class Archive, class T>
CEREAL_ARCHIVE_RESTRICT(span_input_archive, span_output_archive)
CEREAL_SERIALIZE_FUNCTION_NAME(Archive& ar, cereal::SizeTag<T>& t) {
  ar(t.size);
}

template <class T>
void CEREAL_SAVE_FUNCTION_NAME(span_output_archive& ar, const cereal::BinaryData<T>& bd) {
  static_assert(sizeof(std::remove_pointer_t<std::decay_t<T>>) == 1,
                "bytes only: no byte order to mind");
  ar.save_bytes(bd.data, static_cast<std::size_t>(bd.size));
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(span_input_archive& ar, cereal::BinaryData<T>& bd) {
  static_assert(sizeof(std::remove_pointer_t<std::decay_t<T>>) == 1,
                "bytes only: no byte order to mind");
  const auto n = static_cast<std::size_t>(bd.size);
  const auto* from = ar.take(n);
  if (n > 0) std::memcpy(bd.data, from, n);
}

}  // namespace ferry::codec::wire
