#include "common/envelope.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "common/byte_order.hpp"
#include "common/protocol.hpp"
#include "common/unique_fd.hpp"

namespace ferry::envelope {

namespace {

constexpr std::size_t flags_at = 6;  // the header's big-endian flags
constexpr std::uint16_t seal_flags = flag_mac | flag_aead;
// crypto_kdf's context: eight bytes that name what the derived keys are for.
constexpr char kdf_context[crypto_kdf_CONTEXTBYTES + 1] = "ferry-v2";
constexpr std::uint64_t mac_subkey = 1;
constexpr std::uint64_t aead_subkey = 2;

static_assert(tag_size == crypto_aead_xchacha20poly1305_ietf_ABYTES);
static_assert(nonce_size == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
static_assert(key::size == crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
static_assert(key::size == crypto_kdf_KEYBYTES);

void init_sodium() {
  if (::sodium_init() < 0) throw std::runtime_error{"libsodium failed to initialise"};
}

auto* u8(std::byte* p) noexcept { return reinterpret_cast<unsigned char*>(p); }
auto* u8(const std::byte* p) noexcept { return reinterpret_cast<const unsigned char*>(p); }

std::uint16_t flags_of(std::span<const std::byte> wire) noexcept {
  return bytes::get_be<std::uint16_t>(wire.data() + flags_at);
}
void set_flags(std::span<std::byte> wire, std::uint16_t f) noexcept {
  bytes::put_be<std::uint16_t>(wire.data() + flags_at, f);
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

void clear_seal_flags(std::span<std::byte> wire) noexcept {
  set_flags(wire, static_cast<std::uint16_t>(flags_of(wire) & ~seal_flags));
}

const char* to_string(mode m) noexcept {
  switch (m) {
    case mode::plain:
      return "plain";
    case mode::mac:
      return "authenticated";
    case mode::aead:
      return "encrypted";
  }
  return "?";
}

mode mode_of(std::span<const std::byte> wire) noexcept {
  if (wire.size() < protocol::header_size) return mode::plain;
  const auto f = flags_of(wire);
  if (f & flag_aead) return mode::aead;
  return (f & flag_mac) ? mode::mac : mode::plain;
}

key::key(std::span<const std::byte, size> secret) {
  init_sodium();
  const auto* master = u8(secret.data());
  ::crypto_kdf_derive_from_key(mac_.data(), mac_.size(), mac_subkey, kdf_context, master);
  ::crypto_kdf_derive_from_key(aead_.data(), aead_.size(), aead_subkey, kdf_context, master);
}

key::~key() {
  ::sodium_memzero(mac_.data(), mac_.size());
  ::sodium_memzero(aead_.data(), aead_.size());
}

std::shared_ptr<const key> key::load(const std::string& path) {
  auto fail = [&](const std::string& why) {
    return std::runtime_error{fmt::format("key file {}: {}", path, why)};
  };
  unique_fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY)};
  if (!fd) throw fail(std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw fail(std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw fail("not a regular file");
  // As ssh does with a private key: a secret that anyone on the machine can read, or replace
  // with one of their own, is none.
  if ((st.st_mode & (S_IROTH | S_IWOTH)) != 0)
    throw fail(fmt::format("others may read or write it (mode {:04o}); chmod o-rw it",
                           st.st_mode & 07777));
  char text[256];
  std::array<std::byte, size> secret{};
  // Whatever happens below, no copy of the secret is left on the stack.
  struct wipe {
    void* p;
    std::size_t n;
    ~wipe() { ::sodium_memzero(p, n); }
  } wipe_text{text, sizeof text}, wipe_secret{secret.data(), secret.size()};
  const auto n = ::read(fd.get(), text, sizeof text);
  if (n < 0) throw fail(std::strerror(errno));
  std::size_t digits = 0;
  bool bad = n == sizeof text;  // far longer than a key
  for (ssize_t i = 0; i < n && !bad; ++i) {
    if (std::isspace(static_cast<unsigned char>(text[i])) != 0) {
      bad = digits != 0 && digits != 2 * size;  // blanks only around the digits
      continue;
    }
    const int v = hex_value(text[i]);
    if (v < 0 || digits == 2 * size) {
      bad = true;
      break;
    }
    auto& b = secret[digits / 2];
    b = static_cast<std::byte>((static_cast<unsigned>(b) << 4) | static_cast<unsigned>(v));
    ++digits;
  }
  if (bad || digits != 2 * size)
    throw fail("expected 64 hex digits (make one with: ferry keygen FILE)");
  return std::make_shared<const key>(std::span<const std::byte, size>{secret});
}

std::string new_key_text() {
  init_sodium();
  unsigned char secret[key::size];
  ::randombytes_buf(secret, sizeof secret);
  char hex[2 * key::size + 1];
  ::sodium_bin2hex(hex, sizeof hex, secret, sizeof secret);
  ::sodium_memzero(secret, sizeof secret);
  std::string out{hex};
  ::sodium_memzero(hex, sizeof hex);
  return out + "\n";
}

sealer::sealer(std::shared_ptr<const key> k) : key_{std::move(k)} {
  init_sodium();
  ::randombytes_buf(nonce_prefix_.data(), nonce_prefix_.size());
}

std::size_t sealer::seal(std::span<std::byte> buf, std::size_t n, mode m) noexcept {
  auto wire = buf.first(n);
  set_flags(wire, static_cast<std::uint16_t>((flags_of(wire) & ~seal_flags) |
                                             (m == mode::aead ? flag_aead : flag_mac)));
  // The nonce: this sealer's random prefix, then its count of datagrams sealed.
  auto* nonce = u8(buf.data() + n);
  std::memcpy(nonce, nonce_prefix_.data(), nonce_prefix_.size());
  bytes::put_le<std::uint64_t>(buf.data() + n + nonce_prefix_.size(), counter_++);
  // A MAC is the same construction with nothing encrypted: every byte is associated data.
  // Poly1305 makes it cheap: a keyed BLAKE2b-128 tag, tried first, cost more CPU than
  // encrypting (scripts/bench.sh CASES=key, 64 KB blocks: 436 MB/s against 770 encrypted).
  const auto clear = m == mode::mac ? n : protocol::header_size;
  auto* body = u8(wire.data() + clear);
  ::crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
      body, nonce + nonce_size, nullptr, body, n - clear, u8(wire.data()), clear, nullptr, nonce,
      m == mode::mac ? key_->mac_key() : key_->aead_key());
  return n + trailer_size(m);
}

sealer::opened sealer::open(std::span<std::byte> wire) const noexcept {
  const auto m = mode_of(wire);
  if (m == mode::plain) return {wire, m, refusal::plain};
  const auto trailer = trailer_size(m);
  if (wire.size() < protocol::header_size + trailer) return {{}, m, refusal::too_short};
  const auto n = wire.size() - trailer;
  const auto* end = u8(wire.data() + n);
  const auto clear = m == mode::mac ? n : protocol::header_size;
  auto* body = u8(wire.data() + clear);
  if (::crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
          body, nullptr, body, n - clear, end + nonce_size, u8(wire.data()), clear, end,
          m == mode::mac ? key_->mac_key() : key_->aead_key()) != 0)
    return {{}, m, refusal::forged};
  auto plain = wire.first(n);
  clear_seal_flags(plain);
  return {plain, m, refusal::none};
}

}  // namespace ferry::envelope
