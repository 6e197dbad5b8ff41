#include "server/cli.hpp"

int main(int argc, char** argv) { return ferry::server::main(argc, argv); }
