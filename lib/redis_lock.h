// RedisLock: a lock shared by every host that uses the same Redis server, as
// a lease with a fencing token. The lease is renewed while the lock is held;
// when it cannot be renewed in time, held() turns false and lost() is
// cancelled, so the work it guards can stop. Waiters are woken by the
// release (pub/sub) or, when the holder died, at the moment its lease ends;
// they never poll the server.
//
// Example:
//   onlyone::RedisLockOptions options;
//   options.server = "redis://jobs@redis.internal:6379/2";  // password: see below
//   options.lease = absl::Seconds(30);
//   absl::StatusOr<onlyone::RedisLock> lock =
//       onlyone::RedisLock::Acquire("nightly-import", options);
//   if (!lock.ok()) return lock.status();  // names the lock and its holder
//   // Give the token to what you protect; it refuses older ones.
//   absl::Status done = ImportInto(database, lock->fencing_token(),
//                                  /*stop=*/lock->lost());
//   absl::Status released = lock->Release();
//
// Contract:
//  * Acquire(name, options): `name` is any non-empty string of at most 1000
//    bytes without control characters (InvalidArgument otherwise); the lease
//    must be at least 50 ms. options.timeout ZeroDuration() tries once:
//    Unavailable naming the lock and its holder (host, pid, since, command)
//    when held; a finite timeout waits at most that long (DeadlineExceeded,
//    naming the lock and holder); InfiniteDuration() waits until it is
//    free. options.cancellation makes a waiting Acquire() return Cancelled
//    at once. A bad URL is InvalidArgument; a server that cannot be reached
//    is Unavailable naming the server, after at most options.io_timeout
//    (or the acquisition timeout, if shorter): never a hang. A server that
//    refuses the login is PermissionDenied.
//  * Blocking: a waiter subscribes to the lock's release channel and sends
//    no command while it waits; it tries again when a release is published
//    and when the lease it last saw ends (a holder that died; a live holder
//    has extended it by then, so that is one try per lease), and it
//    reconnects if its connection breaks (or returns Unavailable when the
//    server is gone). It uses no CPU while it waits.
//  * Holding: a process-wide thread renews the lease every lease/3 with a
//    compare-and-extend script. held() is true only while the last confirmed
//    renewal (or the acquisition) plus the lease, less a safety margin of
//    lease/10, lies in the future on this host's monotonic clock, and the
//    server has not refused a renewal. When that ends, held() is false and
//    lost() is cancelled: a refused renewal (the lock expired or was taken
//    over, the server lost its data), a failed one (the server unreachable,
//    after one reconnection), or no confirmed renewal before the safety
//    deadline (this process stopped, a slow server). Never only logged.
//  * fencing_token(): strictly increasing per name across all holders of
//    the same server, also across a server restart that lost its data (a
//    name's first token is the server's clock in microseconds), provided
//    the server's clock does not go back. Pass it along with every write to
//    the protected resource, which must remember the highest token it has
//    seen and refuse smaller ones: that is what keeps a holder whose lease
//    expired under a pause from doing harm (docs/design.md, "Redis lock").
//  * Release(): deletes the lock only if it still carries this holder's
//    token (compare-and-delete, which publishes the release), so it never
//    deletes another holder's lock. Idempotent: later calls return OK.
//    Aborted when the lock had already been lost (expired, taken over);
//    Unavailable when the server cannot be reached (the lease then ends on
//    its own). The destructor releases a held lock, ignoring the status.
//  * fork(): the child's copy is not held; its Release() and destructor do
//    nothing. exec(): the lock is not passed on (the connection is
//    close-on-exec, and the renewal thread is gone).
//  * Passwords: from the URL ("redis://user:password@host"), or, when the
//    URL has none, from the file options.password_file, the file named by
//    $ONLYONE_REDIS_PASSWORD_FILE, or $ONLYONE_REDIS_PASSWORD, in that
//    order. Messages never contain it.
//  * Thread safety: Acquire() and the free functions from any thread; one
//    RedisLock is used by one thread at a time; lost() from any thread.
//    Connections are pooled per process and server, never shared by two
//    threads at once nor across fork().
//
// Keys on the server: "onlyone:lock:NAME" (the holder: token, host, pid,
// since, command; expires with the lease), "onlyone:token:NAME" (the token
// counter; kept), and the pub/sub channel "onlyone:released:NAME".

