// The soft lock passes the LockBackend conformance suite
// (tests/backend_conformance.h) with real processes, on the test's own
// directory (tmpfs or ext4 under TEST_TMPDIR). Every case holds for it by
// nature: a killed holder on this host is provably gone (its pid has no
// process with the recorded start time), so its lock is broken by the next
// Acquire() at once, and a waiter is woken through inotify or the holder's
// pidfd, never by polling. The suite's holders are all on this host; the
// contract's one exception for this backend, a waiter for a holder on
// another host that looks again with backoff (no kernel tells it of another
// host's changes), is tested with planted records in soft_file_lock_test.
// soft_lock_fuse_conformance_test runs the same suite on a FUSE (bindfs)
// mount where one can be made.

#include <string>

#include "gtest/gtest.h"
#include "onlyone/soft_lock_backend.h"
#include "tests/backend_conformance.h"

namespace onlyone::testing {
namespace {

INSTANTIATE_TEST_SUITE_P(
    Soft, BackendConformanceTest,
    ::testing::Values(BackendUnderTest{
        "soft",
        [] { return NewSoftFileLockBackend(); },
        [](const std::string& dir, const std::string& name) {
          return dir + "/" + name + ".lock";
        },
        /*shared_holders=*/false,
        /*fencing_tokens=*/false,
        /*freed_after_crash_within=*/absl::ZeroDuration(),
    }),
    BackendName);

}  // namespace
}  // namespace onlyone::testing
