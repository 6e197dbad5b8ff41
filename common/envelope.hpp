#pragma once

// The pre-shared key's envelope around a datagram (PROTOCOL.md, "Pre-shared key"). A sealed
// datagram is the plain one with a flag set in its header and a trailer after its last byte:
// a nonce and an XChaCha20-Poly1305 tag, with every byte as associated data (mac), or with the
// bytes after the header encrypted in place and the header as associated data (aead).
// Opening checks the tag and gives back the plain datagram, flag cleared, for the codec.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace ferry::envelope {

inline constexpr std::uint16_t flag_mac = 0x0002;
inline constexpr std::uint16_t flag_aead = 0x0004;
inline constexpr std::size_t tag_size = 16;
inline constexpr std::size_t nonce_size = 24;
inline constexpr std::size_t max_trailer = nonce_size + tag_size;

enum class mode : std::uint8_t { plain, mac, aead };

[[nodiscard]] constexpr std::size_t trailer_size(mode m) noexcept {
  return m == mode::plain ? 0 : max_trailer;
}
[[nodiscard]] const char* to_string(mode m) noexcept;

// The mode a datagram of at least a header's length says it is sealed in; plain for a shorter
// one, and for one that sets both flags (which no sender does) the strictest, aead, so that
// its tag is checked as such and fails.
[[nodiscard]] mode mode_of(std::span<const std::byte> wire) noexcept;

// Clears both seal flags of a datagram of at least a header's length.
void clear_seal_flags(std::span<std::byte> wire) noexcept;

// 32 secret bytes, and the two keys derived from them: one per algorithm, so that no key
// serves two.
class key {
 public:
  static constexpr std::size_t size = 32;
  // Reads a key file: 64 hex digits, blanks around them allowed. Throws std::runtime_error with
  // a message that names the file and what is wrong with it, including a file that others
  // (not owner or group) may read.
  static std::shared_ptr<const key> load(const std::string& path);
  // From the secret bytes themselves.
  explicit key(std::span<const std::byte, size> secret);
  ~key();
  key(const key&) = delete;
  key& operator=(const key&) = delete;

  [[nodiscard]] const unsigned char* mac_key() const noexcept { return mac_.data(); }
  [[nodiscard]] const unsigned char* aead_key() const noexcept { return aead_.data(); }

 private:
  std::array<unsigned char, size> mac_{};
  std::array<unsigned char, size> aead_{};
};

// A fresh key as key files hold it: 64 hex digits and a newline.
[[nodiscard]] std::string new_key_text();

// Why open() refused a datagram.
enum class refusal : std::uint8_t {
  none,
  plain,      // not sealed at all
  forged,     // sealed, but the tag does not match: another key, or altered on the way
  too_short,  // shorter than a header and the trailer its flags announce
};

// Seals and opens datagrams with one key. Each sealer draws its own random nonce prefix and
// counts the rest, so the nonces of one key never repeat across sealers or processes (24
// bytes: 16 random, 8 counted). Not thread-safe: one per thread.
class sealer {
 public:
  explicit sealer(std::shared_ptr<const key> k);
  // A copy would seal with the same nonces.
  sealer(const sealer&) = delete;
  sealer& operator=(const sealer&) = delete;

  // Seals the `n`-byte plain datagram at the front of `buf`, which must hold n +
  // trailer_size(m) bytes and n >= the header's 16; returns the sealed size. `m` is not plain.
  std::size_t seal(std::span<std::byte> buf, std::size_t n, mode m) noexcept;

  struct opened {
    std::span<std::byte> plain;  // the datagram as it was before sealing
    mode sealed_as = mode::plain;
    refusal why = refusal::none;
  };
  // Opens `wire` in place (an aead datagram is decrypted where it lies).
  [[nodiscard]] opened open(std::span<std::byte> wire) const noexcept;

 private:
  std::shared_ptr<const key> key_;
  std::array<unsigned char, 16> nonce_prefix_{};
  std::uint64_t counter_ = 0;
};

}  // namespace ferry::envelope
