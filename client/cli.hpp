#pragma once

namespace ferry::client {

// The ferry command line: parses arguments, runs one command, returns the exit code.
int main(int argc, char** argv);

}  // namespace ferry::client
