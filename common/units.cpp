#include "common/units.hpp"

#include <cctype>
#include <charconv>
#include <cmath>

namespace ferry {

std::optional<std::uint64_t> parse_rate(std::string_view text) noexcept {
  if (text.ends_with("/s")) text.remove_suffix(2);
  if (text.ends_with('B') || text.ends_with('b')) text.remove_suffix(1);
  double scale = 1;
  if (!text.empty()) {
    switch (std::toupper(static_cast<unsigned char>(text.back()))) {
      case 'K':
        scale = 1024.0;
        break;
      case 'M':
        scale = 1024.0 * 1024;
        break;
      case 'G':
        scale = 1024.0 * 1024 * 1024;
        break;
      default:
        break;
    }
    if (scale != 1) text.remove_suffix(1);
  }
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text.front()))) return std::nullopt;
  double value = 0;
  const auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::fixed);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  const double bytes = std::floor(value * scale);
  if (!(bytes >= 1) || bytes > 4.6e18) return std::nullopt;
  return static_cast<std::uint64_t>(bytes);
}

}  // namespace ferry
