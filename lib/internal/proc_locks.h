// Asks the kernel who holds a flock(2) lock on a file, by reading
// /proc/locks, so that a refusal can say "held by pid 4711 (backup.sh)"
// even when the holder is flock(1) or a Python program that wrote no record.
//
// What the kernel reports, and its limits:
//  * the pid is the process that took the lock; after a fork hand-off that
//    process may have exited while a child keeps the lock alive;
//  * a holder in another pid namespace is reported with the pid it has in
//    /proc's namespace (0 when it has none there);
//  * /proc may be missing or hide other users' entries; then the list is
//    empty and callers fall back to saying only that the lock is held.
//
// Thread safety: the functions are thread-safe; they read /proc each call.

#ifndef ONLYONE_LIB_INTERNAL_PROC_LOCKS_H_
#define ONLYONE_LIB_INTERNAL_PROC_LOCKS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace onlyone::internal {

struct FlockHolder {
  pid_t pid = 0;
  bool exclusive = false;
};

// Returns the granted (not waiting) flock(2) holders of the file with the
// given device and inode, in the order /proc/locks lists them.
std::vector<FlockHolder> FlockHolders(dev_t device, ino_t inode);

// Same, parsing `proc_locks_text` instead of reading /proc/locks (for tests).
// Also parses /proc/PID/fdinfo/FD text, whose "lock:" lines list the locks
// of that descriptor's open file description in the same format.
std::vector<FlockHolder> ParseFlockHolders(absl::string_view proc_locks_text,
                                           dev_t device, ino_t inode);

// Whether process `pid` has a descriptor open on an open file description
// that holds a flock(2) lock on the file (device, inode), as its
// /proc/PID/fdinfo shows ("lock:" lines). False when /proc does not let us
// see (another user's process, without privilege).
bool ProcessHoldsFlockOn(pid_t pid, dev_t device, ino_t inode);

// Returns /proc/PID/comm without its newline, or "" if unreadable. The name
// is whatever the process chose, control characters included.
std::string ProcessName(pid_t pid);

// Describes the holders for a message: "pid 4711 (backup.sh)" or
// "pids 10 (a), 11 (b)"; "" when the list is empty. The names are made
// Printable() (lib/internal/printable.h).
std::string DescribeHolders(const std::vector<FlockHolder>& holders);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_PROC_LOCKS_H_
