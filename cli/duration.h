// DURATION arguments of the onlyone command: "90s", "1.5m", "250ms", "2h",
// "1h30m", plain seconds ("30", "0.5"), and "inf" for no limit.

#ifndef ONLYONE_CLI_DURATION_H_
#define ONLYONE_CLI_DURATION_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace onlyone::cli {

// Parses a DURATION: a plain non-negative number of seconds, or what
// absl::ParseDuration accepts (units ns, us, ms, s, m, h, possibly combined,
// or "inf"). Negative durations are refused. InvalidArgument names the text,
// what is wrong with it and the accepted forms.
absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text);

// Same, but on failure sets *why to the reason and the accepted forms
// without repeating the text (for flag errors, which quote it already).
bool ParseDuration(absl::string_view text, absl::Duration* duration,
                   std::string* why);

}  // namespace onlyone::cli

#endif  // ONLYONE_CLI_DURATION_H_
