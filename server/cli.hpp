#pragma once

namespace ferry::server {

// The ferryd command line: parses arguments, runs the server, returns the exit code.
int main(int argc, char** argv);

}  // namespace ferry::server
