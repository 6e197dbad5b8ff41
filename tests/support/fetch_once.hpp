#pragma once

// One fetch through the client library on a connection of its own: what most client tests do.

#include <filesystem>
#include <string>
#include <utility>

#include "client/connection.hpp"
#include "client/fetch.hpp"

namespace ferry::test {

inline client::fetch_result fetch_once(const ::ferry::endpoint& server, const std::string& remote,
                                       const std::filesystem::path& out,
                                       client::fetch_options opt) {
  client::connection conn{server};
  return client::fetcher{conn, remote, out, std::move(opt)}.run();
}

}  // namespace ferry::test
