// What every lock request says, whatever the backend: the mode, how long to
// wait and what may cancel the wait. Backend-specific choices live in the
// backend's own options (FileLockOptions in lib/scoped_file_lock.h), so that
// no backend is ever handed a field it cannot honour.
//
// Example:
//   onlyone::AcquireOptions options;
//   options.timeout = absl::Seconds(30);  // ZeroDuration(): try once
//   options.cancellation = shutdown;      // a CancellationToken
//   auto lock = backend->Acquire("nightly", options);

#ifndef ONLYONE_LIB_LOCK_OPTIONS_H_
#define ONLYONE_LIB_LOCK_OPTIONS_H_

#include <optional>

#include "absl/time/time.h"
#include "onlyone/cancellation.h"

namespace onlyone {

enum class LockMode { kExclusive, kShared };

struct AcquireOptions {
  // Exclusive: one holder. Shared: any number of shared holders, and no
  // exclusive holder while they hold it. A backend without shared holders
  // refuses kShared with InvalidArgument.
  LockMode mode = LockMode::kExclusive;

  // How long Acquire() may wait. ZeroDuration() tries once;
  // InfiniteDuration() waits until the lock is free.
  absl::Duration timeout = absl::InfiniteDuration();

  // When set, cancelling the token makes a waiting Acquire() return
  // Cancelled promptly. (It does not stop an acquisition that needs no
  // wait.)
  std::optional<CancellationToken> cancellation;
};

}  // namespace onlyone

#endif  // ONLYONE_LIB_LOCK_OPTIONS_H_
