// ferry_flood: sends a seeded mix of garbage, damaged and lying datagrams at a ferry server, as
// fast as it can or at --rate, and prints how many it sent and how the server must count them.
// Loopback only. Tests use it to show that no datagram can crash, stall or grow the server, and
// that every one it drops is counted. See --help.

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "common/address.hpp"
#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "tests/tools/impair_random.hpp"

namespace {

namespace protocol = ferry::protocol;
using protocol::errc;
using protocol::msg_type;
using clock_type = std::chrono::steady_clock;

// What the flood sends. The server drops every one of them; some draw an error reply.
enum class kind : std::uint8_t {
  random_bytes,   // any length 0..65507, never starting with the magic
  truncated,      // a valid request cut short
  oversized,      // a valid request in all but its size (> max_request_size)
  lying_length,   // a length tag that lies, under a checksum that matches
  bad_checksum,   // a valid request with one byte changed after the version
  reply_typed,    // a well-formed reply, or a reply-range type, with a matching checksum
  wrong_version,  // ferry's magic with another version byte
};
constexpr std::array<const char*, 7> kind_names{"random",       "truncated",    "oversized",
                                                "lying_length", "bad_checksum", "reply_typed",
                                                "wrong_version"};
// Fixed proportions, per 1000. The two kinds of large datagrams are the fewest, since they cost
// most to send and the decoder rejects them by their size alone.
constexpr std::array<unsigned, 7> kind_weights{150, 160, 60, 160, 160, 160, 150};
static_assert(kind_weights[0] + kind_weights[1] + kind_weights[2] + kind_weights[3] +
                  kind_weights[4] + kind_weights[5] + kind_weights[6] ==
              1000);

// Request ids of datagrams that should draw an error reply carry this tag and their index, so
// every reply can be matched to the one datagram it answers.
constexpr std::uint64_t reply_id_tag = 0xF100'D000'0000'0000ULL;
constexpr std::uint64_t max_count = 100'000'000;
constexpr std::size_t batch_size = 64;

// One datagram as built, and what the server must make of it.
struct built {
  std::size_t size = 0;
  errc decoded = errc::malformed;  // what codec::decode_request must answer
  errc reply = errc::ok;           // the error reply it draws; ok: none
};

struct options {
  std::string target;
  std::uint64_t count = 1'000'000;
  std::uint64_t seed = 1;
  std::string source;  // empty: 127.0.0.1, or ::1 for an IPv6 target
  double rate = 0;     // datagrams per second; 0: as fast as the socket takes them
  bool stats = false;
};

void put_u64_le(std::byte* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i, v >>= 8) p[i] = std::byte(v & 0xff);
}
void put_u64_be(std::byte* p, std::uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = std::byte(v & 0xff);
}

// Builds datagrams into caller-owned buffers of protocol::max_datagram bytes.
class generator {
 public:
  explicit generator(std::uint64_t seed) : rng_{seed}, pool_(pool_size + protocol::max_datagram) {
    for (std::size_t i = 0; i < pool_.size(); i += 8) {
      const auto v = rng_.next();
      for (std::size_t j = 0; j < 8 && i + j < pool_.size(); ++j)
        pool_[i + j] = std::byte((v >> (8 * j)) & 0xff);
    }
  }

  kind pick() {
    auto r = below(1000);
    for (std::size_t k = 0; k < kind_weights.size(); ++k) {
      if (r < kind_weights[k]) return static_cast<kind>(k);
      r -= kind_weights[k];
    }
    return kind::random_bytes;
  }

  built make(kind k, std::uint64_t index, std::span<std::byte> out) {
    switch (k) {
      case kind::random_bytes:
        return random_bytes(out);
      case kind::truncated:
        return truncated(out);
      case kind::oversized:
        return oversized(out);
      case kind::lying_length:
        return lying_length(index, out);
      case kind::bad_checksum:
        return bad_checksum(out);
      case kind::reply_typed:
        return reply_typed(out);
      case kind::wrong_version:
        return wrong_version(index, out);
    }
    return {};
  }

 private:
  static constexpr std::size_t pool_size = 1 << 20;

