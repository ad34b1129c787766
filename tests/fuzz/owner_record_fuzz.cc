// Fuzz target: the owner record parser (lib/internal/instance_record.h),
// which reads whatever another process left in a lock file.
//
// The input is tried as a whole file, and as a body behind a header with the
// right length and checksum (mutated bodies rarely keep their checksum, and
// would otherwise never reach the body's parser).
//
// Properties: decoding any bytes is safe; a decoded record has the required
// keys (pid, locker_pid > 0, start_ticks, boot_id); encoding it again gives a
// record that decodes to the same and encodes to the same bytes (the
// canonical form is a fixed point); a record built from the input survives
// encode -> decode unchanged.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "onlyone/internal/instance_record.h"
#include "tests/fuzz/fuzz_support.h"

namespace onlyone::fuzz {
namespace {

using ::onlyone::internal::DecodeOwnerRecord;
using ::onlyone::internal::EncodeOwnerRecord;
using ::onlyone::internal::OwnerRecord;

std::string Show(absl::string_view bytes) {
  return absl::StrCat("\"", absl::CHexEscape(bytes), "\"");
}

// Field by field; times at the microseconds a record keeps.
bool SameRecord(const OwnerRecord& a, const OwnerRecord& b) {
  const auto micros = [](absl::Time time) {
    return time == absl::InfinitePast() || time == absl::InfiniteFuture()
               ? time
               : absl::FromUnixMicros(absl::ToUnixMicros(time));
  };
  return a.pid == b.pid && a.locker_pid == b.locker_pid &&
         a.start_ticks == b.start_ticks &&
         micros(a.process_start_time) == micros(b.process_start_time) &&
         a.boot_id == b.boot_id && a.hostname == b.hostname && a.uid == b.uid &&
         a.user == b.user && a.executable == b.executable &&
         a.command_line == b.command_line &&
         a.command_line_truncated == b.command_line_truncated &&
         micros(a.acquired_at) == micros(b.acquired_at) &&
         a.version == b.version;
}

// Years 1970 to 9999 at microsecond resolution (what the format writes as
// RFC 3339), or no time at all.
absl::Time TimeFrom(FuzzInput& input) {
  const uint64_t raw = input.Integer();
  if (raw % 8 == 0) return absl::InfinitePast();
  constexpr int64_t kYear10000Micros = 253402300800LL * 1000000;
  return absl::FromUnixMicros(static_cast<int64_t>(raw % kYear10000Micros));
}

void CheckDecoded(absl::string_view contents) {
  const std::optional<OwnerRecord> record = DecodeOwnerRecord(contents);
  if (!record.has_value()) return;
  FUZZ_CHECK(
      record->pid > 0 && record->locker_pid > 0 && !record->boot_id.empty(),
      Show(contents));
  const std::string encoded = EncodeOwnerRecord(*record);
  const std::optional<OwnerRecord> again = DecodeOwnerRecord(encoded);
  FUZZ_CHECK(again.has_value(),
             absl::StrCat(Show(contents), " re-encoded as ", Show(encoded)));
  FUZZ_CHECK(SameRecord(*record, *again),
             absl::StrCat(Show(contents), " re-encoded as ", Show(encoded)));
  FUZZ_CHECK(EncodeOwnerRecord(*again) == encoded,
             absl::StrCat(Show(encoded), " re-encoded as ",
                          Show(EncodeOwnerRecord(*again))));
}

// `body` behind a valid version 1 header.
std::string WithHeader(absl::string_view body) {
  return absl::StrCat(
      onlyone::internal::kRecordMagic, " ",
      onlyone::internal::kRecordFormatVersion, " ", body.size(), " ",
      absl::Hex(onlyone::internal::Fnv1a64(body), absl::kZeroPad16), "\n",
      body);
}

void CheckBuilt(FuzzInput input) {
  OwnerRecord record;
  record.pid = static_cast<pid_t>(1 + input.Integer() % 0x7ffffffe);
  record.locker_pid = static_cast<pid_t>(1 + input.Integer() % 0x7ffffffe);
  record.start_ticks = input.Integer();
  record.process_start_time = TimeFrom(input);
  record.boot_id = input.String(64);
  if (record.boot_id.empty()) record.boot_id = "b";
  record.hostname = input.String(64);
  record.uid = static_cast<uid_t>(input.Integer());
  record.user = input.String(32);
  record.executable = input.String(128);
  for (uint64_t count = input.Integer() % 8; count > 0; --count) {
    record.command_line.push_back(input.String(64));
  }
  record.command_line_truncated = input.Bool();
  record.acquired_at = TimeFrom(input);
  record.version = input.String(16);
  const std::string encoded = EncodeOwnerRecord(record);
  const std::optional<OwnerRecord> decoded = DecodeOwnerRecord(encoded);
  FUZZ_CHECK(decoded.has_value() && SameRecord(record, *decoded),
             Show(encoded));
}

}  // namespace
}  // namespace onlyone::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  onlyone::fuzz::CheckDecoded(bytes);
  onlyone::fuzz::CheckDecoded(onlyone::fuzz::WithHeader(bytes));
  onlyone::fuzz::CheckBuilt(onlyone::fuzz::FuzzInput(data, size));
  return 0;
}
