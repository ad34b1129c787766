#include "onlyone/internal/soft_lock_record.h"

#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "onlyone/internal/instance_process.h"

namespace onlyone::internal {

std::string EncodeSoftLockRecord(const SoftLockRecord& record) {
  EncodedIdentity identity = EncodeIdentity(record.owner);
  // The nonce is hex and the namespace digits: nothing to escape.
  const std::string extra =
      absl::StrCat("nonce=", record.nonce, "\npid_namespace=",
                   record.pid_namespace, "\n");
  identity.hash = Fnv1a64(extra, identity.hash);
  identity.lines += extra;
  return EncodeOwnerRecord(identity, record.owner.acquired_at);
}

std::optional<SoftLockRecord> DecodeSoftLockRecord(
    absl::string_view contents) {
  std::optional<OwnerRecord> owner = DecodeOwnerRecord(contents);
  if (!owner.has_value()) return std::nullopt;
  // DecodeOwnerRecord checked the header, so the body is the header's length
  // of bytes after its newline.
  const size_t newline = contents.find('\n');
  const std::vector<absl::string_view> header =
      absl::StrSplit(contents.substr(0, newline), ' ');
  size_t length = 0;
  if (header.size() != 4 || !absl::SimpleAtoi(header[2], &length)) {
    return std::nullopt;
  }
  SoftLockRecord record;
  record.owner = *std::move(owner);
  for (absl::string_view line :
       absl::StrSplit(contents.substr(newline + 1, length), '\n',
                      absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&line, "nonce=")) {
      record.nonce = std::string(line);
    } else if (absl::ConsumePrefix(&line, "pid_namespace=")) {
      if (!absl::SimpleAtoi(line, &record.pid_namespace)) return std::nullopt;
    }
  }
  if (record.nonce.empty()) return std::nullopt;
  return record;
}

bool LooksLikeSoftLockRecord(absl::string_view contents) {
  return absl::StartsWith(contents, absl::StrCat(kRecordMagic, " "));
}

uint64_t SelfPidNamespace() {
  struct stat namespace_file;
  if (stat("/proc/self/ns/pid", &namespace_file) != 0) return 0;
  return namespace_file.st_ino;
}

std::string NewNonce() {
  unsigned char bytes[16];
  size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      // No entropy source at all: pid and time still make the nonce unique
      // among this host's processes, which is what the lock relies on.
      return absl::StrCat(absl::Hex(getpid(), absl::kZeroPad8),
                          absl::Hex(absl::ToUnixNanos(absl::Now()),
                                    absl::kZeroPad16),
                          "00000000");
    }
    got += n;
  }
  std::string hex;
  for (unsigned char byte : bytes) {
    absl::StrAppend(&hex, absl::Hex(byte, absl::kZeroPad2));
  }
  return hex;
}

SoftLockRecord SelfSoftLockRecord(absl::string_view nonce,
                                  absl::Time acquired_at) {
  SoftLockRecord record;
  record.owner = SelfRecord(geteuid());
  record.owner.acquired_at = acquired_at;
  record.nonce = std::string(nonce);
  // A fork()ed child's pid namespace is its parent's unless it unshared
  // one; read each time (one stat) rather than cache and be wrong.
  record.pid_namespace = SelfPidNamespace();
  return record;
}

}  // namespace onlyone::internal
