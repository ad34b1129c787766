// The home of HolderInfo (public through lib/lock_holder.h, which states
// its contract): who holds a lock that could not be taken, and the payload
// that carries it on the refusal's status. Here, below the backends and
// SingleInstance's internals, so that internals need no public header.
//
// Example:
//   absl::Status refusal = absl::UnavailableError("/run/lock/x is held");
//   onlyone::AttachHolder(refusal, holder);
//   std::optional<onlyone::HolderInfo> again =
//       onlyone::HolderFromStatus(refusal);  // == holder
//
// Thread safety: plain values; the functions are thread-safe.

#ifndef ONLYONE_LIB_INTERNAL_HOLDER_INFO_H_
#define ONLYONE_LIB_INTERNAL_HOLDER_INFO_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace onlyone {

// One holder, as far as the backend can tell.
struct LockHolderProcess {
  // 0 when the holder is not visible (another pid namespace, a remote host
  // that gave none).
  pid_t pid = 0;
  bool exclusive = true;
  // What the process calls itself (/proc/PID/comm), as the process chose it:
  // make it Printable() before showing it. "" when unknown.
  std::string name;
  // Where it runs, for backends whose holders may be on other hosts; ""
  // for a local lock.
  std::string host;
};

struct HolderInfo {
  // The lock, as the refusal's message names it.
  std::string resource;
  // Whether the backend could list the holders (for a file lock:
  // /proc/locks was readable). When false `holders` is empty and all that
  // is known is that the lock is held.
  bool holders_known = false;
  // In the backend's order (for a file lock, /proc/locks's).
  std::vector<LockHolderProcess> holders;
  // For a file lock: the locked file's st_dev and st_ino, so that a later
  // look can tell the file it reads is the one the holders hold. 0 for
  // other backends.
  uint64_t device = 0;
  uint64_t inode = 0;
};

// The holder a refusal carries; nullopt when `status` carries none (it is
// OK, or it failed for another reason than the lock being held).
std::optional<HolderInfo> HolderFromStatus(const absl::Status& status);

// For backends: attaches `holder` to the refusal `status` (not OK).
void AttachHolder(absl::Status& status, const HolderInfo& holder);

}  // namespace onlyone

#endif  // ONLYONE_LIB_INTERNAL_HOLDER_INFO_H_
