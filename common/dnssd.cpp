#include "common/dnssd.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace ferry::dnssd {

namespace {

std::string lower(std::string_view s) {
  std::string out{s};
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::optional<std::uint32_t> number(std::string_view s) {
  std::uint32_t v = 0;
  const auto* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc{} || p != end) return std::nullopt;
  return v;
}

}  // namespace

std::string cut_utf8(std::string_view text, std::size_t limit) {
  if (text.size() <= limit) return std::string{text};
  std::size_t n = limit;
  // A continuation byte (10xxxxxx) would be split from its character's first byte.
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return std::string{text.substr(0, n)};
}

std::vector<std::string> make_txt(const txt_info& info) {
  return {"txtvers=" + std::to_string(info.txtvers), "proto=" + std::to_string(info.protocol),
          "root=" + cut_utf8(info.root, max_root_name)};
}

std::optional<txt_info> parse_txt(const std::vector<std::string>& strings, std::string& why) {
  std::optional<std::string> txtvers, proto, root;
  for (const auto& s : strings) {
    if (s.empty()) continue;
    const auto eq = s.find('=');
    const auto key = lower(std::string_view{s}.substr(0, eq));
    const auto value = eq == std::string::npos ? std::string{} : s.substr(eq + 1);
    auto* slot = key == "txtvers" ? &txtvers
                 : key == "proto" ? &proto
                 : key == "root"  ? &root
                                  : nullptr;
    if (slot != nullptr && !*slot) *slot = value;
  }
  if (!txtvers) {
    why = "its TXT record has no txtvers, so it is not a ferry service";
    return std::nullopt;
  }
  const auto tv = number(*txtvers);
  if (!tv || *tv != txt_version) {
    why = "its TXT record is of version '" + cut_utf8(*txtvers, 16) + "', not " +
          std::to_string(txt_version);
    return std::nullopt;
  }
  const auto pv = proto ? number(*proto) : std::nullopt;
  if (!pv) {
    why = "its TXT record has no numeric proto, so it is not a ferry service";
    return std::nullopt;
  }
  txt_info info;
  info.txtvers = *tv;
  info.protocol = *pv;
  info.root = cut_utf8(root.value_or(std::string{}), max_root_name);
  return info;
}

bool valid_instance_name(std::string_view name, std::string& why) {
  if (name.empty()) {
    why = "the service name is empty";
    return false;
  }
  if (name.size() > max_instance_name) {
    why = "a DNS-SD service name has at most 63 bytes";
    return false;
  }
  if (std::any_of(name.begin(), name.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    why = "a DNS-SD service name has no control characters";
    return false;
  }
  return true;
}

std::string default_instance_name(std::string_view root_name, std::string_view host) {
  const std::string what =
      root_name.empty() || root_name == "/" ? "ferryd" : std::string{root_name};
  return cut_utf8(what + " on " + std::string{host}, max_instance_name);
}

}  // namespace ferry::dnssd
