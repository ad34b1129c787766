// onlyone: run a command only if no other copy of it is running.
// Everything is in //cli; see docs/cli.md.

#include "cli/cli.h"

int main(int argc, char** argv) { return onlyone::cli::Main(argc, argv); }
