// A small command-line parser for subcommands whose flags are Abseil flags.
//
// absl::ParseCommandLine knows nothing of subcommands (every flag would be
// accepted by every subcommand), exits 1 on errors where onlyone exits 64,
// and spells flags with underscores. This parser takes the arguments after
// the subcommand and the list of flags that subcommand accepts, and sets the
// flags through absl::CommandLineFlag::ParseFrom, so each flag's type, help
// text and default stay in its ABSL_FLAG definition.
//
// Accepted syntax: --flag=VALUE, --flag VALUE, -flag VALUE; booleans as
// --flag, --flag=true|false; "-h", "--help" (and -help) ask for help; "--"
// ends the flags. Flag names are written with '-' on the command line and
// '_' in ABSL_FLAG ("--max-runtime" sets FLAGS_max_runtime); both spellings
// are accepted. A repeated flag keeps its last value. A subcommand may also
// give one-letter spellings (ShortFlag: -n, -w 5 or -w5, as flock(1) has
// them), and hints for spellings it refuses (FlagHint); an unknown flag
// close to an accepted one gets "did you mean".
//
// When "--" is given, everything before it must be a flag or a flag's
// value: a stray word there ("--wait 10 minutes -- cmd") is an error
// quoting it, never the start of the command.

#ifndef ONLYONE_CLI_FLAG_PARSER_H_
#define ONLYONE_CLI_FLAG_PARSER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace onlyone::cli {

// One flag a subcommand accepts.
struct FlagSpec {
  // The ABSL_FLAG name, with underscores: "max_runtime".
  absl::string_view name;
  // The placeholder of its value in help ("DURATION"); empty for a boolean.
  absl::string_view metavar;
  // What help shows as the default; empty: the flag's DefaultValue(), unless
  // it is "" or "false".
  absl::string_view default_text = {};
};

// A one-letter spelling that stands for a flag: -n for --wait 0.
struct ShortFlag {
  char letter;
  // The ABSL_FLAG it sets, with underscores: "wait".
  absl::string_view flag;
  // The value it sets; empty when it takes one (the next argument, or the
  // rest of its own: -w5).
  absl::string_view value = {};
  // Its value's placeholder in messages ("SECONDS") when it takes one.
  absl::string_view metavar = {};
};

// A spelling a subcommand refuses with a hint, such as another tool's flag:
// {"-c", "give the command after \"--\": -- sh -c 'COMMAND'"}.
struct FlagHint {
  // As typed, without a value: "-c", "--timeout".
  absl::string_view spelling;
  absl::string_view hint;
};

// What a subcommand accepts.
struct CommandSyntax {
  // "run".
  absl::string_view command;
  absl::Span<const FlagSpec> accepted;
  // Every flag of every subcommand, for a better message when a flag
  // belongs to another one.
  absl::Span<const FlagSpec> known;
  absl::Span<const ShortFlag> short_flags = {};
  absl::Span<const FlagHint> hints = {};
  // The first non-flag argument starts the positional arguments; otherwise
  // any positional argument is an error.
  bool takes_command = false;
};

struct ParsedArgs {
  bool help = false;
  // Names (with underscores) of the flags given, in order, repeats included.
  std::vector<std::string> given;
  // The arguments after "--", or from the first argument that is not a flag
  // when the subcommand takes a command.
  std::vector<std::string> positional;

  bool Given(absl::string_view name) const;
};

// Parses `args` (the arguments after the subcommand) for the subcommand
// `syntax` describes. A short flag is recorded in ParsedArgs::given under
// the flag it stands for. Errors are InvalidArgument with a message for the
// user ("unknown flag \"--wiat\"; did you mean --wait?", "--wait: invalid
// value \"x\": ...").
absl::StatusOr<ParsedArgs> ParseArgs(absl::Span<const std::string> args,
                                     const CommandSyntax& syntax);

// The same without short flags or hints.
absl::StatusOr<ParsedArgs> ParseArgs(absl::Span<const std::string> args,
                                     absl::string_view command,
                                     absl::Span<const FlagSpec> accepted,
                                     absl::Span<const FlagSpec> known,
                                     bool takes_command);

// "max_runtime" -> "max-runtime".
std::string DashedName(absl::string_view name);

// Help for `flags`, one entry per flag:
//   --max-runtime DURATION
//       Stop COMMAND when it has run this long ... (default: inf)
// wrapped to 79 columns.
std::string FlagsHelp(absl::Span<const FlagSpec> flags);

// Wraps `text` to `width` columns, indenting every line by `indent` spaces.
// Blank lines (paragraphs) are kept.
std::string Wrap(absl::string_view text, int indent, int width = 79);

}  // namespace onlyone::cli

#endif  // ONLYONE_CLI_FLAG_PARSER_H_
