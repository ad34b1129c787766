// RetryOnEintr: one place for the "call again after EINTR" rule, in the
// spirit of Chromium's HANDLE_EINTR, instead of a hand-written loop at every
// system call that a signal may interrupt.
//
// Example:
//   const ssize_t got = RetryOnEintr([&] { return read(fd, buffer, size); });
//   if (got < 0) return PosixError("read", errno);  // never EINTR here
//
// Not for close(2) (on Linux the descriptor is gone even when it reports
// EINTR, so a retry could close another thread's new descriptor), and not
// for waits whose timeout must shrink as time passes (poll(2) with a
// deadline recomputes its timeout in its own loop).
//
// Thread safety: as the call it wraps.

#ifndef ONLYONE_LIB_INTERNAL_RETRY_H_
#define ONLYONE_LIB_INTERNAL_RETRY_H_

#include <cerrno>

namespace onlyone::internal {

// Calls `call` (which returns -1 and sets errno on failure, as system calls
// do) until it does not fail with EINTR; returns its last result, errno
// left as that call set it.
template <typename Call>
auto RetryOnEintr(Call call) -> decltype(call()) {
  for (;;) {
    const auto result = call();
    if (result != -1 || errno != EINTR) return result;
  }
}

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_RETRY_H_
