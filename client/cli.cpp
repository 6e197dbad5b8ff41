#include "client/cli.hpp"

#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <string>

#include "client/commands.hpp"
#include "client/dnssd.hpp"
#include "client/errors.hpp"
#include "client/keying.hpp"
#include "client/sync.hpp"
#include "common/log.hpp"
#include "common/version.hpp"

namespace ferry::client {
namespace {

constexpr const char* exit_codes_text =
    "Exit codes:\n"
    "  0  success\n"
    "  1  internal error\n"
    "  2  usage error\n"
    "  3  refused by the server (not found, not a regular file, outside the root, ...)\n"
    "  4  network: no answer before the timeout, a closed port, or no such address\n"
    "  5  integrity: digest mismatch, or the file kept changing during the transfer\n"
    "  6  local I/O: cannot write the output (disk full, permission, ...)\n"
    "  7  authentication: the server needs a key (--key-file), has none, or encrypts\n"
    "  130  interrupted by SIGINT or SIGTERM; rerun the same command to resume\n"
    "Environment:\n"
    "  FERRY_DNS_SERVER  DNS servers to ask instead of /etc/resolv.conf's: IP[:PORT],...\n"
    "  DBUS_SYSTEM_BUS_ADDRESS  the D-Bus on which discover and dnssd+NAME reach avahi-daemon\n"
    "  FERRY_KEY_FILE    the pre-shared key file, when --key-file is not given\n";

void add_common(CLI::App& cmd, command_options& o, bool path_required,
                const char* path_name = "PATH",
                const char* path_help = "Path under the served directory",
                std::vector<std::string>* paths = nullptr) {
  cmd.add_option("ADDR", o.address,
                 "Server address: HOST[:PORT] or [IPV6]:PORT (port 7070 by default), "
                 "srv+NAME for the servers in NAME's _ferry._udp SRV records, or dnssd+NAME for "
                 "the server 'ferry discover' lists as NAME")
      ->required();
  auto* p = paths != nullptr ? cmd.add_option(path_name, *paths, path_help)
                             : cmd.add_option(path_name, o.path, path_help);
  if (path_required) p->required();
  cmd.add_option("--timeout", o.timeout_s, "Give up after this many seconds without an answer")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](const std::string& text) -> std::string {
            // CLI11's PositiveNumber prints its range as 300 digits of DBL_MAX.
            double v = 0;
            std::size_t used = 0;
            try {
              v = std::stod(text, &used);
            } catch (const std::exception&) {
              used = 0;
            }
            if (used != text.size() || !(v > 0 && v <= 86'400))
              return "'" + text +
                     "' is not a number of seconds above 0 and at most 86400 "
                     "(such as 10 or 2.5)";
            return {};
          },
          "SECONDS"));
  cmd.add_flag("--json", o.json, "Print JSON");
  cmd.add_option("--key-file", o.key_file,
                 "The server's pre-shared key (ferryd --key-file); default: $FERRY_KEY_FILE")
      ->type_name("FILE");
  cmd.add_flag("--encrypt", o.encrypt, "Encrypt every datagram too, as ferryd --encrypt wants");
  auto* v = cmd.add_flag("-v,--verbose", o.verbose, "Say what is going on, on stderr");
  cmd.add_flag("-q,--quiet", o.quiet, "Print only errors: no progress bar, no warnings")
      ->excludes(v);
}

void add_block_size(CLI::App& cmd, std::uint32_t& block_size) {
  cmd.add_option("--block-size", block_size, "Bytes per block (default: largest unfragmented)")
      ->check(CLI::Range(1u, protocol::max_block_size));
}

void add_retry(CLI::App& cmd, int& retries) {
  cmd.add_option("--retry", retries,
                 "Run again up to N times after a network failure (exit 4), waiting 1, 2, 4 ... "
                 "60 s between; a get resumes")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
}

// -q: errors only; default: warnings and errors; -v: everything. And the key, if any.
void apply_common(const command_options& o) {
  log::set_level(o.quiet ? log::level::error : o.verbose ? log::level::debug : log::level::warn);
  use_key_file(o.key_file, o.encrypt);
}

}  // namespace

