#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "client/connection.hpp"
#include "client/request_engine.hpp"
#include "client/task.hpp"

namespace ferry::client {

// Names a listing command takes from a server before it stops: a server could list for ever.
inline constexpr std::uint64_t default_max_entries = 1'000'000;

struct command_options {
  std::string address;  // "HOST[:PORT]" or "[V6]:PORT"
  std::string path;     // remote path, "" for the root
  bool json = false;
  double timeout_s = 10;
  bool verbose = false;   // say what is going on, on stderr
  bool quiet = false;     // errors only: no progress bar, no warnings
  bool terminal = false;  // the output is a terminal: names are quoted as GNU ls does
  std::uint64_t max_entries = default_max_entries;  // ls: names printed at most
  int retries = 0;         // stat, get, sync: runs again after a network failure (--retry)
  std::string key_file{};  // the pre-shared key (--key-file); FERRY_KEY_FILE if empty
  bool encrypt = false;    // --encrypt: sealed requests are encrypted too
};

// Each command prints its result to `out` and returns normally, or throws failure.
void run_ls(const command_options& o, bool long_form, std::ostream& out);
void run_stat(const command_options& o, std::ostream& out);

// Lists the directory `path` page by page, calling `each` for every entry in name order.
// Returns false if `path` is not a directory. Throws failure on refusal, timeout, or a listing
// out of order.
task<bool> list_dir(request_engine& engine, connection& conn, std::string path,
                    clock::duration timeout, std::function<void(const protocol::list_entry&)> each);
// The same on a loop of its own: for a caller that runs no loop.
bool list_dir(connection& conn, const std::string& path, clock::duration timeout,
              const std::function<void(const protocol::list_entry&)>& each);

struct get_options {
  std::optional<std::string> output;  // -o
  std::uint32_t block_size = 0;
  bool progress = false;             // draw a progress bar on stderr
  std::vector<std::string> mirrors;  // more servers with the same tree, used at once
  bool no_clobber = false;           // leave an existing output alone
  bool keep_mtime = true;            // give the output the server's mtime
  bool keep_mode = true;             // and its permission bits (less setuid, setgid, sticky)
};
void run_get(const command_options& o, const get_options& g, std::ostream& out);
// Fetches each of `paths` as run_get does; several go into the directory g.output names (the
// current one by default), each under its own name, and one that fails does not stop the
// others (as scp). Throws the first failure, after all have been tried.
void run_get_all(const command_options& o, const std::vector<std::string>& paths,
                 const get_options& g, std::ostream& out);

// Runs `command`, and again after a network failure (no answer, only "busy", a closed port,
// a name that does not resolve), at most `retries` times, waiting 1, 2, 4 ... 60 s between,
// as curl --retry does. Other failures are not transient and end it at once.
void with_retries(int retries, const std::function<void()>& command);

// The local name `get` writes to: -o if given (inside it, if it is a directory), otherwise
// the last component of the remote path in the current directory. Throws failure(usage).
[[nodiscard]] std::string output_path_for(const std::string& remote,
                                          const std::optional<std::string>& o);

// "2026-11-22 07:57" in local time.
[[nodiscard]] std::string format_mtime(std::int64_t mtime_ns);

}  // namespace ferry::client
