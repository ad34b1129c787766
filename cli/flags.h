// The onlyone command's flags: their definitions (cli/flags.cc: types,
// defaults, help) and which subcommand accepts which, in one place for the
// command (cli/cli.cc) and the flag parser's fuzz target, so that the
// fuzzer parses exactly the command's flags.
//
// Each subcommand's list is in the order its help shows the flags.

#ifndef ONLYONE_CLI_FLAGS_H_
#define ONLYONE_CLI_FLAGS_H_

#include <array>
#include <cstddef>
#include <string>

#include "absl/flags/declare.h"
#include "absl/types/span.h"
#include "cli/flag_parser.h"
#include "cli/flag_types.h"

ABSL_DECLARE_FLAG(std::string, name);
ABSL_DECLARE_FLAG(std::string, lock);
ABSL_DECLARE_FLAG(onlyone::cli::ScopeFlag, scope);
ABSL_DECLARE_FLAG(int, slots);
ABSL_DECLARE_FLAG(bool, soft);
ABSL_DECLARE_FLAG(onlyone::cli::DurationFlag, stale_after);
ABSL_DECLARE_FLAG(std::string, redis);
ABSL_DECLARE_FLAG(std::string, redis_password_file);
ABSL_DECLARE_FLAG(onlyone::cli::DurationFlag, lease);
ABSL_DECLARE_FLAG(onlyone::cli::DurationFlag, wait);
ABSL_DECLARE_FLAG(onlyone::cli::OnConflictFlag, on_conflict);
ABSL_DECLARE_FLAG(int, conflict_exit_code);
ABSL_DECLARE_FLAG(bool, shared);
ABSL_DECLARE_FLAG(onlyone::cli::DurationFlag, grace);
ABSL_DECLARE_FLAG(onlyone::cli::DurationFlag, max_runtime);
ABSL_DECLARE_FLAG(bool, quiet);
ABSL_DECLARE_FLAG(bool, verbose);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(onlyone::cli::DurationFlag, timeout);

namespace onlyone::cli {

inline constexpr FlagSpec kName = {"name", "NAME"};
inline constexpr FlagSpec kLock = {"lock", "PATH"};
inline constexpr FlagSpec kScope = {"scope", "user|session|machine"};
inline constexpr FlagSpec kJson = {"json", ""};
inline constexpr FlagSpec kSlots = {"slots", "N"};
inline constexpr FlagSpec kSoft = {"soft", ""};
inline constexpr FlagSpec kStaleAfter = {"stale_after", "DURATION"};
inline constexpr FlagSpec kRedis = {"redis", "URL"};
inline constexpr FlagSpec kRedisPasswordFile = {"redis_password_file", "FILE"};
inline constexpr FlagSpec kLease = {"lease", "DURATION"};

// Joins lists of flags into one, in order: each subcommand's list is built
// from the shared ones below rather than repeating them.
template <size_t... N>
constexpr std::array<FlagSpec, (N + ...)> JoinFlags(
    const FlagSpec (&... lists)[N]) {
  std::array<FlagSpec, (N + ...)> joined{};
  size_t at = 0;
  auto append = [&](const auto& list) {
    for (const FlagSpec& spec : list) joined[at++] = spec;
  };
  (append(lists), ...);
  return joined;
}

// Which lock: what run, status and wait all take.
inline constexpr FlagSpec kLockChoiceFlags[] = {
    kName,  kLock,       kScope,
    kSlots, kSoft,       kStaleAfter,
    kRedis, kRedisPasswordFile,
};
inline constexpr FlagSpec kRunOwnFlags[] = {
    kLease,
    {"wait", "DURATION", "none, fail at once"},
    {"on_conflict", "fail|wait|replace"},
    {"conflict_exit_code", "N"},
    {"shared", ""},
    {"grace", "DURATION"},
    {"max_runtime", "DURATION", "inf"},
    {"quiet", ""},
    {"verbose", ""},
};
inline constexpr FlagSpec kStatusOwnFlags[] = {kJson};
inline constexpr FlagSpec kWaitOwnFlags[] = {
    {"timeout", "DURATION", "inf, wait until free"}};

inline constexpr auto kRunFlags = JoinFlags(kLockChoiceFlags, kRunOwnFlags);
inline constexpr auto kStatusFlags =
    JoinFlags(kLockChoiceFlags, kStatusOwnFlags);
inline constexpr FlagSpec kListFlags[] = {kScope, kRedis, kRedisPasswordFile,
                                          kJson};
inline constexpr auto kWaitFlags = JoinFlags(kLockChoiceFlags, kWaitOwnFlags);

// Every flag of every subcommand, each once: what a parser must know to
// say "not a flag of this subcommand" rather than "unknown flag".
absl::Span<const FlagSpec> AllFlags();

}  // namespace onlyone::cli

#endif  // ONLYONE_CLI_FLAGS_H_
