#pragma once

// A UDP peer on 127.0.0.1:0, on its own thread, that decodes each request and answers with
// whatever the test's script says: nothing, "busy", a token demand, a STAT of a digest still
// being computed, a hostile or a normal reply. Tests of the client's request engine use it for
// servers that ferryd is not (one that drops the first requests, one that is busy for ever).

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <thread>

#include "common/address.hpp"
#include "common/codec.hpp"

namespace ferry::test {

class scripted_server {
 public:
  // Called for each request that decodes, with how many came before it; returns the reply to
  // send, or nothing to drop the request. Runs on the server's thread.
  using script =
      std::function<std::optional<protocol::reply>(const codec::decoded_request&, std::uint64_t)>;

  explicit scripted_server(script s);
  ~scripted_server();
  scripted_server(const scripted_server&) = delete;
  scripted_server& operator=(const scripted_server&) = delete;

  [[nodiscard]] const ::ferry::endpoint& endpoint() const noexcept { return endpoint_; }
  [[nodiscard]] std::uint64_t requests() const noexcept { return requests_; }

 private:
  void run() noexcept;

  script script_;
  int fd_ = -1;
  int wake_ = -1;  // eventfd that ends run()
  ::ferry::endpoint endpoint_;
  std::atomic<std::uint64_t> requests_{0};
  std::thread thread_;
};

}  // namespace ferry::test
