#include "cli/duration.h"

#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace onlyone::cli {
namespace {

constexpr char kAcceptedForms[] =
    "use seconds (\"30\", \"0.5\") or a number with a unit ms, s, m or h "
    "(\"250ms\", \"90s\", \"1.5m\", \"2h\", \"1h30m\"), or \"inf\"";

bool Fail(absl::string_view reason, std::string* why) {
  *why = absl::StrCat(reason, "; ", kAcceptedForms);
  return false;
}

// Digits with at most one '.', and at least one digit.
bool IsPlainNumber(absl::string_view text) {
  bool digit = false;
  int dots = 0;
  for (char c : text) {
    if (absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      digit = true;
    } else if (c == '.') {
      ++dots;
    } else {
      return false;
    }
  }
  return digit && dots <= 1;
}

}  // namespace

bool ParseDuration(absl::string_view text, absl::Duration* duration,
                   std::string* why) {
  const absl::string_view trimmed = absl::StripAsciiWhitespace(text);
  if (trimmed.empty()) return Fail("it is empty", why);
  if (trimmed.front() == '-') return Fail("it is negative", why);
  if (IsPlainNumber(trimmed)) {
    double seconds;
    if (!absl::SimpleAtod(trimmed, &seconds) || !std::isfinite(seconds)) {
      return Fail("not a number", why);
    }
    *duration = absl::Seconds(seconds);
    return true;
  }
  absl::Duration parsed;
  if (!absl::ParseDuration(trimmed, &parsed)) {
    return Fail("not a duration", why);
  }
  if (parsed < absl::ZeroDuration()) return Fail("it is negative", why);
  *duration = parsed;
  return true;
}

absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text) {
  absl::Duration duration;
  std::string why;
  if (!ParseDuration(text, &duration, &why)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid duration \"", absl::CEscape(text), "\": ", why));
  }
  return duration;
}

}  // namespace onlyone::cli
