#include "server/cli.hpp"

#include <signal.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "common/dnssd.hpp"
#include "common/envelope.hpp"
#include "common/log.hpp"
#include "common/units.hpp"
#include "common/version.hpp"
#include "server/allow_list.hpp"
#include "server/runtime.hpp"

namespace ferry::server {

namespace {
// More loops than this would only contend for the same cores and the same thread pool.
constexpr unsigned max_workers = 256;
}  // namespace

int main(int argc, char** argv) {
  log::set_program("ferryd");
  log::set_style(log::style::key_value);
  CLI::App app{"ferryd: serve one directory over UDP to ferry clients"};
  app.set_version_flag("--version", version_line("ferryd"), "Print the version and exit");
  app.footer(
      "Examples:\n"
      "  ferryd --root ./shared-dir                 serve on 127.0.0.1:7070\n"
      "  ferryd --root /srv/files --bind :: --port 7070\n"
      "  ferryd --root . --port 0                   take a free port (see the first line)\n"
      "  ferryd --root /srv/files --stats-interval 60\n"
      "  ferryd --root /srv/files --max-rate 20M      send at most 20 MiB/s in total\n"
      "  ferryd --root /srv/files --workers 0         one loop per core, on one port\n"
      "  ferryd --root /srv/files --bind 0.0.0.0 --announce   found by 'ferry discover'\n"
      "  ferryd --root /srv/files --key-file /etc/ferry/key   only clients with the key\n"
      "  kill -USR1 $(pidof ferryd)                 print the counters now\n\n"
      "Logs go to stderr, one event a line in key=value form. SIGINT and SIGTERM stop it\n"
      "cleanly; SIGUSR1 prints its counters. The protocol is described in docs/PROTOCOL.md.\n");
  config cfg;
  std::string level = "info";
  app.add_option("--root", cfg.root, "Directory to serve (read-only)")->required();
  app.add_option("--bind", cfg.bind, "Address to listen on")->capture_default_str();
  std::vector<network> allowed;
  app.add_option_function<std::vector<std::string>>(
         "--allow",
         [&allowed](const std::vector<std::string>& texts) {
           for (const auto& text : texts) {
             std::string why;
             auto n = network::parse(text, why);
             if (!n) throw CLI::ValidationError{"--allow", why};
             allowed.push_back(*n);
           }
         },
         "Serve only clients in this network, e.g. 192.0.2.0/24 or 2001:db8::/32 (repeatable); "
         "others are answered 'permission denied'. Default: every address")
      ->type_name("CIDR")
      ->take_all()
      ->allow_extra_args(false);
  std::string key_file;
  auto* key = app.add_option("--key-file", key_file,
                             "Serve only clients with this pre-shared key (64 hex digits; make one "
                             "with 'ferry keygen FILE'): every datagram carries a MAC")
                  ->type_name("FILE");
  app.add_flag("--encrypt", cfg.encrypt,
               "With --key-file: encrypt every datagram too (XChaCha20-Poly1305)")
      ->needs(key);
  app.add_option("--port", cfg.port, "UDP port; 0 takes a free one")->capture_default_str();
  app.add_option("--workers", cfg.workers,
                 "Event loops, each on its own thread and socket, all on one port; 0: one per "
                 "core")
      ->capture_default_str()
      ->check(CLI::Range(0u, max_workers));
  app.add_flag_function(
      "--reuseport", [&cfg](std::int64_t) { cfg.share_port = port_sharing::any; },
      "Share the port with other ferryd processes started with --reuseport (SO_REUSEPORT)");
  app.add_flag("--announce", cfg.announce,
               "Announce the server on the LAN with DNS-SD (_ferry._udp, through avahi-daemon); "
               "'ferry discover' lists it");
  app.add_option_function<std::string>(
         "--announce-name",
         [&cfg](const std::string& name) {
           std::string why;
           if (!dnssd::valid_instance_name(name, why))
             throw CLI::ValidationError{"--announce-name", why};
           cfg.announce_name = name;
           cfg.announce = true;
         },
         "The DNS-SD service name (implies --announce); default: 'ROOT on HOST'")
      ->type_name("NAME");
  app.add_option("--max-block", cfg.max_block, "Largest block served, in bytes")
      ->capture_default_str()
      ->check(CLI::Range(protocol::min_block_size, protocol::max_block_size));
  app.add_option("--log-level", level, "debug, info, warn, error or off")->capture_default_str();
  app.add_option("--access-log", cfg.access_log,
                 "Append one line per finished transfer or listing to FILE; default: the log, at "
                 "info level")
      ->type_name("FILE");
  app.add_option("--stats-interval", cfg.stats_interval,
                 "Seconds between counter events on stderr; 0: only on SIGUSR1")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  auto rate_option = [&](const char* name, std::uint64_t& into, const char* what) {
    app.add_option_function<std::string>(
           name,
           [&into, name](const std::string& text) {
             auto r = parse_rate(text);
             if (!r)
               throw CLI::ValidationError{
                   name,
                   "'" + text + "' is not a rate: use bytes per second, e.g. 500K, 20M, 1.5G"};
             into = *r;
           },
           what)
        ->type_name("RATE");
  };
  rate_option("--max-rate", cfg.max_rate,
              "Bytes per second sent in total, e.g. 20M (K, M, G: powers of 1024); default: "
              "no limit");
  rate_option("--max-client-rate", cfg.max_client_rate,
              "Bytes per second sent to one client address and port; default: no limit");
  app.add_option("--max-clients-per-prefix", cfg.max_clients_per_prefix,
                 "Client addresses (address and port) kept at once from one /24 or /56; beyond, "
                 "new ones from it are not served")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, cfg.max_clients));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  log::level l{};
  if (!log::parse_level(level, l)) {
    log::write(log::level::error, "unknown --log-level; use debug, info, warn, error or off",
               {{"value", level}});
    return 2;
  }
  log::set_level(l);
  cfg.allow = allow_list{std::move(allowed)};
  if (!key_file.empty()) {
    try {
      cfg.key = envelope::key::load(key_file);
    } catch (const std::runtime_error& e) {
      log::write(log::level::error, e.what());
      return 2;
    }
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(cfg.root, ec)) {
    log::write(log::level::error, "--root is not a directory", {{"root", cfg.root}});
    return 2;
  }
  // A client that vanishes must not kill the server with SIGPIPE; UDP should not raise it,
  // but stdout may be a closed pipe.
  ::signal(SIGPIPE, SIG_IGN);
  try {
    return run_until_signalled(cfg);
  } catch (const std::exception& e) {
    log::write(log::level::error, e.what());
    return 1;
  }
}

}  // namespace ferry::server
