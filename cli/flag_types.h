// Value types of the onlyone command's flags, parsed by Abseil's flag
// library through AbslParseFlag/AbslUnparseFlag: ABSL_FLAG(DurationFlag, ...)
// and so on (see cli/cli.cc).

#ifndef ONLYONE_CLI_FLAG_TYPES_H_
#define ONLYONE_CLI_FLAG_TYPES_H_

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "onlyone/single_instance.h"

namespace onlyone::cli {

// A DURATION (see cli/duration.h). absl::Duration has a flag parser of its
// own, but it refuses plain seconds ("30").
struct DurationFlag {
  absl::Duration value = absl::ZeroDuration();
};
bool AbslParseFlag(absl::string_view text, DurationFlag* flag,
                   std::string* error);
std::string AbslUnparseFlag(const DurationFlag& flag);

// --scope user|session|machine.
struct ScopeFlag {
  Scope value = Scope::kUser;
};
bool AbslParseFlag(absl::string_view text, ScopeFlag* flag,
                   std::string* error);
std::string AbslUnparseFlag(const ScopeFlag& flag);

// --on-conflict fail|wait|replace.
struct OnConflictFlag {
  ConflictPolicy value = ConflictPolicy::kFail;
};
bool AbslParseFlag(absl::string_view text, OnConflictFlag* flag,
                   std::string* error);
std::string AbslUnparseFlag(const OnConflictFlag& flag);

// "user", "session", "machine".
absl::string_view ScopeName(Scope scope);
// "fail", "wait", "replace".
absl::string_view ConflictPolicyName(ConflictPolicy policy);

}  // namespace onlyone::cli

#endif  // ONLYONE_CLI_FLAG_TYPES_H_
