#include "client/commands.hpp"

#include <fmt/format.h>
#include <fmt/ostream.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <thread>

#include "client/errors.hpp"
#include "client/fetch.hpp"
#include "client/progress.hpp"
#include "client/server_address.hpp"
#include "client/terminal_text.hpp"
#include "common/digest.hpp"
#include "common/log.hpp"

namespace ferry::client {

using protocol::errc;
using json = nlohmann::json;

namespace {

clock::duration timeout_of(const command_options& o) {
  return std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(o.timeout_s));
}

// File names may hold any byte; invalid UTF-8 is replaced in JSON rather than failing, and the
// exact bytes are given too as "name_hex" so a script loses nothing.
std::string json_text(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void print_json(std::ostream& out, const json& j) { out << json_text(j) << '\n'; }

bool valid_utf8(const std::string& s) {
  try {
    (void)json(s).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

std::string hex(const std::string& s) {
  std::string h;
  for (const char c : s) h += fmt::format("{:02x}", static_cast<unsigned char>(c));
  return h;
}

json entry_json(const protocol::list_entry& e) {
  json j{{"name", e.name},         {"type", std::string{protocol::to_string(e.type)}},
         {"size", e.size},         {"mtime", e.mtime_ns / 1'000'000'000},
         {"mtime_ns", e.mtime_ns}, {"mode", fmt::format("{:04o}", e.mode)}};
  if (e.type == protocol::entry_type::symlink) j["target"] = e.target;
  if (!valid_utf8(e.name)) j["name_hex"] = hex(e.name);
  return j;
}

char type_letter(protocol::entry_type t) {
  switch (t) {
    case protocol::entry_type::file:
      return '-';
    case protocol::entry_type::dir:
      return 'd';
    case protocol::entry_type::symlink:
      return 'l';
    case protocol::entry_type::other:
      return '?';
  }
  return '?';
}

template <typename T>
T expect_reply(protocol::reply r, const std::string& path) {
  if (auto* e = std::get_if<protocol::error_reply>(&r)) throw_refused(path, *e);
  auto* v = std::get_if<T>(&r);
  if (v == nullptr) throw failure{exit_code::internal, "the server sent an unexpected reply"};
  return std::move(*v);
}

}  // namespace

std::string format_mtime(std::int64_t mtime_ns) {
  const std::time_t t = static_cast<std::time_t>(mtime_ns / 1'000'000'000);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

task<bool> list_dir(request_engine& engine, connection& conn, std::string path,
                    clock::duration timeout,
                    std::function<void(const protocol::list_entry&)> each) {
  std::string cursor;
  for (;;) {
    auto asking = engine.ask(conn, protocol::list_request{path, cursor}, {timeout});
    auto reply = co_await asking;
    if (auto* e = std::get_if<protocol::error_reply>(&reply); e && e->code == errc::not_directory)
      co_return false;
    auto page = expect_reply<protocol::list_reply>(std::move(reply), path);
    for (const auto& e : page.entries) {
      // Names must rise strictly, or a broken server could keep us paging forever.
      if (!cursor.empty() && e.name <= cursor)
        throw failure{exit_code::internal, "the server sent a listing out of order"};
      each(e);
      cursor = e.name;
    }
    if (page.end) co_return true;
    if (page.entries.empty())
      throw failure{exit_code::internal, "the server sent an empty listing page"};
  }
}

bool list_dir(connection& conn, const std::string& path, clock::duration timeout,
              const std::function<void(const protocol::list_entry&)>& each) {
  request_engine engine{conn.loop()};
  return list_dir(engine, conn, path, timeout, each).run_on(conn.loop());
}

namespace {

task<void> list_or_stat(request_engine& engine, connection& conn, const command_options& o,
                        bool long_form, std::ostream& out) {
  const auto timeout = timeout_of(o);
  // Each name is printed as it comes, JSON too (as one array, written piece by piece), so
  // memory does not grow with the listing; the cap ends a listing that would not end.
  std::uint64_t printed = 0;
  auto emit = [&](const protocol::list_entry& e) {
    if (printed == o.max_entries)
      throw failure{exit_code::refused,
                    fmt::format("{}: more than {} names; the listing stops there (--max-entries "
                                "sets the limit)",
                                o.path.empty() ? "/" : o.path, o.max_entries)};
    if (o.json) {
      out << (printed == 0 ? "[" : ",");
      out << json_text(entry_json(e));
    } else {
      const auto name = o.terminal ? quote_for_terminal(e.name) : e.name;
      if (long_form)
        fmt::print(out, "{} {:>12} {} {}\n", type_letter(e.type), e.size, format_mtime(e.mtime_ns),
                   name);
      else
        out << name << '\n';
    }
    ++printed;
    // A reader that went away (ferry ls | head) ends the listing rather than the server.
    if (!out) throw failure{exit_code::local_io, "cannot write the listing to standard output"};
  };
  auto listing = list_dir(engine, conn, o.path, timeout, emit);
  if (!co_await listing) {
    // Like ls(1), listing a file shows that file.
    auto asking = engine.ask(conn, protocol::stat_request{o.path}, {timeout});
    auto st = expect_reply<protocol::stat_reply>(co_await asking, o.path);
    const auto name = std::filesystem::path{o.path}.filename().string();
    emit({name.empty() ? o.path : name, st.type, st.size, st.mtime_ns, st.mode, {}});
  }
  if (o.json) out << (printed == 0 ? "[]\n" : "]\n");
}

}  // namespace

void run_ls(const command_options& o, bool long_form, std::ostream& out) {
  connection conn{resolve_address(o.address, timeout_of(o))};
  request_engine engine{conn.loop()};
  list_or_stat(engine, conn, o, long_form, out).run_on(conn.loop());
}

void run_stat(const command_options& o, std::ostream& out) {
  connection conn{resolve_address(o.address, timeout_of(o))};
  const auto st = stat_with_digest(conn, o.path, timeout_of(o));
  const bool file = st.type == protocol::entry_type::file;
  if (o.json) {
    json j{{"path", o.path},          {"type", std::string{protocol::to_string(st.type)}},
           {"size", st.size},         {"mtime", st.mtime_ns / 1'000'000'000},
           {"mtime_ns", st.mtime_ns}, {"mode", fmt::format("{:04o}", st.mode)}};
    if (file) j["digest"] = to_string(st.digest);
    if (file) j["max_block"] = st.max_block;
    print_json(out, j);
    return;
  }
  fmt::print(out, "path:   {}\n", o.path.empty() ? "/" : o.path);
  fmt::print(out, "type:   {}\n", protocol::to_string(st.type));
  fmt::print(out, "size:   {} ({})\n", st.size, human_bytes(static_cast<double>(st.size)));
  fmt::print(out, "mtime:  {}\n", format_mtime(st.mtime_ns));
  fmt::print(out, "mode:   {:04o}\n", st.mode);
  if (file) fmt::print(out, "digest: {}\n", to_string(st.digest));
}

std::string output_path_for(const std::string& remote, const std::optional<std::string>& o) {
  auto trimmed = remote;
  while (!trimmed.empty() && trimmed.back() == '/') trimmed.pop_back();
  const auto base = std::filesystem::path{trimmed}.filename().string();
  if (o) {
    std::error_code ec;
    if (std::filesystem::is_directory(*o, ec)) {
      if (base.empty() || base == "." || base == "..")
        throw failure{exit_code::usage, fmt::format("'{}' names no file", remote)};
      return (std::filesystem::path{*o} / base).string();
    }
    return *o;
  }
  if (base.empty() || base == "." || base == "..")
    throw failure{exit_code::usage, fmt::format("'{}' names no file; give -o OUT", remote)};
  return base;
}

void run_get(const command_options& o, const get_options& g, std::ostream& out) {
  // -o -: the file goes to standard output, as it arrives, in order.
  const bool to_stdout = g.output && *g.output == "-";
  if (to_stdout && o.json)
    throw failure{exit_code::usage, "-o - writes the file to standard output; --json cannot"};
  const auto target =
      to_stdout ? std::string{"standard output"} : output_path_for(o.path, g.output);
  std::error_code ec;
  if (!to_stdout && g.no_clobber &&
      std::filesystem::symlink_status(target, ec).type() != std::filesystem::file_type::not_found) {
    log::warn("'{}' exists; not fetched (--no-clobber)", target);
    return;
  }
  std::vector<std::string> names{o.address};
  names.insert(names.end(), g.mirrors.begin(), g.mirrors.end());
  const auto found = resolve_sources(names, timeout_of(o));
  fetch_options fo;
  fo.block_size = g.block_size;
  fo.timeout = timeout_of(o);
  fo.keep_mtime = g.keep_mtime;
  fo.keep_mode = g.keep_mode;
  fo.replace = !g.no_clobber;
  if (to_stdout) fo.stream_fd = STDOUT_FILENO;
  std::unique_ptr<progress_bar> bar;
  if (g.progress) {
    fo.on_progress =
        [&, name = std::filesystem::path{to_stdout ? o.path : target}.filename().string()](
            std::uint64_t done, std::uint64_t total) {
          if (!bar) bar = std::make_unique<progress_bar>(quote_for_terminal(name), done);
          bar->update(done, total);
        };
  }
  fetch_result r;
  // The servers used at once, then, should they all fail, those of each higher SRV priority.
  for (int step = 0;; ++step) {
    std::vector<endpoint> servers;
    for (const auto& s : found)
      if (s.standby == step) servers.push_back(s.address);
    const bool more =
        std::any_of(found.begin(), found.end(), [&](auto& s) { return s.standby > step; });
    if (servers.empty()) {
      if (!more) throw failure{exit_code::network, "no server to fetch from"};
      continue;
    }
    try {
      connection_group group{servers};
      r = fetcher{group.members(), o.path, target, fo}.run();
      break;
    } catch (const failure& f) {
      // A stream cannot take back what it wrote, so it does not go on elsewhere.
      if (f.code() != exit_code::network || !more || to_stdout) {
        if (bar) bar->finish();
        throw;
      }
      log::warn("{}; going on with the servers of the next SRV priority", f.what());
    } catch (...) {
      if (bar) bar->finish();
      throw;
    }
  }
  if (bar) bar->finish();
  log::info(
      "{}: {} fetched in {:.2f} s ({}/s), {} resumed, {} requests, {} retransmits, "
      "{} duplicates, {} damaged replies, block size {}",
      target, human_bytes(static_cast<double>(r.bytes_fetched)), r.seconds,
      human_bytes(r.seconds > 0 ? static_cast<double>(r.bytes_fetched) / r.seconds : 0),
      human_bytes(static_cast<double>(r.resumed_bytes)), r.requests, r.retransmits, r.duplicates,
      r.corrupt, r.block_size);
  if (r.sources.size() > 1) {
    for (const auto& s : r.sources)
      log::info("{}: {} from {} ({} requests, {} retransmits, {} duplicates, {})", target,
                human_bytes(static_cast<double>(s.bytes)), s.address, s.requests, s.retransmits,
                s.duplicates, s.state);
  }
  if (o.json) {
    json sources = json::array();
    for (const auto& s : r.sources)
      sources.push_back(json{{"address", s.address},
                             {"bytes", s.bytes},
                             {"requests", s.requests},
                             {"retransmits", s.retransmits},
                             {"duplicates", s.duplicates},
                             {"suspensions", s.suspensions},
                             {"state", s.state}});
    print_json(out, json{{"path", o.path},
                         {"output", target},
                         {"size", r.size},
                         {"bytes_fetched", r.bytes_fetched},
                         {"resumed_bytes", r.resumed_bytes},
                         {"block_size", r.block_size},
                         {"requests", r.requests},
                         {"request_datagrams", r.datagrams},
                         {"retransmits", r.retransmits},
                         {"duplicates", r.duplicates},
                         {"corrupt", r.corrupt},
                         {"restarts", r.restarts},
                         {"seconds", r.seconds},
                         {"rate_bytes_per_s",
                          r.seconds > 0 ? static_cast<double>(r.bytes_fetched) / r.seconds : 0.0},
                         {"digest", to_string(r.digest)},
                         {"sources", sources}});
  }
}

void with_retries(int retries, const std::function<void()>& command) {
  for (int attempt = 0;; ++attempt) {
    try {
      command();
      return;
    } catch (const failure& f) {
      if (f.code() != exit_code::network || attempt >= retries) throw;
      const int wait = std::min(60, 1 << std::min(attempt, 6));
      log::warn("{}; trying again in {} s (retry {} of {})", f.what(), wait, attempt + 1, retries);
      std::this_thread::sleep_for(std::chrono::seconds{wait});
    }
  }
}

void run_get_all(const command_options& o, const std::vector<std::string>& paths,
                 const get_options& g, std::ostream& out) {
  auto one = o;
  if (g.output && *g.output == "-") {
    if (paths.size() > 1) throw failure{exit_code::usage, "-o - takes one PATH"};
    // What went to standard output cannot be taken back, so a rerun would repeat it.
    if (o.retries > 0) throw failure{exit_code::usage, "--retry cannot be used with -o -"};
  }
  if (paths.size() == 1) {
    one.path = paths.front();
    return with_retries(o.retries, [&] { run_get(one, g, out); });
  }
  const std::string dir = g.output.value_or(".");
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw failure{exit_code::usage,
                  fmt::format("with several PATHs, -o names the directory they go into, and "
                              "'{}' is not one",
                              dir)};
  std::set<std::string> names;
  for (const auto& p : paths) {
    const auto target = output_path_for(p, dir);
    if (!names.insert(target).second)
      throw failure{exit_code::usage,
                    fmt::format("two PATHs would both be written to '{}'", target)};
  }
  auto each = g;
  each.output = dir;
  std::optional<failure> first;
  std::size_t failed = 0;
  for (const auto& p : paths) {
    one.path = p;
    try {
      with_retries(o.retries, [&] { run_get(one, each, out); });
    } catch (const failure& f) {
      if (f.code() == exit_code::interrupted) throw;
      log::error("{}", f.what());
      ++failed;
      if (!first) first = f;
    }
  }
  if (first)
    throw failure{first->code(), fmt::format("{} of {} files failed (each is named above); the "
                                             "others were fetched",
                                             failed, paths.size())};
}

}  // namespace ferry::client