int main(int argc, char** argv) {
  log::set_program("ferry");
  CLI::App app{"ferry: list and fetch files from a ferryd server over UDP"};
  app.require_subcommand(1);
  app.set_version_flag("--version", version_line("ferry"), "Print the version and exit");
  app.footer(
      std::string{
          "Examples:\n"
          "  ferry ls 127.0.0.1:7070                      names in the served directory\n"
          "  ferry ls 127.0.0.1:7070 sub/dir -l           long form: type, size, mtime, name\n"
          "  ferry stat 127.0.0.1:7070 sub/file.iso       size, mtime, digest\n"
          "  ferry get 127.0.0.1:7070 sub/file.iso        fetches ./file.iso block by block\n"
          "  ferry sync 127.0.0.1:7070 . mirror/          mirrors the whole tree into mirror/\n"
          "  ferry discover                               servers announced on the LAN\n"
          "Run 'ferry COMMAND --help' for a command's options.\n\n"} +
      exit_codes_text);

  command_options ls_o, stat_o, get_o, sync_o;
  bool long_form = false;
  get_options g;
  std::string out_path;
  sync_options so;

  auto* ls = app.add_subcommand("ls", "List a directory on the server");
  add_common(*ls, ls_o, false);
  ls->add_flag("-l,--long", long_form, "Long form: type, size, mtime, name");
  ls->add_option("--max-entries", ls_o.max_entries,
                 "Stop with an error after this many names (a server could list for ever)")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40));
  ls->footer(
      "Examples:\n"
      "  ferry ls 127.0.0.1:7070\n"
      "  ferry ls 127.0.0.1:7070 sub/dir -l\n"
      "  ferry ls [::1]:7070 --json | jq '.[].name'\n");

  auto* st = app.add_subcommand("stat", "Show a remote file's type, size, mtime and digest");
  add_common(*st, stat_o, true);
  add_retry(*st, stat_o.retries);
  st->footer(
      "Examples:\n"
      "  ferry stat 127.0.0.1:7070 sub/file.iso\n"
      "  ferry stat 127.0.0.1:7070 sub/file.iso --json\n");

  auto* get = app.add_subcommand("get", "Fetch a file block by block, resuming a partial one");
  std::vector<std::string> get_paths;
  add_common(*get, get_o, true, "PATH",
             "Path under the served directory; several go into the directory -o names", &get_paths);
  get->add_option("-o,--output", out_path, "Write here (a directory keeps the remote name)");
  get->add_option("--mirror", g.mirrors,
                  "Another server with the same file, used at the same time (repeatable)")
      ->type_name("ADDR");
  get->add_flag("--no-clobber", g.no_clobber,
                "Leave an existing output alone: fetch nothing, exit 0");
  get->add_flag("!--no-mtime", g.keep_mtime,
                "Leave the output's mtime at now (by default it gets the server's)");
  get->add_flag("!--no-mode", g.keep_mode,
                "Create the output 0644 less the umask (by default it gets the server's "
                "permission bits, exactly, less setuid, setgid and sticky)");
  add_block_size(*get, g.block_size);
  add_retry(*get, get_o.retries);
  get->footer(
      "Examples:\n"
      "  ferry get 127.0.0.1:7070 sub/file.iso              writes ./file.iso\n"
      "  ferry get 127.0.0.1:7070 sub/file.iso -o /tmp/x.iso\n"
      "  ferry get 127.0.0.1:7070 -- -name-with-dash\n"
      "  ferry get host1 big.iso --mirror host2 --mirror host3   from all three at once\n"
      "  ferry get srv+files.example big.iso   from the servers of _ferry._udp.files.example\n"
      "  ferry get 127.0.0.1:7070 a.iso b/c.iso -o dl/          both into dl/, as scp does\n"
      "An interrupted get leaves OUT.part and OUT.part.state; rerun the same command to resume.\n");

  auto* sync = app.add_subcommand("sync", "Mirror a remote directory tree into a local directory");
  add_common(*sync, sync_o, true, "REMOTE_DIR",
             "Directory under the served directory; \"\" or \".\" for all of it");
  sync->add_option("LOCAL_DIR", so.local_dir, "Local directory to mirror into (created if missing)")
      ->required();
  sync->add_option("--mirror", so.mirrors, "Another server with the same tree (repeatable)");
  sync->add_flag("--delete", so.remove, "Delete local files and directories the server lacks");
  sync->add_flag("-n,--dry-run", so.dry_run, "Change nothing; print what would be done");
  sync->add_option("-j,--jobs", so.jobs, "Files transferred at once")
      ->capture_default_str()
      ->check(CLI::Range(1u, 64u));
  sync->add_flag("-c,--checksum", so.checksum,
                 "Compare every file of the same size by digest, whatever its mtime (costs a read "
                 "of both copies)");
  sync->add_flag("-l,--links", so.links,
                 "Make symlinks as symlinks (one pointing outside the sync is skipped)");
  sync->add_flag("--unsafe-links", so.unsafe_links,
                 "With --links, make even symlinks that point outside the sync");
  std::vector<std::string> excludes, includes;
  auto* exclude = sync->add_option("--exclude", excludes,
                                   "Leave out names that match PATTERN (repeatable; the first "
                                   "--exclude or --include that matches decides)")
                      ->type_name("PATTERN")
                      ->allow_extra_args(false);
  auto* include =
      sync->add_option("--include", includes, "Keep names that match PATTERN (repeatable)")
          ->type_name("PATTERN")
          ->allow_extra_args(false);
  add_block_size(*sync, so.block_size);
  add_retry(*sync, sync_o.retries);
  sync->footer(
      "Examples:\n"
      "  ferry sync 127.0.0.1:7070 . mirror/                 the whole served tree\n"
      "  ferry sync 127.0.0.1:7070 sub/dir local/ --delete   and delete what the server lacks\n"
      "  ferry sync 127.0.0.1:7070 . mirror/ --dry-run       print the changes, make none\n"
      "  ferry sync 127.0.0.1:7070 . mirror/ --exclude '*.tmp' --exclude cache/\n"
      "  ferry sync 127.0.0.1:7070 . mirror/ --include '*/' --include '*.c' --exclude '*'\n"
      "A file with the same size and mtime is taken as unchanged without reading it. One with the\n"
      "same size and another mtime is compared by digest. An interrupted sync resumes when "
      "rerun.\n"
      "Files and directories get the server's mtime and permission bits (never setuid, setgid\n"
      "or sticky). Patterns: '*' and '?' stop at '/', '**' does not; a pattern with a '/' is\n"
      "matched against the path below REMOTE_DIR, one without against the name alone, and one\n"
      "ending in '/' matches only directories.\n");

  discover_options disc;
  command_options disc_o;
  auto* discover = app.add_subcommand(
      "discover", "List the ferry servers announced on the LAN (DNS-SD, through avahi-daemon)");
  discover
      ->add_option("--timeout", disc.timeout_s,
                   "Wait at most this many seconds (less once avahi has said all it knows)")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 600.0));
  discover->add_flag("--json", disc.json, "Print JSON");
  auto* dv = discover->add_flag("-v,--verbose", disc_o.verbose, "Say what is going on, on stderr");
  discover->add_flag("-q,--quiet", disc_o.quiet, "Print only errors")->excludes(dv);
  discover->footer(
      "Examples:\n"
      "  ferry discover                     one server a line: SOURCE HOST root=ROOT ADDRESSES\n"
      "  ferry discover --json | jq -r '.[].source'\n"
      "  ferry get 'dnssd+files on nas' big.iso   fetch from a server it listed\n");

  auto* keygen =
      app.add_subcommand("keygen", "Write a new pre-shared key to FILE, for ferryd and ferry");
  std::string keygen_path;
  keygen->add_option("FILE", keygen_path, "Where to write it; never over an existing file")
      ->required();
  keygen->footer(
      "Examples:\n"
      "  ferry keygen ferry.key     64 hex digits and a newline, readable by its owner only\n"
      "Give the same file to ferryd and to every client (their key-file option), copied over\n"
      "a channel you trust (scp, a configuration manager).\n");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : static_cast<int>(exit_code::usage);
  }
  ::signal(SIGPIPE, SIG_IGN);
  try {
    if (*keygen) {
      write_new_key(keygen_path);
    } else if (*ls) {
      apply_common(ls_o);
      ls_o.terminal = ::isatty(STDOUT_FILENO) == 1;
      run_ls(ls_o, long_form, std::cout);
    } else if (*st) {
      apply_common(stat_o);
      with_retries(stat_o.retries, [&] { run_stat(stat_o, std::cout); });
    } else if (*get) {
      apply_common(get_o);
      if (!out_path.empty()) g.output = out_path;
      g.progress = ::isatty(STDERR_FILENO) == 1 && !get_o.json && !get_o.quiet;
      run_get_all(get_o, get_paths, g, std::cout);
    } else if (*discover) {
      // Only the verbosity: discover talks to avahi, never to a server, so it needs no key.
      log::set_level(disc_o.quiet     ? log::level::error
                     : disc_o.verbose ? log::level::debug
                                      : log::level::warn);
      disc.terminal = ::isatty(STDOUT_FILENO) == 1;
      run_discover(disc, std::cout);
    } else if (*sync) {
      apply_common(sync_o);
      sync_o.terminal = ::isatty(STDOUT_FILENO) == 1;
      // The rules in the order given on the command line, --exclude and --include mixed.
      std::size_t next_exclude = 0, next_include = 0;
      for (const auto* opt : sync->parse_order()) {
        if (opt == exclude) so.filter.add(false, excludes.at(next_exclude++));
        if (opt == include) so.filter.add(true, includes.at(next_include++));
      }
      if (so.unsafe_links && !so.links)
        throw failure{exit_code::usage, "--unsafe-links needs --links"};
      so.progress = ::isatty(STDERR_FILENO) == 1 && !sync_o.json && !sync_o.quiet;
      with_retries(sync_o.retries, [&] { run_sync(sync_o, so, std::cout); });
    }
    std::cout.flush();
    return 0;
  } catch (const failure& f) {
    std::cout.flush();
    log::error("{}", f.what());
    return static_cast<int>(f.code());
  } catch (const std::exception& e) {
    log::error("{}", e.what());
    return static_cast<int>(exit_code::internal);
  }
}

}  // namespace ferry::client
