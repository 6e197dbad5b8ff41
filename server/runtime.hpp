#pragma once

#include "server/config.hpp"

namespace ferry::server {

// Runs cfg.workers servers, each on its own loop and thread and all on one port, until SIGINT or
// SIGTERM. Prints "listening on ADDR:PORT" to stdout first. Returns the process exit code.
int run_until_signalled(const config& cfg);

}  // namespace ferry::server
