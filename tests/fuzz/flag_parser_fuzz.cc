// Fuzz target: the subcommand flag parser of the onlyone command
// (cli/flag_parser.h), on the command's own flags and subcommand sets
// (cli/flags.h).
//
// The input's first byte picks the subcommand; the rest, split at NUL
// bytes, is the argument list. Properties: parsing any arguments is safe;
// a refusal is InvalidArgument with a message; on success every flag named
// as given is one the subcommand accepts, the positional arguments are the
// end of the argument list (and empty for a subcommand that takes no
// command), and each given flag's value, printed and parsed again, is the
// same value.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/flag_parser.h"
#include "cli/flag_types.h"
#include "cli/flags.h"
#include "tests/fuzz/fuzz_support.h"

namespace onlyone::fuzz {
namespace {

using ::onlyone::cli::FlagSpec;
using ::onlyone::cli::AllFlags;
using ::onlyone::cli::kListFlags;
using ::onlyone::cli::kRunFlags;
using ::onlyone::cli::kStatusFlags;
using ::onlyone::cli::kWaitFlags;
using ::onlyone::cli::ParseArgs;
using ::onlyone::cli::ParsedArgs;

struct Subcommand {
  const char* name;
  absl::Span<const FlagSpec> flags;
  bool takes_command;
};
constexpr Subcommand kSubcommands[] = {
    {"run", kRunFlags, true},
    {"status", kStatusFlags, false},
    {"list", kListFlags, false},
    {"wait", kWaitFlags, false},
};

std::string Show(const std::vector<std::string>& args) {
  return absl::StrCat(
      "[",
      absl::StrJoin(args, ", ",
                    [](std::string* out, const std::string& arg) {
                      absl::StrAppend(out, "\"", absl::CHexEscape(arg), "\"");
                    }),
      "]");
}

bool Accepts(const Subcommand& subcommand, absl::string_view name) {
  for (const FlagSpec& spec : subcommand.flags) {
    if (spec.name == name) return true;
  }
  return false;
}

// Sets every flag back to its default, so that an input's outcome never
// depends on the inputs before it. (absl::FlagSaver would log a line per
// flag and input.)
void ResetFlags() {
  for (const FlagSpec& spec : AllFlags()) {
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(spec.name);
    FUZZ_CHECK(flag != nullptr, std::string(spec.name));
    std::string error;
    FUZZ_CHECK(flag->ParseFrom(flag->DefaultValue(), &error),
               absl::StrCat(spec.name, ": ", error));
  }
}

void Check(const uint8_t* data, size_t size) {
  if (size == 0) return;
  ResetFlags();
  const Subcommand& subcommand =
      kSubcommands[data[0] % (sizeof kSubcommands / sizeof kSubcommands[0])];
  const std::vector<std::string> args = absl::StrSplit(
      absl::string_view(reinterpret_cast<const char*>(data) + 1, size - 1),
      '\0');
  const absl::StatusOr<ParsedArgs> parsed =
      ParseArgs(args, subcommand.name, subcommand.flags, AllFlags(),
                subcommand.takes_command);
  const std::string shown = absl::StrCat(subcommand.name, " ", Show(args));
  if (!parsed.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(parsed.status()) &&
                   !parsed.status().message().empty(),
               absl::StrCat(shown, ": ", parsed.status().ToString()));
    return;
  }
  for (const std::string& name : parsed->given) {
    FUZZ_CHECK(Accepts(subcommand, name), absl::StrCat(shown, ": ", name));
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    FUZZ_CHECK(flag != nullptr, absl::StrCat(shown, ": ", name));
    const std::string value = flag->CurrentValue();
    std::string error;
    FUZZ_CHECK(flag->ParseFrom(value, &error) && flag->CurrentValue() == value,
               absl::StrCat(shown, ": --", name, "=", value, " printed as ",
                            flag->CurrentValue(), " ", error));
  }
  const std::vector<std::string>& positional = parsed->positional;
  FUZZ_CHECK(
      positional.size() <= args.size() &&
          std::equal(positional.rbegin(), positional.rend(), args.rbegin()),
      shown);
  FUZZ_CHECK(subcommand.takes_command || positional.empty(), shown);
}

}  // namespace
}  // namespace onlyone::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  onlyone::fuzz::Check(data, size);
  return 0;
}
