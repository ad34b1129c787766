// Whether flock(2) locks on a path can be trusted to exclude every process
// that may use the path, from the mount it is on (/proc/self/mountinfo).
// Where they cannot, a kernel lock may exclude only the processes of this
// machine, or nobody, while looking held: use a SoftFileLock
// (lib/soft_file_lock.h) there. The onlyone command warns with it.
//
// Example:
//   absl::StatusOr<onlyone::FlockTrust> trust =
//       onlyone::CheckFlockTrust("/mnt/share/nightly.lock");
//   if (trust.ok() && !trust->trusted) {
//     std::cerr << "warning: " << trust->reason << "\n";
//   }
//
// Untrusted (each with the reason it gives):
//  * FUSE filesystems (fuse, fuse.*, fuseblk) and virtiofs: the kernel
//    keeps flock(2) locks for this machine unless the daemon implements
//    them, so other machines sharing the data (sshfs, s3fs, glusterfs...)
//    are not excluded;
//  * NFS (nfs, nfs4) mounted with nolock or local_lock=flock|all: locks are
//    local to this client;
//  * CIFS/SMB (cifs, smb3) mounted with nobrl: locks are not sent to the
//    server;
//  * Lustre mounted with localflock, GFS2 and OCFS2 mounted with
//    localflocks: flock(2) is local to this node.
// Everything else is trusted, which includes NFS with local_lock=none
// (flock(2) becomes a whole-file byte-range lock on the server).
//
// Thread safety: the functions are thread-safe.

#ifndef ONLYONE_LIB_FLOCK_TRUST_H_
#define ONLYONE_LIB_FLOCK_TRUST_H_

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace onlyone {

struct FlockTrust {
  bool trusted = true;
  // As mountinfo names them: "fuse.sshfs", "/mnt/share".
  std::string filesystem_type;
  std::string mount_point;
  // Why flock(2) cannot be trusted there, naming the type and the option;
  // empty when trusted.
  std::string reason;
};

// The mount of `path` (or of its directory when `path` does not exist yet),
// judged as above. NotFound when neither exists; Internal when
// /proc/self/mountinfo cannot be read or does not list the device.
[[nodiscard]] absl::StatusOr<FlockTrust> CheckFlockTrust(
    absl::string_view path);

// Whether `path`'s filesystem (or its directory's, when `path` does not
// exist yet) is of a kind listed above as possibly untrusted, from one
// statfs(2) and without reading mountinfo: a cheap first look for a caller
// that only wants to warn (the onlyone command does it on every run). true
// when it cannot tell, so that CheckFlockTrust() has the last word.
bool FlockTrustNeedsChecking(absl::string_view path);

// One line of a mountinfo file, judged; nullopt when it is malformed.
std::optional<FlockTrust> FlockTrustOfMountInfoLine(absl::string_view line);

// The mount with device `device` in `mountinfo` (a mountinfo file's text)
// whose mount point is the longest prefix of `canonical_path` (the last one
// listed when none is); nullopt when no line has the device.
std::optional<FlockTrust> FlockTrustInMountInfo(
    absl::string_view mountinfo, dev_t device,
    absl::string_view canonical_path);

}  // namespace onlyone

#endif  // ONLYONE_LIB_FLOCK_TRUST_H_
