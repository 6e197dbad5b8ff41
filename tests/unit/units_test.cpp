// parse_rate, which reads ferryd's --max-rate and --max-client-rate: the suffixes it takes, how
// it rounds, and what it refuses, at the edges of the number too.

#include "common/units.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>

using ferry::parse_rate;

TEST_SUITE_BEGIN("units");

TEST_CASE("parse_rate reads bytes per second with K, M and G as powers of 1024") {
  CHECK(parse_rate("1") == 1u);
  CHECK(parse_rate("1000") == 1000u);
  CHECK(parse_rate("500K") == 500u * 1024);
  CHECK(parse_rate("500k") == 500u * 1024);
  CHECK(parse_rate("20M") == 20u << 20);
  CHECK(parse_rate("20m") == 20u << 20);
  CHECK(parse_rate("3G") == std::uint64_t{3} << 30);
  CHECK(parse_rate("3g") == std::uint64_t{3} << 30);
  CHECK(parse_rate("007K") == 7u * 1024);
}

TEST_CASE("parse_rate takes a trailing B and /s, in that order") {
  CHECK(parse_rate("16MB") == 16u << 20);
  CHECK(parse_rate("16Mb") == 16u << 20);  // b is bytes too, not bits
  CHECK(parse_rate("2M/s") == 2u << 20);
  CHECK(parse_rate("2MB/s") == 2u << 20);
  CHECK(parse_rate("100B") == 100u);
  CHECK(parse_rate("100/s") == 100u);
  CHECK(parse_rate("100B/s") == 100u);
  for (const char* bad : {"2M/sB", "2MBB", "2BM", "2M/S", "2Ms", "2s", "2 M", "2M/s/s"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_rate(bad).has_value());
  }
}

TEST_CASE("parse_rate takes decimals and rounds the bytes down") {
  CHECK(parse_rate("1.5G") == std::uint64_t{3} << 29);
  CHECK(parse_rate("1.5M") == 1'572'864u);
  CHECK(parse_rate("0.5K") == 512u);
  CHECK(parse_rate("1.0009765625K") == 1025u);  // exactly 1025 bytes
  CHECK(parse_rate("1.9") == 1u);
  CHECK(parse_rate("0.001K") == 1u);       // 1.024 bytes
  CHECK(parse_rate("10.99K") == 11'253u);  // 11253.76 bytes
}

TEST_CASE("parse_rate refuses zero, and anything that rounds down to it") {
  for (const char* bad : {"0", "0K", "0.0M", "0.1", "0.9", "0.0009K", "000"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_rate(bad).has_value());
  }
}

TEST_CASE("parse_rate refuses what is not a plain number with a suffix") {
  for (const char* bad : {"",      "K",    "M",     "B",   "/s",  "KB/s", "-5M",     "+5M", ".5K",
                          " 20M",  "20M ", "20X",   "20T", "2KK", "M20",  "1e3",     "1E3", "0x10",
                          "1.5.2", "1,5",  "1'000", "nan", "inf", "NaN",  "infinity"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_rate(bad).has_value());
  }
}

TEST_CASE("parse_rate refuses rates over 4.6e18 bytes per second, without overflowing") {
  // 4284000000 << 30 is just under the limit; exact, as the scale is a power of two.
  CHECK(parse_rate("4284000000G") == std::uint64_t{4'284'000'000} << 30);
  CHECK(parse_rate("4600000000000000000") == 4'600'000'000'000'000'000u);
  CHECK_FALSE(parse_rate("4285000000G").has_value());
  CHECK_FALSE(parse_rate("4600000000000001000").has_value());
  // Past what an uint64_t holds, where a conversion would wrap or be undefined.
  CHECK_FALSE(parse_rate("18446744073709551616").has_value());
  CHECK_FALSE(parse_rate("99999999999G").has_value());
  // Past what a double holds: from_chars reports the range error.
  CHECK_FALSE(parse_rate("1" + std::string(400, '0')).has_value());
  // Below what a double holds.
  CHECK_FALSE(parse_rate("0." + std::string(400, '0') + "1G").has_value());
}

TEST_SUITE_END();
