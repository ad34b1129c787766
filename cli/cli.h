// The onlyone command line: `onlyone run|status|list|wait ...`.
//
// main() is a few lines around Main(); everything else, including flag
// parsing and help, is here and in the libraries it uses, so that tests can
// call it. The flags are Abseil flags (cli/flags.h); Main() parses them
// with cli/flag_parser.h, since each subcommand accepts its own set.

#ifndef ONLYONE_CLI_CLI_H_
#define ONLYONE_CLI_CLI_H_

#include <ostream>
#include <string>

#include "absl/types/span.h"

namespace onlyone::cli {

// Runs the command line `args` (without the program name) and returns the
// exit code. Help goes to `out`; errors and onlyone's messages to `err`.
// Sets the global flags: tests calling it more than once should hold an
// absl::FlagSaver.
int Main(absl::Span<const std::string> args, std::ostream& out,
         std::ostream& err);

// Main() for main(argc, argv), with std::cout and std::cerr.
int Main(int argc, char** argv);

// The text of `onlyone --help` (everything) and `onlyone COMMAND --help`.
std::string FullHelp();
std::string CommandHelp(const std::string& command);

}  // namespace onlyone::cli

#endif  // ONLYONE_CLI_CLI_H_
