#include "cli/flag_types.h"

#include <string>

#include "cli/duration.h"

namespace onlyone::cli {

bool AbslParseFlag(absl::string_view text, DurationFlag* flag,
                   std::string* error) {
  return ParseDuration(text, &flag->value, error);
}

std::string AbslUnparseFlag(const DurationFlag& flag) {
  return absl::FormatDuration(flag.value);
}

absl::string_view ScopeName(Scope scope) {
  switch (scope) {
    case Scope::kUser:
      return "user";
    case Scope::kSession:
      return "session";
    case Scope::kMachine:
      return "machine";
  }
  return "unknown";
}

bool AbslParseFlag(absl::string_view text, ScopeFlag* flag,
                   std::string* error) {
  for (Scope scope : {Scope::kUser, Scope::kSession, Scope::kMachine}) {
    if (text == ScopeName(scope)) {
      flag->value = scope;
      return true;
    }
  }
  *error = "expected user, session or machine";
  return false;
}

std::string AbslUnparseFlag(const ScopeFlag& flag) {
  return std::string(ScopeName(flag.value));
}

absl::string_view ConflictPolicyName(ConflictPolicy policy) {
  switch (policy) {
    case ConflictPolicy::kFail:
      return "fail";
    case ConflictPolicy::kWait:
      return "wait";
    case ConflictPolicy::kReplace:
      return "replace";
  }
  return "unknown";
}

bool AbslParseFlag(absl::string_view text, OnConflictFlag* flag,
                   std::string* error) {
  for (ConflictPolicy policy : {ConflictPolicy::kFail, ConflictPolicy::kWait,
                                ConflictPolicy::kReplace}) {
    if (text == ConflictPolicyName(policy)) {
      flag->value = policy;
      return true;
    }
  }
  *error = "expected fail, wait or replace";
  return false;
}

std::string AbslUnparseFlag(const OnConflictFlag& flag) {
  return std::string(ConflictPolicyName(flag.value));
}

}  // namespace onlyone::cli
