// Fuzz target: the subcommand flag parser of the onlyone command
// (cli/flag_parser.h), on flags of the types and names the command defines
// (cli/cli.cc), each subcommand accepting its own set.
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
#include "absl/time/time.h"
#include "cli/flag_parser.h"
#include "cli/flag_types.h"
#include "tests/fuzz/fuzz_support.h"

using ::onlyone::cli::DurationFlag;
using ::onlyone::cli::OnConflictFlag;
using ::onlyone::cli::ScopeFlag;

// The command's flags (cli/cli.cc), with the same names, types and
// defaults; their help is not what is tested.
ABSL_FLAG(std::string, name, "", "");
ABSL_FLAG(std::string, lock, "", "");
ABSL_FLAG(ScopeFlag, scope, ScopeFlag{}, "");
ABSL_FLAG(DurationFlag, wait, DurationFlag{}, "");
ABSL_FLAG(OnConflictFlag, on_conflict, OnConflictFlag{}, "");
ABSL_FLAG(int, conflict_exit_code, 75, "");
ABSL_FLAG(bool, shared, false, "");
ABSL_FLAG(DurationFlag, grace, DurationFlag{absl::Seconds(5)}, "");
ABSL_FLAG(DurationFlag, max_runtime, DurationFlag{absl::InfiniteDuration()},
          "");
ABSL_FLAG(bool, quiet, false, "");
ABSL_FLAG(bool, verbose, false, "");
ABSL_FLAG(bool, json, false, "");
ABSL_FLAG(DurationFlag, timeout, DurationFlag{absl::InfiniteDuration()}, "");

namespace onlyone::fuzz {
namespace {

using ::onlyone::cli::FlagSpec;
using ::onlyone::cli::ParseArgs;
using ::onlyone::cli::ParsedArgs;

constexpr FlagSpec kName = {"name", "NAME"};
constexpr FlagSpec kLock = {"lock", "PATH"};
constexpr FlagSpec kScope = {"scope", "user|session|machine"};
constexpr FlagSpec kJson = {"json", ""};
constexpr FlagSpec kRunFlags[] = {
    kName,
    kLock,
    kScope,
    {"wait", "DURATION"},
    {"on_conflict", "fail|wait|replace"},
    {"conflict_exit_code", "N"},
    {"shared", ""},
    {"grace", "DURATION"},
    {"max_runtime", "DURATION"},
    {"quiet", ""},
    {"verbose", ""},
};
constexpr FlagSpec kStatusFlags[] = {kName, kLock, kScope, kJson};
constexpr FlagSpec kListFlags[] = {kScope, kJson};
constexpr FlagSpec kWaitFlags[] = {
    kName, kLock, kScope, {"timeout", "DURATION"}};
constexpr FlagSpec kAllFlags[] = {
    kName,
    kLock,
    kScope,
    {"wait", "DURATION"},
    {"on_conflict", "fail|wait|replace"},
    {"conflict_exit_code", "N"},
    {"shared", ""},
    {"grace", "DURATION"},
    {"max_runtime", "DURATION"},
    {"quiet", ""},
    {"verbose", ""},
    kJson,
    {"timeout", "DURATION"},
};

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
  for (const FlagSpec& spec : kAllFlags) {
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
      ParseArgs(args, subcommand.name, subcommand.flags, kAllFlags,
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
