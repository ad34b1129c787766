// The owner record: who holds a SingleInstance lock, written into the lock
// file by the holder right after it took the lock.
//
// The kernel lock is the truth; the record only describes the holder. A
// record is believed only when the lock is held and the recorded process is
// still the same process (see SingleInstance), so a record left behind by a
// dead holder, or one naming a pid that was reused, is never mistaken for a
// running copy.
//
// Format (version 1). The file starts with one header line, then the body:
//
//   onlyone-owner 1 <body length> <FNV-1a 64 of the body, 16 hex digits>\n
//   <body: exactly <body length> bytes>
//
// and anything after the body is ignored. The body is "key=value\n" lines:
//
//   pid=4711                  the holder (the process that wrote the record)
//   locker_pid=4711           the process that took the lock, which is the
//                             pid /proc/locks shows; differs from pid after a
//                             fork hand-off (ScopedFileLock::HandOffOnFork)
//   start_ticks=123456        the holder's start time, field 22 of
//                             /proc/PID/stat (clock ticks since boot): with
//                             boot_id, what identifies the process exactly
//   start_time=2026-11-22T03:00:01.250000+00:00
//                             the same as wall-clock time (RFC 3339, UTC,
//                             six fraction digits)
//   boot_id=0f8e...           /proc/sys/kernel/random/boot_id
//   hostname=build-7
//   uid=1000                  effective uid
//   user=alice                its name, empty when unknown
//   exe=/usr/bin/backup       /proc/self/exe
//   arg=/usr/bin/backup       one line per argument, in order; at most
//   arg=--full                kMaxCommandLineBytes bytes in all
//   args_truncated=1          present when arguments were cut off
//   version=0.1.0             the onlyone release (lib/version.h)
//   acquired=2026-11-22T03:00:01.310000+00:00   when the lock was taken
//
// Writers put the lines in this order, "acquired" last: everything before it
// describes the process and is encoded (and hashed) once per process, so
// that a record costs one short line and its hash per acquisition. Readers
// accept the keys in any order.
// Values escape '\' as "\\", newline as "\n", carriage return as "\r", tab
// as "\t" and other bytes below 0x20 and 0x7f as "\xHH"; other bytes
// (including UTF-8) are written as they are. pid, start_ticks and boot_id
// are required; unknown keys are ignored, so later versions may add keys.
//
// Consistency: the holder writes the whole record with one pwrite(2) at
// offset 0, then ftruncate(2)s the file to the record's length if it was
// longer (only the holder ever truncates its lock file, and only an earlier
// record's tail; nobody deletes it).
// A reader reads the file, checks the header, the length and the checksum,
// and retries a few times when they do not match (it caught a write half
// done); after that it treats the file as holding no record. So a reader
// sees the old record or the new one, never a mix.
//
// Thread safety: the functions are thread-safe.

#ifndef ONLYONE_LIB_INTERNAL_INSTANCE_RECORD_H_
#define ONLYONE_LIB_INTERNAL_INSTANCE_RECORD_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "onlyone/internal/instance_info.h"

namespace onlyone::internal {

inline constexpr char kRecordMagic[] = "onlyone-owner";
inline constexpr int kRecordFormatVersion = 1;
// Bounds the recorded command line (the sum of the arguments' lengths).
inline constexpr size_t kMaxCommandLineBytes = 4096;
// Readers reject longer bodies; writers stay far below it.
inline constexpr size_t kMaxRecordBodyBytes = 64 * 1024;

// The record's view of InstanceInfo: the fields from locker_pid on, and
// pid. Encoding ignores the others; decoding leaves them empty, except
// has_record.
using OwnerRecord = ::onlyone::InstanceInfo;

inline constexpr uint64_t kFnv1a64OffsetBasis = 0xcbf29ce484222325ull;

// FNV-1a, 64 bits, continuing from `hash` (the hash of what came before).
uint64_t Fnv1a64(absl::string_view bytes,
                 uint64_t hash = kFnv1a64OffsetBasis);

// A record's body lines up to (without) "acquired", and their hash.
struct EncodedIdentity {
  std::string lines;
  uint64_t hash = kFnv1a64OffsetBasis;
};

// `time` as records write it: RFC 3339 in UTC with six fraction digits,
// "2026-11-22T03:00:01.250000+00:00".
std::string FormatRecordTime(absl::Time time);

// The lines of `record` that describe the process (all but acquired_at).
EncodedIdentity EncodeIdentity(const OwnerRecord& record);

// The record as file contents, header line and body: `identity` followed by
// the "acquired" line (none when `acquired_at` is InfinitePast()).
std::string EncodeOwnerRecord(const EncodedIdentity& identity,
                              absl::Time acquired_at);

// Same, all at once.
std::string EncodeOwnerRecord(const OwnerRecord& record);

// Parses file contents; nullopt when the header, length or checksum do not
// match or a required key is missing or malformed.
std::optional<OwnerRecord> DecodeOwnerRecord(absl::string_view contents);

// Cuts `arguments` to at most kMaxCommandLineBytes bytes in all; returns
// whether anything was cut.
bool TruncateCommandLine(std::vector<std::string>& arguments);

// Reads the record of the lock file open on `fd` (readable), retrying a
// torn read a bounded number of times; nullopt when there is no valid
// record.
std::optional<OwnerRecord> ReadOwnerRecord(int fd);

// Whether an owner record may be written into the lock file open on `fd`,
// whose status is `file`: when it is empty (and not a kernel interface such
// as a /proc or /sys file) or starts with an owner record's header. Any
// other file holds someone's data and is never written. Nor, for root, is
// another user's file that its mode does not open to root's group or to
// everyone: root could open it only by privilege.
[[nodiscard]] absl::StatusOr<bool> MayHoldOwnerRecord(int fd,
                                                      absl::string_view path,
                                                      const struct stat& file);

// Where a lock file is: in one of onlyone's own private directories (the
// user and session scopes: made by onlyone, mode 0700, so nobody but this
// user's onlyone puts files there), or anywhere else (the machine scope's
// shared directory, an explicit directory, a path given by the caller),
// where a file may hold someone's data.
enum class LockFilePlace { kOwnPrivateDirectory, kElsewhere };

// Writes `contents` (EncodeOwnerRecord()) into the lock file open on `fd`;
// the caller holds the lock, and `file` is the file's status since it took
// it (ScopedFileLock::status_when_locked()). Refuses (FailedPrecondition,
// naming `path`) unless that is a regular file with exactly one link, so
// that a hard link planted in a shared directory never makes us write into
// another file; cuts off the rest of a longer old record. Returns false,
// writing nothing, when the descriptor is read-only (another user's lock
// file that we may lock but not write), or, for a file `kElsewhere`, when
// MayHoldOwnerRecord() says no. A file in onlyone's own private directory
// is not read first: only onlyone writes there, and the read is a system
// call on every acquisition.
[[nodiscard]] absl::StatusOr<bool> WriteOwnerRecord(int fd,
                                                    absl::string_view path,
                                                    absl::string_view contents,
                                                    const struct stat& file,
                                                    LockFilePlace place);

// Same for `record`, with the file's status from fstat(2) now.
[[nodiscard]] absl::StatusOr<bool> WriteOwnerRecord(int fd,
                                                    absl::string_view path,
                                                    const OwnerRecord& record,
                                                    LockFilePlace place);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_INSTANCE_RECORD_H_
