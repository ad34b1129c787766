// RunExclusive and Exclusive: run a function while holding a lock (a
// ScopedFileLock, or any backend's through lib/lock_backend.h), the way a
// Python decorator such as fasteners.interprocess_locked does.
//
// Example:
//   // Once:
//   absl::StatusOr<int> rows = onlyone::RunExclusive(
//       "/var/lock/import.lock", {}, ImportRows, "/data/today.csv");
//
//   // At every call:
//   auto compact = onlyone::Exclusive("/var/lock/compact.lock", {}, Compact);
//   absl::Status status = compact();  // Compact returns void here
//
// Contract: the lock is acquired before `fn` runs and released after it
// returns or throws. When the lock cannot be acquired, `fn` does not run and
// the acquisition's status is returned. When `fn` itself returns an
// absl::Status or absl::StatusOr, RunExclusive returns it unchanged (no extra
// wrapping), so that errors compose. Thread safety is that of
// ScopedFileLock::Acquire: an Exclusive callable may be called from several
// threads at once, and the calls then run one at a time.
//
// A release failure after `fn` succeeded is returned in place of fn's
// result, because the caller asked for exclusion and should hear that the
// lock file misbehaved.

#ifndef ONLYONE_LIB_EXCLUSIVE_H_
#define ONLYONE_LIB_EXCLUSIVE_H_

#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "onlyone/lock_backend.h"
#include "onlyone/scoped_file_lock.h"

namespace onlyone {
namespace exclusive_internal {

template <typename T>
struct IsStatusOr : std::false_type {};
template <typename T>
struct IsStatusOr<absl::StatusOr<T>> : std::true_type {};

// What RunExclusive returns for a function returning R.
template <typename R>
using Result = std::conditional_t<
    std::is_void_v<R> || std::is_same_v<R, absl::Status>, absl::Status,
    std::conditional_t<IsStatusOr<R>::value, R, absl::StatusOr<R>>>;

// Runs fn(args...) while `lock` (a ScopedFileLock or a HeldLock) is held,
// then releases it.
template <typename Lock, typename Fn, typename... Args>
auto RunHolding(Lock& lock, Fn&& fn, Args&&... args)
    -> Result<std::invoke_result_t<Fn, Args...>> {
  using R = std::invoke_result_t<Fn, Args...>;
  if constexpr (std::is_void_v<R>) {
    std::invoke(std::forward<Fn>(fn), std::forward<Args>(args)...);
    return lock.Release();
  } else {
    Result<R> result =
        std::invoke(std::forward<Fn>(fn), std::forward<Args>(args)...);
    absl::Status released = lock.Release();
    if (result.ok() && !released.ok()) return released;
    return result;
  }
}

// Through a backend: fn may take the lock's lost() token as its first
// argument, to stop when the lock is lost (a lease not renewed in time).
template <typename Fn, typename... Args>
auto RunHoldingLock(HeldLock& lock, Fn&& fn, Args&&... args) {
  if constexpr (std::is_invocable_v<Fn, const CancellationToken&, Args...>) {
    const CancellationToken lost = lock.lost();
    return RunHolding(
        lock,
        [&fn, &lost](auto&&... rest) {
          return std::invoke(std::forward<Fn>(fn), lost,
                             std::forward<decltype(rest)>(rest)...);
        },
        std::forward<Args>(args)...);
  } else {
    return RunHolding(lock, std::forward<Fn>(fn), std::forward<Args>(args)...);
  }
}

// What fn returns when called as RunHoldingLock calls it.
template <typename Fn, typename... Args>
using LockResult =
    decltype(RunHoldingLock(std::declval<HeldLock&>(), std::declval<Fn>(),
                            std::declval<Args>()...));

}  // namespace exclusive_internal

// Runs fn(args...) while holding the lock at `path` (the file backend of
// lib/lock_backend.h, with `options`' file choices). Returns absl::Status
// when fn returns void or absl::Status, fn's StatusOr when it returns one,
// and absl::StatusOr<R> otherwise.
template <typename Fn, typename... Args>
[[nodiscard]] auto RunExclusive(absl::string_view path,
                                const LockOptions& options, Fn&& fn,
                                Args&&... args)
    -> exclusive_internal::Result<std::invoke_result_t<Fn, Args...>> {
  const std::unique_ptr<LockBackend> files = NewFileLockBackend(options);
  absl::StatusOr<std::unique_ptr<HeldLock>> lock =
      files->Acquire(path, options);
  if (!lock.ok()) return lock.status();
  return exclusive_internal::RunHolding(**lock, std::forward<Fn>(fn),
                                        std::forward<Args>(args)...);
}

// Same, with the lock named `resource` taken through `backend`. fn may take
// the lock's lost() token as its first argument (before args...), and then
// learns when the lock is lost while it runs.
template <typename Fn, typename... Args>
[[nodiscard]] auto RunExclusive(LockBackend& backend,
                                absl::string_view resource,
                                const AcquireOptions& options, Fn&& fn,
                                Args&&... args)
    -> exclusive_internal::LockResult<Fn, Args...> {
  absl::StatusOr<std::unique_ptr<HeldLock>> lock =
      backend.Acquire(resource, options);
  if (!lock.ok()) return lock.status();
  return exclusive_internal::RunHoldingLock(**lock, std::forward<Fn>(fn),
                                            std::forward<Args>(args)...);
}

// Wraps fn so that each call runs it under the lock at `path`, as
// RunExclusive(path, options, fn, args...) would.
template <typename Fn>
[[nodiscard]] auto Exclusive(absl::string_view path, LockOptions options,
                             Fn fn) {
  return [path = std::string(path), options = std::move(options),
          fn = std::move(fn)](auto&&... args) mutable {
    return RunExclusive(path, options, fn,
                        std::forward<decltype(args)>(args)...);
  };
}

// Same, through `backend`, which must outlive the returned callable.
template <typename Fn>
[[nodiscard]] auto Exclusive(LockBackend& backend, absl::string_view resource,
                             AcquireOptions options, Fn fn) {
  return [&backend, resource = std::string(resource),
          options = std::move(options),
          fn = std::move(fn)](auto&&... args) mutable {
    return RunExclusive(backend, resource, options, fn,
                        std::forward<decltype(args)>(args)...);
  };
}

}  // namespace onlyone

#endif  // ONLYONE_LIB_EXCLUSIVE_H_
