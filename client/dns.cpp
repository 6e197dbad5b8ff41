#include "client/dns.hpp"

#include <ares.h>
#include <arpa/nameser.h>
#include <fmt/format.h>

#include <algorithm>
#include <mutex>

#include "client/errors.hpp"
#include "common/log.hpp"

namespace ferry::client {

struct dns_resolver::watch {
  int fd = -1;
  dns_resolver* owner = nullptr;
  uv_owned<uv_poll_t> poll;
  watch(uv_loop_t* loop, int socket) : fd{socket}, poll{loop, uv_poll_init_socket, socket} {}
};

namespace {

dns_status status_of(int code) {
  dns_status s;
  switch (code) {
    case ARES_SUCCESS:
      return s;
    case ARES_ENOTFOUND:
      s.error = "no such name (NXDOMAIN)";
      s.not_found = true;
      return s;
    case ARES_ENODATA:
      s.error = "no record of that type";
      s.not_found = true;
      return s;
    case ARES_ETIMEOUT:
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
    case ARES_ECONNREFUSED:
      s.error = "no answer from the DNS server";
      s.timed_out = true;
      return s;
    default:
      s.error = ::ares_strerror(code);
      return s;
  }
}

// What a lookup hands back to its caller, on the heap while c-ares holds it.
template <typename Fn>
struct call {
  std::size_t* pending;
  Fn done;
};

// Hands a lookup's outcome to its caller, from inside c-ares: nothing may escape.
template <typename Fn, typename T>
void finish(void* arg, dns_status st, T value) noexcept {
  std::unique_ptr<call<Fn>> me{static_cast<call<Fn>*>(arg)};
  --*me->pending;
  try {
    me->done(std::move(st), std::move(value));
  } catch (...) {
    log::debug("DNS: a lookup's callback threw");
  }
}

}  // namespace

dns_resolver::dns_resolver(uv_loop_t* loop, const dns_options& opt)
    : loop_{loop}, timer_{loop, uv_timer_init} {
  static std::once_flag once;
  std::call_once(once, [] { (void)::ares_library_init(ARES_LIB_INIT_ALL); });
  timer_.get()->data = this;
  ares_options o{};
  o.timeout = static_cast<int>(std::clamp<long long>(
      std::chrono::duration_cast<millis>(opt.query_timeout).count(), 1, 60'000));
  o.tries = 3;
  o.sock_state_cb = &dns_resolver::on_sock_state;
  o.sock_state_cb_data = this;
  const int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
  if (int rc = ::ares_init_options(&channel_, &o, mask); rc != ARES_SUCCESS)
    throw failure{exit_code::internal,
                  fmt::format("cannot start the DNS resolver: {}", ::ares_strerror(rc))};
  if (!opt.servers.empty()) {
    if (int rc = ::ares_set_servers_ports_csv(channel_, opt.servers.c_str()); rc != ARES_SUCCESS) {
      ::ares_destroy(channel_);
      throw failure{exit_code::usage,
                    fmt::format("bad DNS server list '{}': {} (write IP[:PORT], IPv6 as "
                                "[::1]:53, several separated by commas)",
                                opt.servers, ::ares_strerror(rc))};
    }
  }
}

dns_resolver::~dns_resolver() {
  cancel_all();
  ::ares_destroy(channel_);  // its sockets go through on_sock_state, which closes their polls
  watches_.clear();
}

void dns_resolver::cancel_all() noexcept {
  if (pending_ > 0) ::ares_cancel(channel_);
  rearm();
}

void dns_resolver::on_sock_state(void* data, int fd, int readable, int writable) noexcept {
  auto& self = *static_cast<dns_resolver*>(data);
  auto it = std::find_if(self.watches_.begin(), self.watches_.end(),
                         [fd](const auto& w) { return w->fd == fd; });
  if (readable == 0 && writable == 0) {
    // c-ares closes the socket after this returns: stop watching it first.
    if (it != self.watches_.end()) self.watches_.erase(it);
    return;
  }
  try {
    if (it == self.watches_.end()) {
      self.watches_.push_back(std::make_unique<watch>(self.loop_, fd));
      it = std::prev(self.watches_.end());
      (*it)->owner = &self;
      (*it)->poll.get()->data = it->get();
    }
    const int events = (readable != 0 ? UV_READABLE : 0) | (writable != 0 ? UV_WRITABLE : 0);
    const int rc = ::uv_poll_start((*it)->poll.get(), events, [](uv_poll_t* h, int status, int ev) {
      auto* w = static_cast<watch*>(h->data);
      auto* owner = w->owner;  // the watch may go while c-ares processes
      const int sock = w->fd;
      // An error on the socket is read, so that c-ares sees it and gives up on that server.
      const bool r = status < 0 || (ev & UV_READABLE) != 0;
      const bool wr = status >= 0 && (ev & UV_WRITABLE) != 0;
      ::ares_process_fd(owner->channel_, r ? sock : ARES_SOCKET_BAD, wr ? sock : ARES_SOCKET_BAD);
      owner->rearm();
    });
    if (rc < 0) log::debug("DNS: cannot watch socket {}: {}", fd, ::uv_strerror(rc));
  } catch (const std::exception& e) {
    // The query on that socket times out instead.
    log::debug("DNS: cannot watch socket {}: {}", fd, e.what());
  }
}

void dns_resolver::rearm() noexcept {
  timeval tv{};
  if (pending_ == 0 || ::ares_timeout(channel_, nullptr, &tv) == nullptr) {
    ::uv_timer_stop(timer_.get());
    return;
  }
  const auto ms = static_cast<std::uint64_t>(tv.tv_sec) * 1000 +
                  static_cast<std::uint64_t>(tv.tv_usec + 999) / 1000;
  ::uv_timer_start(
      timer_.get(),
      [](uv_timer_t* t) {
        auto& self = *static_cast<dns_resolver*>(t->data);
        ::ares_process_fd(self.channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
        self.rearm();
      },
      ms, 0);
}

void dns_resolver::addresses(const std::string& host, std::uint16_t port, addresses_fn done) {
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_protocol = IPPROTO_UDP;
  hints.ai_flags = ARES_AI_NUMERICSERV;
  auto* c = new call<addresses_fn>{&pending_, std::move(done)};
  ++pending_;
  const auto service = std::to_string(port);
  ::ares_getaddrinfo(
      channel_, host.c_str(), service.c_str(), &hints,
      [](void* arg, int status, int, ares_addrinfo* res) {
        std::vector<endpoint> all;
        if (res != nullptr) {
          for (const auto* n = res->nodes; n != nullptr; n = n->ai_next) {
            if (n->ai_family != AF_INET && n->ai_family != AF_INET6) continue;
            const auto ep = endpoint::from(n->ai_addr);
            if (std::find(all.begin(), all.end(), ep) == all.end()) all.push_back(ep);
          }
          ::ares_freeaddrinfo(res);
        }
        auto st = status_of(status);
        if (st.ok() && all.empty()) st = status_of(ARES_ENODATA);
        finish<addresses_fn>(arg, std::move(st), std::move(all));
      },
      c);
  rearm();
}

void dns_resolver::srv(const std::string& name, srv_fn done) {
  auto* c = new call<srv_fn>{&pending_, std::move(done)};
  ++pending_;
  ::ares_query(
      channel_, name.c_str(), ns_c_in, ns_t_srv,
      [](void* arg, int status, int, unsigned char* abuf, int alen) {
        std::vector<srv_record> records;
        auto st = status_of(status);
        if (st.ok()) {
          ares_srv_reply* out = nullptr;
          if (int rc = ::ares_parse_srv_reply(abuf, alen, &out); rc != ARES_SUCCESS) {
            st = status_of(rc);
          } else {
            for (const auto* r = out; r != nullptr; r = r->next)
              records.push_back({r->host, r->port, r->priority, r->weight});
            ::ares_free_data(out);
          }
        }
        finish<srv_fn>(arg, std::move(st), std::move(records));
      },
      c);
  rearm();
}

}  // namespace ferry::client
