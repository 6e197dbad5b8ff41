#include "client/cli.hpp"

int main(int argc, char** argv) { return ferry::client::main(argc, argv); }