#ifndef ONLYONE_LIB_REDIS_LOCK_H_
#define ONLYONE_LIB_REDIS_LOCK_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "onlyone/cancellation.h"

namespace onlyone {

namespace internal {
class RedisLockState;
}  // namespace internal

struct RedisLockOptions {
  // "redis://[user:password@]host:port[/db]" or "unix:///path/to/redis.sock"
  // (optionally "?db=N").
  std::string server = "redis://127.0.0.1:6379";
  // How long the lock outlives its holder's last renewal; renewed every
  // lease/3 while held.
  absl::Duration lease = absl::Seconds(30);
  // How long Acquire() may wait: ZeroDuration() tries once.
  absl::Duration timeout = absl::InfiniteDuration();
  std::optional<CancellationToken> cancellation;

  // A file holding the password, when the URL has none (see Passwords).
  std::string password_file;
  // How long connecting, and each reply, may take before the server counts
  // as unreachable.
  absl::Duration io_timeout = absl::Seconds(5);
  // What the holder description says this holder runs; "" for this
  // process's command line.
  std::string command;
};

// Who holds a lock, as the holder described itself on the server.
struct RedisLockHolder {
  std::string name;
  uint64_t fencing_token = 0;
  std::string host;
  pid_t pid = 0;
  absl::Time since;     // when it acquired the lock
  std::string command;  // as the holder gave it; not checked
  absl::Duration lease_left;  // until the lock expires unless renewed

  // "pid 4242 on host db1 since 2026-12-01 23:40:00 UTC (command: ...),
  // fencing token 7", safe to print (terminal escapes shown as text).
  std::string Describe() const;
};

class RedisLock {
 public:
  [[nodiscard]] static absl::StatusOr<RedisLock> Acquire(
      absl::string_view name, const RedisLockOptions& options = {});

  RedisLock(RedisLock&& other) noexcept;
  RedisLock& operator=(RedisLock&& other) noexcept;
  RedisLock(const RedisLock&) = delete;
  RedisLock& operator=(const RedisLock&) = delete;
  ~RedisLock();

  // Idempotent; never deletes another holder's lock (see the contract).
  [[nodiscard]] absl::Status Release();
  // False once released, lost, or possibly expired; false in a fork child.
  bool held() const;
  // Strictly increasing per name, across all holders; 0 once moved from.
  uint64_t fencing_token() const;
  // Cancelled when the lock is lost while held (not by Release()).
  CancellationToken lost() const;
  // The lock's name, as given to Acquire().
  std::string name() const;
  // The server, as messages name it (never the password).
  std::string server() const;

 private:
  explicit RedisLock(std::shared_ptr<internal::RedisLockState> state);

  std::shared_ptr<internal::RedisLockState> state_;
};

// The holder of the lock `name` on options.server, or nullopt when it is
// free. Errors as for Acquire() (bad URL, unreachable server).
[[nodiscard]] absl::StatusOr<std::optional<RedisLockHolder>>
FindRedisLockHolder(absl::string_view name,
                    const RedisLockOptions& options = {});

// Every lock held on options.server, sorted by name (SCAN: a lock taken or
// released while listing may be missing or listed).
[[nodiscard]] absl::StatusOr<std::vector<RedisLockHolder>> ListRedisLocks(
    const RedisLockOptions& options = {});

}  // namespace onlyone

#endif  // ONLYONE_LIB_REDIS_LOCK_H_
