// The counting semaphore as a backend of the lock seam (lib/lock_backend.h):
// each Acquire() takes one of `slots` permits of the semaphore whose path is
// the resource (see lib/scoped_semaphore.h). With slots = 1 it is an
// exclusive lock on DIRECTORY/NAME.00.lock. No shared mode (InvalidArgument),
// no fencing tokens (0), never lost.
//
// Thread safety: as LockBackend's contract says.

#ifndef ONLYONE_LIB_SEMAPHORE_BACKEND_H_
#define ONLYONE_LIB_SEMAPHORE_BACKEND_H_

#include <memory>

#include "onlyone/lock_backend.h"
#include "onlyone/scoped_semaphore.h"

namespace onlyone {

std::unique_ptr<LockBackend> NewSemaphoreBackend(
    int slots, const SemaphoreFileOptions& file_options = {});

}  // namespace onlyone

#endif  // ONLYONE_LIB_SEMAPHORE_BACKEND_H_
