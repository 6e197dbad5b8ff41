#pragma once

// ferry sync's path rules: which names --exclude and --include take out of a sync, and which
// symlink targets stay inside it.

#include <string>
#include <string_view>
#include <vector>

namespace ferry::client {

// Matches `text` against the glob `pattern`: `*` is any run of characters but `/`, `**` any run
// including `/`, `?` any one character but `/`, `[...]` one character of a class (`[!...]` or
// `[^...]` negated, `a-z` ranges); `\` takes the next character as it is. Everything else
// matches itself.
[[nodiscard]] bool glob_match(std::string_view pattern, std::string_view text) noexcept;

// --exclude and --include, in the order given: the first rule that matches a name decides it,
// and a name no rule matches is included, as rsync's filter rules do.
//
// A pattern with a `/` in it (a trailing one aside) is matched against the whole path below
// the sync's root (`dir/sub/name`; a leading `/` only anchors it); one without is matched
// against the last component alone, at any depth. A pattern that ends in `/` matches only
// directories. An excluded directory is not descended into, so nothing below it is synced,
// whatever later rules say; and --delete deletes no excluded name.
class path_filter {
 public:
  void add(bool include, std::string pattern);
  [[nodiscard]] bool empty() const noexcept { return rules_.empty(); }
  // Whether `rel`, the '/'-separated path below the root, is excluded.
  [[nodiscard]] bool excluded(std::string_view rel, bool is_dir) const noexcept;

 private:
  struct rule {
    bool include = false;
    bool dir_only = false;  // the pattern ended in '/'
    bool anchored = false;  // the pattern has a '/': it matches the whole path
    std::string pattern;
  };
  std::vector<rule> rules_;
};

// Whether a symlink at `link_rel` (its path below the sync's root) with `target` points inside
// the root, judged by the text alone as rsync's --safe-links does (not absolute, not empty, no
// `..` that climbs above the root), and stricter: every `..` comes before the first name, since
// a `..` after a name that is itself a link can climb anywhere.
[[nodiscard]] bool link_stays_inside(std::string_view link_rel, std::string_view target) noexcept;

}  // namespace ferry::client
