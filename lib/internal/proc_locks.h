// Asks the kernel who holds a flock(2) lock on a file, by reading
// /proc/locks, so that a refusal can say "held by pid 4711 (backup.sh)"
// even when the holder is flock(1) or a Python program that wrote no record.
//
// What the kernel reports, and its limits:
//  * the pid is the process that took the lock; after a fork hand-off that
//    process may have exited while a child keeps the lock alive (and the pid
//    may have been reused since). /proc/PID/fdinfo tells who holds it now:
//    every descriptor on a locked open file description lists the lock
//    ("lock:" lines), so ProcessesHoldingFlockOn() finds the processes that
//    inherited it;
//  * a holder in another pid namespace is reported with the pid it has in
//    /proc's namespace (0 when it has none there);
//  * /proc may be missing or hide other users' entries; then the list is
//    empty and callers fall back to saying only that the lock is held.
//
// Thread safety: the functions are thread-safe; they read /proc each call.

#ifndef ONLYONE_LIB_INTERNAL_PROC_LOCKS_H_
#define ONLYONE_LIB_INTERNAL_PROC_LOCKS_H_

#include <sys/types.h>

#include <optional>
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

// Same, but nullopt when /proc/locks cannot be read, so that "nobody" and
// "not known" differ.
std::optional<std::vector<FlockHolder>> ReadFlockHolders(dev_t device,
                                                         ino_t inode);

// Same, parsing `proc_locks_text` instead of reading /proc/locks (for tests).
// Also parses /proc/PID/fdinfo/FD text, whose "lock:" lines list the locks
// of that descriptor's open file description in the same format.
std::vector<FlockHolder> ParseFlockHolders(absl::string_view proc_locks_text,
                                           dev_t device, ino_t inode);

// Whether process `pid` has a descriptor open on an open file description
// that holds a flock(2) lock on the file (device, inode), as its
// /proc/PID/fdinfo shows ("lock:" lines): false for a process that has
// exited (a zombie has no descriptors) or closed its copy; nullopt when
// /proc does not let us see its descriptors (another user's process,
// without privilege).
std::optional<bool> ProcessHoldsFlockOn(pid_t pid, dev_t device, ino_t inode);

// A live process that holds a flock(2) lock on a file through one of its
// descriptors.
struct FlockHoldingProcess {
  pid_t pid = 0;
  // The pids /proc/locks gives the locks it holds there: the processes that
  // took them (itself, or the process it inherited the descriptor from).
  std::vector<pid_t> locker_pids;
};

// Every process /proc shows holding a flock(2) lock on the file (device,
// inode), in /proc's order (ascending pids), found by reading every
// process's /proc/PID/fdinfo: the same test as ProcessHoldsFlockOn(), for
// all of them. Processes whose fdinfo we may not read (another user's,
// without privilege) are not seen. It reads a file per open descriptor of
// the machine (of the pid namespace, in a container), so it is for
// messages, never for a lock's fast path.
std::vector<FlockHoldingProcess> ProcessesHoldingFlockOn(dev_t device,
                                                         ino_t inode);

// Whether /proc is the initial pid namespace's (read once). Only there does
// /proc/locks list every lock: in a pid namespace (a container, a sandbox)
// it leaves out a lock whose taker has exited or is not in the namespace,
// although processes there may hold it (they inherited it); fdinfo still
// shows those, with pid 0 for the taker.
bool InInitialPidNamespace();

// /proc/PID/cmdline as arguments, at most `limit` bytes of it (the last
// argument may be cut); empty when unreadable or empty (a zombie, a kernel
// thread). The arguments are whatever the process chose.
std::vector<std::string> ProcessCommandLine(pid_t pid, size_t limit = 4096);

// Returns /proc/PID/comm without its newline, or "" if unreadable. The name
// is whatever the process chose, control characters included.
std::string ProcessName(pid_t pid);

// Describes the holders for a message: "pid 4711 (backup.sh)" or
// "pids 10 (a), 11 (b)"; "" when the list is empty. The names are made
// Printable() (lib/internal/printable.h).
std::string DescribeHolders(const std::vector<FlockHolder>& holders);

// Same, with names[i] the ProcessName() of holders[i], already read.
std::string DescribeHolders(const std::vector<FlockHolder>& holders,
                            const std::vector<std::string>& names);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_PROC_LOCKS_H_