  std::uint64_t below(std::uint64_t n) { return rng_.next() % n; }
  std::uint64_t between(std::uint64_t lo, std::uint64_t hi) { return lo + below(hi - lo + 1); }
  msg_type request_type() {
    static constexpr std::array<msg_type, 3> types{msg_type::list_request, msg_type::stat_request,
                                                   msg_type::get_request};
    return types[below(types.size())];
  }

  // `n` random bytes, copied from a random place in the pool.
  void fill(std::byte* p, std::size_t n) { std::memcpy(p, &pool_[below(pool_size)], n); }

  std::string name(std::size_t n) {
    static constexpr std::string_view chars = "abcdefghijklmnopqrstuvwxyz0123456789._-/";
    std::string s(n, 'a');
    for (auto& c : s) c = chars[below(chars.size())];
    return s;
  }

  // A request that decodes, with a path mostly short and sometimes up to the limit.
  protocol::request valid_request() {
    auto path = name(below(5) == 0 ? between(65, protocol::max_path) : between(0, 64));
    switch (below(3)) {
      case 0:
        return protocol::list_request{std::move(path), name(between(0, protocol::max_name))};
      case 1:
        return protocol::stat_request{std::move(path)};
      default:
        return protocol::get_request{std::move(path), rng_.next(),
                                     static_cast<std::uint32_t>(between(1, 0xffff'ffff))};
    }
  }

  std::size_t encode_valid(std::span<std::byte> out) {
    auto n = ferry::codec::encode_request(out, rng_.next(), valid_request());
    if (!n) throw std::logic_error{"a valid request did not encode"};
    return *n;
  }

  void header(std::byte* p, std::uint8_t version, std::uint8_t type, std::uint64_t id) {
    for (std::size_t i = 0; i < protocol::magic.size(); ++i) p[i] = std::byte{protocol::magic[i]};
    p[4] = std::byte{version};
    p[5] = std::byte{type};
    p[6] = std::byte(below(256));  // flags: receivers ignore them, but for the pre-shared key's
    p[7] = std::byte(below(256)) & ~std::byte{0x06};  // (PROTOCOL.md), left clear here
    put_u64_be(p + 8, id);
  }

  // Appends XXH3-64 of everything before it, little-endian, as PROTOCOL.md says.
  static std::size_t seal(std::span<std::byte> out, std::size_t n) {
    put_u64_le(&out[n], XXH3_64bits(out.data(), n));
    return n + protocol::checksum_size;
  }

  built random_bytes(std::span<std::byte> out) {
    const auto n = static_cast<std::size_t>(between(0, protocol::max_datagram));
    fill(out.data(), n);
    // Random bytes that happen to start with the magic would be another kind; nudge them off it.
    if (n >= 4 && std::memcmp(out.data(), protocol::magic.data(), 4) == 0) out[0] ^= std::byte{1};
    return {n, errc::malformed};
  }

  built truncated(std::span<std::byte> out) {
    const auto n = static_cast<std::size_t>(below(encode_valid(out)));
    // Shorter than a header it is not ferry's; longer, its last eight bytes are no checksum.
    return {n, n < protocol::header_size ? errc::malformed : errc::corrupt};
  }

  built oversized(std::span<std::byte> out) {
    const auto n =
        static_cast<std::size_t>(between(protocol::max_request_size + 1, protocol::max_datagram));
    header(out.data(), protocol::version, static_cast<std::uint8_t>(request_type()), rng_.next());
    fill(&out[protocol::header_size], n - protocol::header_size - protocol::checksum_size);
    out[protocol::header_size] = std::byte{1};  // little-endian, as a real body says
    seal(out, n - protocol::checksum_size);
    return {n, errc::malformed};
  }

  // A request body written by hand, so that one length tag can lie: over its limit, or within
  // it but past the bytes that follow, or short of the bytes that follow. The checksum matches,
  // so only the decoder's bounds checks stand between it and an allocation or a read.
  built lying_length(std::uint64_t index, std::span<std::byte> out) {
    const auto type = request_type();
    const bool list = type == msg_type::list_request, get = type == msg_type::get_request;
    header(out.data(), protocol::version, static_cast<std::uint8_t>(type), reply_id_tag | index);
    std::size_t n = protocol::header_size;
    out[n++] = std::byte{1};
    auto put_string = [&](std::size_t tag, const std::string& s) {
      put_u64_le(&out[n], tag);
      n += 8;
      std::memcpy(&out[n], s.data(), s.size());
      n += s.size();
    };
    // Names hold no zero byte, and the GET fields below none either, so a short tag can never
    // read a block size of 0 (bad_request) where malformed is expected.
    const auto lie_path = name(between(0, 200));
    const bool lie_in_cursor = list && below(2) == 0;
    const auto limit = lie_in_cursor ? protocol::max_name : protocol::max_path;
    const auto lie_text = lie_in_cursor ? name(between(0, 200)) : lie_path;
    // Bytes that follow the lying tag, up to the checksum: its text, then the cursor's empty
    // string after a LIST path, or a GET's offset and block size.
    const std::size_t after = lie_text.size() + (lie_in_cursor ? 0 : list ? 8 : get ? 12 : 0);
    std::uint64_t tag = 0;
    switch (below(lie_text.empty() ? 2 : 3)) {
      case 0: {  // over the limit, up to 2^64 - 1
        static constexpr std::array<std::uint64_t, 4> big{
            0xffff'ffff'ffff'ffffULL, 0x8000'0000'0000'0000ULL, 0x1'0000'0000ULL, 0};
        const auto pick = big[below(big.size())];
        tag = pick != 0 ? pick : between(limit + 1, limit + 100'000);
        break;
      }
      case 1:  // within the limit, past the end of the body
        tag = between(after + 1, limit);
        break;
      default:  // short of the bytes that follow
        tag = below(lie_text.size());
        break;
    }
    if (lie_in_cursor) {
      put_string(lie_path.size(), lie_path);
      put_string(static_cast<std::size_t>(tag), lie_text);
    } else {
      put_string(static_cast<std::size_t>(tag), lie_path);
      if (list) put_string(0, "");
    }
    if (get) {
      put_u64_le(&out[n], rng_.next() | 0x0101'0101'0101'0101ULL);
      n += 8;
      const auto block = static_cast<std::uint32_t>(rng_.next() | 0x0101'0101U);
      for (int i = 0; i < 4; ++i) out[n++] = std::byte((block >> (8 * i)) & 0xff);
    }
    return {seal(out, n), errc::malformed, errc::malformed};
  }

  built bad_checksum(std::span<std::byte> out) {
    const auto n = encode_valid(out);
    // From byte 6 on: a changed version byte would make it wrong_version, and a type changed to
    // data_reply skips the trailing checksum, which only data replies lack.
    out[between(6, n - 1)] ^= std::byte(between(1, 255));
    return {n, errc::corrupt};
  }

  built reply_typed(std::span<std::byte> out) {
    protocol::file_version v{rng_.next(), rng_.next(), 0, 0, 0};
    protocol::reply r;
    switch (below(5)) {
      case 0:
        r = protocol::error_reply{static_cast<errc>(between(1, 12)),
                                  name(between(0, protocol::max_message))};
        break;
      case 1:
        v.size = rng_.next();
        r = protocol::stat_reply{
            protocol::entry_type::file,
            v.size,
            0,
            0644,
            v,
            static_cast<std::uint32_t>(between(protocol::min_block_size, protocol::max_block_size)),
            true,
            {rng_.next(), rng_.next()}};
        break;
      case 2: {
        protocol::list_reply l;
        for (auto i = below(20); i > 0; --i)
          l.entries.push_back(
              {"n" + name(between(0, 40)), protocol::entry_type::file, rng_.next(), 0});
        for (auto& e : l.entries) std::replace(e.name.begin(), e.name.end(), '/', '_');
        r = std::move(l);
        break;
      }
      case 3: {
        // Mostly small enough to be decoded, sometimes up to the largest block.
        const auto len = static_cast<std::uint32_t>(
            below(4) == 0 ? between(0, protocol::max_block_size) : between(0, 4000));
        v.size = len + below(1 << 30);
        const auto offset = v.size - len;
        r = protocol::data_reply{offset, true, v, &pool_[below(pool_size)], len};
        break;
      }
      default: {  // a reply-range type no version defines, with a body and a matching checksum
        std::uint8_t type = 0;
        do type = static_cast<std::uint8_t>(between(0x84, 0xff));
        while (type == static_cast<std::uint8_t>(msg_type::error_reply));
        header(out.data(), protocol::version, type, rng_.next());
        const auto body = static_cast<std::size_t>(between(1, 1200));
        fill(&out[protocol::header_size], body);
        out[protocol::header_size] = std::byte{1};
        return {seal(out, protocol::header_size + body), errc::malformed};
      }
    }
    auto n = ferry::codec::encode_reply(out, rng_.next(), r);
    if (!n) throw std::logic_error{"a valid reply did not encode"};
    return {*n, errc::malformed};
  }

  built wrong_version(std::uint64_t index, std::span<std::byte> out) {
    std::uint8_t version = 0;
    do version = static_cast<std::uint8_t>(below(256));
    while (version == protocol::version);
    const auto type = static_cast<std::uint8_t>(below(256));
    header(out.data(), version, type, reply_id_tag | index);
    // One in eight is also too large, which the decoder sees first.
    const auto n = static_cast<std::size_t>(
        below(8) == 0 ? between(protocol::max_request_size + 1, protocol::max_datagram)
                      : protocol::header_size + below(1500));
    fill(&out[protocol::header_size], n - protocol::header_size);
    if (n > protocol::max_request_size) return {n, errc::malformed};
    // The server tells a requester of another version which version it speaks.
    return {n, errc::unsupported_version,
            protocol::is_request_type(type) ? errc::unsupported_version : errc::ok};
  }

  ferry::impair::xoshiro256ss rng_;
  std::vector<std::byte> pool_;
};

// What was sent, and what the server must have made of it.
struct tally {
  std::array<std::uint64_t, kind_names.size()> sent_by_kind{};
  std::uint64_t sent = 0;
  std::uint64_t bytes = 0;
  std::uint64_t expect_malformed = 0;
  std::uint64_t expect_corrupt = 0;
  std::uint64_t expect_truncated = 0;  // longer than any request: cut short on receipt
  std::uint64_t expect_refused_malformed = 0;
  std::uint64_t expect_refused_version = 0;
  std::uint64_t verify_mismatches = 0;
  std::uint64_t send_retries = 0;
  std::uint64_t replies = 0;  // error replies that answer a datagram expected to draw one
  std::uint64_t replies_unexpected = 0;  // anything else that came back
};

// Reads every reply waiting on `fd` without blocking and matches it to the datagram it answers.
// `expected_reply[i]` is the code datagram i should draw, or ok; a matched entry is cleared, so a
// second reply to the same datagram counts as unexpected.
void drain_replies(int fd, std::vector<std::uint8_t>& expected_reply, tally& t) {
  static std::array<std::byte, protocol::max_datagram> buf;
  for (;;) {
    const auto n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) return;  // EAGAIN, or an error the next send reports
    auto r = ferry::codec::decode_reply({buf.data(), static_cast<std::size_t>(n)});
    const auto* e = r ? std::get_if<protocol::error_reply>(&r->body) : nullptr;
    const auto id = r ? r->hdr.request_id : 0;
    const auto index = id & ~reply_id_tag;
    if (e != nullptr && (id & reply_id_tag) == reply_id_tag && index < expected_reply.size() &&
        expected_reply[index] == static_cast<std::uint8_t>(e->code)) {
      expected_reply[index] = 0;
      ++t.replies;
    } else {
      ++t.replies_unexpected;
    }
  }
}

// A UDP socket bound to `source` and connected to `target`: a connected socket hears only the
// server, and a send reports ECONNREFUSED once the server is gone.
int open_socket(const ferry::endpoint& source, const ferry::endpoint& target) {
  const int fd = ::socket(target.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error{fmt::format("socket: {}", std::strerror(errno))};
  // Room for the error replies between two drains; as root the FORCE variant passes rmem_max.
  const int want = 4 << 20;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
  if (::bind(fd, source.addr(), source.length) != 0)
    throw std::runtime_error{
        fmt::format("cannot bind {}: {}", ferry::to_string(source), std::strerror(errno))};
  if (::connect(fd, target.addr(), target.length) != 0)
    throw std::runtime_error{
        fmt::format("cannot connect to {}: {}", ferry::to_string(target), std::strerror(errno))};
  return fd;
}

// Thrown for a bad command line, which main() reports with exit status 2.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

ferry::endpoint loopback(const std::string& option, const ferry::host_port& hp) {
  std::string why;
  auto ep = ferry::resolve(hp, why);
  if (!ep) throw usage_error{fmt::format("{}: {}", option, why)};
  if (!ep->is_loopback())
    throw usage_error{
        fmt::format("{}: {} is not a loopback address; ferry_flood floods only "
                    "this machine",
                    option, hp.host)};
  return *ep;
}

int run(const options& opt) {
  std::string why;
  auto target_hp = ferry::parse_host_port(opt.target, why);
  if (!target_hp) throw usage_error{fmt::format("ADDR:PORT: {}", why)};
  const auto target = loopback("ADDR:PORT", *target_hp);
  const auto source_host = !opt.source.empty()           ? opt.source
                           : target.family() == AF_INET6 ? "::1"
                                                         : "127.0.0.1";
  const auto source = loopback("--source", ferry::host_port{source_host, 0});
  if (source.family() != target.family())
    throw usage_error{"--source and ADDR:PORT must be of the same address family"};
  const int fd = open_socket(source, target);

  generator gen{opt.seed};
  tally t;
  std::vector<std::uint8_t> expected_reply(static_cast<std::size_t>(opt.count), 0);
  std::vector<std::vector<std::byte>> slots(batch_size,
                                            std::vector<std::byte>(protocol::max_datagram));
  std::array<iovec, batch_size> iov{};
  std::array<mmsghdr, batch_size> msgs{};
  std::array<built, batch_size> info{};
  std::array<kind, batch_size> kinds{};
  // Small batches at low rates, so that --rate paces datagrams rather than bursts.
  const std::size_t batch =
      opt.rate > 0
          ? std::clamp<std::size_t>(static_cast<std::size_t>(opt.rate / 1000), 1, batch_size)
          : batch_size;
  bool server_gone = false;
  const auto started = clock_type::now();
  auto last_send = started;

  for (std::uint64_t next = 0; next < opt.count && !server_gone;) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(batch, opt.count - next));
    for (std::size_t i = 0; i < n; ++i) {
      kinds[i] = gen.pick();
      info[i] = gen.make(kinds[i], next + i, slots[i]);
      const auto got = ferry::codec::decode_request({slots[i].data(), info[i].size});
      const auto got_code = got ? errc::ok : got.error();
      if (got_code != info[i].decoded && t.verify_mismatches++ == 0)
        fmt::print(stderr,
                   "ferry_flood: datagram {} ({}, {} bytes): the decoder says {}, expected {}\n",
                   next + i, kind_names[static_cast<std::size_t>(kinds[i])], info[i].size,
                   protocol::code_name(got_code), protocol::code_name(info[i].decoded));
      iov[i] = {slots[i].data(), info[i].size};
      msgs[i] = {};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    if (opt.rate > 0) {
      std::this_thread::sleep_until(
          started + std::chrono::duration<double>(static_cast<double>(next) / opt.rate));
    }
    for (std::size_t done = 0; done < n;) {
      const int rc = ::sendmmsg(fd, &msgs[done], static_cast<unsigned>(n - done), 0);
      if (rc < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == ENOBUFS) {
          ++t.send_retries;
          pollfd p{fd, POLLOUT, 0};
          ::poll(&p, 1, 10);
          continue;
        }
        if (errno == ECONNREFUSED) {
          fmt::print(stderr, "ferry_flood: the server is gone (ECONNREFUSED) after {} datagrams\n",
                     t.sent);
          server_gone = true;
          break;
        }
        throw std::runtime_error{fmt::format("sendmmsg: {}", std::strerror(errno))};
      }
      for (std::size_t i = done; i < done + static_cast<std::size_t>(rc); ++i) {
        const auto& b = info[i];
        ++t.sent;
        ++t.sent_by_kind[static_cast<std::size_t>(kinds[i])];
        t.bytes += b.size;
        // ferryd receives into slots of max_request_size bytes, so it never decodes a longer
        // datagram: it counts it as truncated.
        if (b.size > protocol::max_request_size)
          ++t.expect_truncated;
        else if (b.decoded == errc::corrupt)
          ++t.expect_corrupt;
        else
          ++t.expect_malformed;
        if (b.reply == errc::malformed) ++t.expect_refused_malformed;
        if (b.reply == errc::unsupported_version) ++t.expect_refused_version;
        expected_reply[next + i] = static_cast<std::uint8_t>(b.reply);
      }
      done += static_cast<std::size_t>(rc);
    }
    next += n;
    last_send = clock_type::now();
    drain_replies(fd, expected_reply, t);
  }

  // Replies still on their way: wait until none has come for a while.
  const auto linger_until = clock_type::now() + std::chrono::seconds{2};
  while (clock_type::now() < linger_until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) break;
    drain_replies(fd, expected_reply, t);
  }
  ::close(fd);

  const double seconds = std::chrono::duration<double>(last_send - started).count();
  fmt::print("sent={}\nbytes={}\nseconds={:.3f}\nper_second={:.0f}\n", t.sent, t.bytes, seconds,
             seconds > 0 ? static_cast<double>(t.sent) / seconds : 0.0);
  fmt::print("expect_drop_malformed={}\nexpect_drop_corrupt={}\nexpect_drop_truncated={}\n",
             t.expect_malformed, t.expect_corrupt, t.expect_truncated);
  fmt::print("expect_refused_malformed={}\nexpect_refused_unsupported_version={}\n",
             t.expect_refused_malformed, t.expect_refused_version);
  fmt::print("replies={}\nreplies_unexpected={}\n", t.replies, t.replies_unexpected);
  fmt::print("send_retries={}\nverify_mismatches={}\n", t.send_retries, t.verify_mismatches);
  if (opt.stats)
    for (std::size_t k = 0; k < kind_names.size(); ++k)
      fmt::print("sent_{}={}\n", kind_names[k], t.sent_by_kind[k]);
  return server_gone || t.verify_mismatches > 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Floods a ferry server on this machine with garbage: random bytes, truncated, oversized "
      "and reply-typed datagrams, bad checksums, wrong versions, and length tags that lie under "
      "a matching checksum, in fixed proportions chosen by --seed. Prints key=value lines: how "
      "many datagrams it sent, and how many the server must count as malformed or corrupt and "
      "answer with an error.",
      "ferry_flood"};
  options opt;
  app.add_option("target", opt.target, "The server, e.g. 127.0.0.1:7070 (loopback only)")
      ->required()
      ->type_name("ADDR:PORT");
  app.add_option("--count", opt.count, "Datagrams to send")
      ->check(CLI::Range(std::uint64_t{1}, max_count))
      ->capture_default_str();
  app.add_option("--seed", opt.seed, "Seed of the mix; the same seed sends the same datagrams")
      ->capture_default_str();
  app.add_option("--source", opt.source,
                 "Loopback address to send from, e.g. 127.0.0.2 (default: 127.0.0.1, or ::1 for "
                 "an IPv6 ADDR)");
  app.add_option("--rate", opt.rate, "Datagrams per second; 0 sends as fast as it can")
      ->check(CLI::Range(0.0, 1e9))
      ->capture_default_str();
  app.add_flag("--stats", opt.stats, "Also print how many of each kind were sent");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    return run(opt);
  } catch (const usage_error& e) {
    fmt::print(stderr, "ferry_flood: error: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "ferry_flood: {}\n", e.what());
    return 1;
  }
}
