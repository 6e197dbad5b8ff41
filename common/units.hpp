#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace ferry {

// Parses a rate in bytes per second as rsync and curl write it: a whole or decimal number with
// an optional suffix K, M or G (powers of 1024, either case, an optional trailing "B" or "/s").
// "20M" is 20 MiB/s. Returns nullopt for anything else, for zero and for values over 4.6e18 (just
// under 2^62).
[[nodiscard]] std::optional<std::uint64_t> parse_rate(std::string_view text) noexcept;

}  // namespace ferry
