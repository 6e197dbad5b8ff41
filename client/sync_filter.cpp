#include "client/sync_filter.hpp"

#include <cstddef>

namespace ferry::client {

namespace {

// Matches one character class at the start of `p` (just past its '['): sets `ok` to whether `c`
// is in it and returns the length of the class text, ']' included; 0 if it never closes (then
// the '[' is an ordinary character).
std::size_t match_class(std::string_view p, char c, bool& ok) noexcept {
  std::size_t i = 0;
  bool negate = false;
  if (i < p.size() && (p[i] == '!' || p[i] == '^')) {
    negate = true;
    ++i;
  }
  bool found = false;
  bool first = true;
  for (; i < p.size(); ++i) {
    if (p[i] == ']' && !first) {
      ok = found != negate && c != '/';
      return i + 1;
    }
    first = false;
    char lo = p[i];
    if (lo == '\\' && i + 1 < p.size()) lo = p[++i];
    char hi = lo;
    if (i + 2 < p.size() && p[i + 1] == '-' && p[i + 2] != ']') {
      i += 2;
      hi = p[i];
      if (hi == '\\' && i + 1 < p.size()) hi = p[++i];
    }
    if (lo <= c && c <= hi) found = true;
  }
  return 0;
}

}  // namespace

bool glob_match(std::string_view p, std::string_view t) noexcept {
  // Iterative, with two points to return to: the last '*' (which may not take a '/') and the
  // last '**' (which may). When the '*' cannot take one more character, the '**' does, as git's
  // wildmatch does: linear in practice, and no recursion a pattern could deepen.
  struct point {
    std::size_t p = 0, t = 0;
    bool valid = false;
  };
  point single, dbl;
  std::size_t pi = 0, ti = 0;
  while (ti < t.size()) {
    if (pi < p.size() && p[pi] == '*') {
      const bool crosses = pi + 1 < p.size() && p[pi + 1] == '*';
      while (pi < p.size() && p[pi] == '*') ++pi;
      if (crosses) {
        dbl = {pi, ti, true};
        single.valid = false;
      } else {
        single = {pi, ti, true};
      }
      continue;
    }
    if (pi < p.size()) {
      const char c = t[ti];
      bool ok = false;
      std::size_t used = 1;
      if (p[pi] == '?') {
        ok = c != '/';
      } else if (p[pi] == '[') {
        used = match_class(p.substr(pi + 1), c, ok);
        if (used == 0) {
          ok = c == '[';
          used = 1;
        } else {
          ++used;
        }
      } else if (p[pi] == '\\' && pi + 1 < p.size()) {
        ok = p[pi + 1] == c;
        used = 2;
      } else {
        ok = p[pi] == c;
      }
      if (ok) {
        pi += used;
        ++ti;
        continue;
      }
    }
    if (single.valid && t[single.t] != '/') {
      ti = ++single.t;
      pi = single.p;
      continue;
    }
    single.valid = false;
    if (!dbl.valid) return false;
    ti = ++dbl.t;
    pi = dbl.p;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

void path_filter::add(bool include, std::string pattern) {
  rule r;
  r.include = include;
  if (pattern.size() > 1 && pattern.back() == '/') {
    r.dir_only = true;
    pattern.pop_back();
  }
  r.anchored = pattern.find('/') != std::string::npos;
  if (!pattern.empty() && pattern.front() == '/') pattern.erase(0, 1);
  r.pattern = std::move(pattern);
  rules_.push_back(std::move(r));
}

bool path_filter::excluded(std::string_view rel, bool is_dir) const noexcept {
  const auto slash = rel.rfind('/');
  const auto name = slash == std::string_view::npos ? rel : rel.substr(slash + 1);
  for (const auto& r : rules_) {
    if (r.dir_only && !is_dir) continue;
    if (glob_match(r.pattern, r.anchored ? rel : name)) return !r.include;
  }
  return false;
}

bool link_stays_inside(std::string_view link_rel, std::string_view target) noexcept {
  if (target.empty() || target.front() == '/') return false;
  // How deep the link's directory lies below the root.
  long depth = 0;
  for (const char c : link_rel)
    if (c == '/') ++depth;
  bool descended = false;
  while (!target.empty()) {
    const auto slash = target.find('/');
    const auto part = target.substr(0, slash);
    target = slash == std::string_view::npos ? std::string_view{} : target.substr(slash + 1);
    if (part.empty() || part == ".") continue;
    if (part != "..") {
      descended = true;
      ++depth;
      continue;
    }
    // A ".." after a name climbs out of whatever that name is, and a name may be another
    // link: "y/y/y/.." with y -> "." leaves the root though its text does not. Only leading
    // ".." climb through directories the sync itself made.
    if (descended || --depth < 0) return false;
  }
  return true;
}

}  // namespace ferry::client
