// The record of a soft lock (lib/soft_file_lock.h): who holds it, written
// into the lock file before the file is linked into place, so that a lock
// file never appears without its record (on a local filesystem; see the
// garbage rule in docs/design.md for NFS, where another client may read the
// file before the holder's write reaches the server).
//
// It is an owner record (lib/internal/instance_record.h: header line with
// length and FNV-1a checksum, "key=value" lines naming pid, start ticks,
// boot id, host, uid, command line and the time the lock was taken) with two
// more keys:
//   nonce=9f3c...        128 random bits, hex: this acquisition and no other
//   pid_namespace=4026531836
//                        the inode of the holder's pid namespace
//                        (/proc/self/ns/pid): a pid is checked in /proc only
//                        when the holder's boot and pid namespace are ours
// Older readers of owner records ignore the two keys.
//
// Thread safety: the functions are thread-safe.

#ifndef ONLYONE_LIB_INTERNAL_SOFT_LOCK_RECORD_H_
#define ONLYONE_LIB_INTERNAL_SOFT_LOCK_RECORD_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "onlyone/internal/instance_record.h"

namespace onlyone::internal {

struct SoftLockRecord {
  OwnerRecord owner;
  std::string nonce;
  // 0 when unknown (then the pid is never checked in /proc).
  uint64_t pid_namespace = 0;
};

// The record as file contents.
std::string EncodeSoftLockRecord(const SoftLockRecord& record);

// Parses file contents; nullopt when they are not a valid record (see
// DecodeOwnerRecord) or lack a nonce.
std::optional<SoftLockRecord> DecodeSoftLockRecord(absl::string_view contents);

// Whether `contents` starts like a record (the header's magic word): a file
// that does not is someone's data, never treated as a lock.
bool LooksLikeSoftLockRecord(absl::string_view contents);

// The inode of this process's pid namespace; 0 when /proc does not tell.
uint64_t SelfPidNamespace();

// 128 random bits from getrandom(2), as 32 hex digits.
std::string NewNonce();

// This process's record for an acquisition at `acquired_at` with `nonce`.
SoftLockRecord SelfSoftLockRecord(absl::string_view nonce,
                                  absl::Time acquired_at);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_SOFT_LOCK_RECORD_H_
