#include "server/runtime.hpp"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "common/log.hpp"
#include "common/uv_owned.hpp"
#include "server/announce.hpp"
#include "server/udp_server.hpp"

namespace ferry::server {

namespace {

// One server on a loop of its own, run by a thread of its own.
struct worker {
  uv_loop_t loop{};
  std::unique_ptr<udp_server> server;
  std::thread thread;

  worker() { uv_check(uv_loop_init(&loop), "uv_loop_init"); }
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;
  // The thread must have been asked to stop, or never started.
  ~worker() {
    if (thread.joinable()) thread.join();
    server.reset();
    uv_run(&loop, UV_RUN_DEFAULT);  // let close callbacks run
    if (uv_loop_close(&loop) != 0)
      log::write(log::level::warn, "event loop closed with handles still open");
  }
};

// The CPUs this process may run on, which taskset or a cgroup may make fewer than the machine's.
unsigned usable_cores() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0)
    return static_cast<unsigned>(std::max(1, CPU_COUNT(&set)));
  return std::max(1u, std::thread::hardware_concurrency());
}

// Binds every worker's socket: the first takes the port (a free one for port 0), the others join
// it. Throws with the first setup error.
std::vector<std::unique_ptr<worker>> make_workers(const config& cfg, unsigned count) {
  auto shared = std::make_shared<shared_state>(cfg);
  std::vector<std::unique_ptr<worker>> workers;
  for (unsigned i = 0; i < count; ++i) {
    config c = cfg;
    if (i > 0) {
      c.port = workers.front()->server->local_endpoint().port();
      c.share_port = port_sharing::any;
    } else if ((c.share_port == port_sharing::any && c.port == 0) ||
               (c.share_port == port_sharing::none && count > 1)) {
      // Bound with SO_REUSEPORT, port 0 could land in another sharing group of the same user.
      c.share_port = port_sharing::later;
    }
    auto& w = *workers.emplace_back(std::make_unique<worker>());
    w.server = std::make_unique<udp_server>(&w.loop, std::move(c), shared);
  }
  return workers;
}

}  // namespace

int run_until_signalled(const config& cfg) {
  const unsigned count = cfg.workers == 0 ? usable_cores() : cfg.workers;
  std::vector<std::unique_ptr<worker>> workers;
  try {
    workers = make_workers(cfg, count);
  } catch (const std::exception& e) {
    log::write(log::level::error, e.what());
    return 1;
  }
  std::vector<const stats*> counters;
  for (const auto& w : workers) counters.push_back(&w->server->counters());
  // The main thread runs only this control loop: SIGINT and SIGTERM stop every worker, SIGUSR1
  // and a timer ask each for its counters and the last to answer has them printed, summed.
  uv_loop_t control;
  uv_check(uv_loop_init(&control), "uv_loop_init");
  int code = 0;
  {
    struct context {
      std::vector<std::unique_ptr<worker>>* workers;
      std::span<const stats* const> counters;
      std::atomic<std::size_t> pending{0};  // workers yet to publish their counters
      std::vector<uv_owned<uv_signal_t>*> stoppers;
      uv_owned<uv_timer_t>* timer = nullptr;
    };
    context ctx{&workers, counters, {}, {}, nullptr};
    uv_owned<uv_async_t> collect{&control, uv_async_init, [](uv_async_t* a) {
                                   log_counters(static_cast<context*>(a->data)->counters, true);
                                 }};
    collect.get()->data = &ctx;
    ::uv_unref(collect.handle());
    for (auto& w : workers) {
      w->server->on_counters_published([&ctx, a = collect.get()] {
        if (ctx.pending.fetch_sub(1) == 1) uv_async_send(a);
      });
    }
    static constexpr auto stop_all = [](context& c) {
      for (auto& w : *c.workers) w->server->request_stop();
    };
    static constexpr auto ask_counters = [](context& c) {
      std::size_t idle = 0;
      // A request still being answered is printed when it is; this one joins it.
      if (!c.pending.compare_exchange_strong(idle, c.workers->size())) return;
      for (auto& w : *c.workers) w->server->request_counters();
    };
    for (auto& w : workers) {
      w->thread = std::thread{[l = &w->loop] { uv_run(l, UV_RUN_DEFAULT); }};
    }
    try {
      uv_owned<uv_signal_t> sigint{&control, uv_signal_init};
      uv_owned<uv_signal_t> sigterm{&control, uv_signal_init};
      uv_owned<uv_signal_t> sigusr1{&control, uv_signal_init};
      uv_owned<uv_timer_t> stats_timer{&control, uv_timer_init};
      ctx.stoppers = {&sigint, &sigterm, &sigusr1};
      ctx.timer = &stats_timer;
      for (auto* h : ctx.stoppers) h->get()->data = &ctx;
      stats_timer.get()->data = &ctx;
      static constexpr auto on_stop = [](uv_signal_t* h, int signum) {
        auto& c = *static_cast<context*>(h->data);
        log::write(log::level::info, "stopping", {{"signal", std::to_string(signum)}});
        stop_all(c);
        for (auto* s : c.stoppers) s->close();
        c.timer->close();
      };
      uv_check(uv_signal_start(sigint.get(), on_stop, SIGINT), "uv_signal_start");
      uv_check(uv_signal_start(sigterm.get(), on_stop, SIGTERM), "uv_signal_start");
      static constexpr auto on_usr1 = [](uv_signal_t* h, int) {
        ask_counters(*static_cast<context*>(h->data));
      };
      uv_check(uv_signal_start(sigusr1.get(), on_usr1, SIGUSR1), "uv_signal_start");
      if (cfg.stats_interval > 0) {
        const auto ms = static_cast<std::uint64_t>(cfg.stats_interval * 1000);
        uv_check(uv_timer_start(
                     stats_timer.get(),
                     [](uv_timer_t* t) { ask_counters(*static_cast<context*>(t->data)); }, ms, ms),
                 "uv_timer_start");
      }
      // Only now, so that a script that signals ferryd as soon as it reads this line cannot
      // meet the default action of a signal.
      const auto addr = to_string(workers.front()->server->local_endpoint());
      std::printf("listening on %s\n", addr.c_str());
      std::fflush(stdout);
      log::write(log::level::info, "listening",
                 {{"addr", addr}, {"root", cfg.root}, {"workers", std::to_string(count)}});
      // Withdrawn as soon as the loop ends, so that clients stop finding a server that stops.
      std::unique_ptr<announcer> announced;
      if (cfg.announce)
        announced = std::make_unique<announcer>(
            announce_options{cfg.announce_name, cfg.root, cfg.bind,
                             workers.front()->server->local_endpoint().port()});
      uv_run(&control, UV_RUN_DEFAULT);
    } catch (const std::exception& e) {
      log::write(log::level::error, e.what());
      stop_all(ctx);
      code = 1;
    }
    for (auto& w : workers) w->thread.join();
    // The loops have ended, so this thread may read what was theirs.
    for (auto& w : workers) w->server->publish_active_addresses();
    log_counters(counters, false);
    log::write(log::level::info, "stopped");
    workers.clear();
  }
  uv_run(&control, UV_RUN_DEFAULT);  // let close callbacks run
  if (uv_loop_close(&control) != 0)
    log::write(log::level::warn, "event loop closed with handles still open");
  return code;
}

}  // namespace ferry::server
