// Fuzz target: the DURATION parser of the onlyone command (cli/duration.h).
//
// Properties: parsing any text is safe; the two overloads agree; a parsed
// duration is never negative; what the command prints for a duration
// (absl::FormatDuration, the flags' AbslUnparseFlag) parses back to the same
// duration; a refusal is InvalidArgument and quotes the text.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/duration.h"
#include "tests/fuzz/fuzz_support.h"

namespace onlyone::fuzz {
namespace {

std::string Show(absl::string_view text) {
  return absl::StrCat("\"", absl::CHexEscape(text), "\"");
}

void Check(absl::string_view text) {
  const absl::StatusOr<absl::Duration> parsed = cli::ParseDuration(text);
  absl::Duration duration;
  std::string why;
  const bool ok = cli::ParseDuration(text, &duration, &why);
  FUZZ_CHECK(ok == parsed.ok(), Show(text));
  if (!ok) {
    FUZZ_CHECK(
        absl::IsInvalidArgument(parsed.status()) &&
            absl::StrContains(parsed.status().message(), absl::CEscape(text)) &&
            !why.empty(),
        absl::StrCat(Show(text), ": ", parsed.status().ToString()));
    return;
  }
  FUZZ_CHECK(*parsed == duration, Show(text));
  FUZZ_CHECK(duration >= absl::ZeroDuration(),
             absl::StrCat(Show(text), " -> ", absl::FormatDuration(duration)));
  const std::string printed = absl::FormatDuration(duration);
  const absl::StatusOr<absl::Duration> again = cli::ParseDuration(printed);
  FUZZ_CHECK(again.ok() && *again == duration,
             absl::StrCat(Show(text), " -> ", printed, " -> ",
                          again.ok() ? absl::FormatDuration(*again)
                                     : again.status().ToString()));
}

}  // namespace
}  // namespace onlyone::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  onlyone::fuzz::Check(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
