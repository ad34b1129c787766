#include "lib/lock_backend.h"

#include <utility>

namespace onlyone {
namespace {

class HeldFileLock final : public HeldLock {
 public:
  explicit HeldFileLock(ScopedFileLock lock) : lock_(std::move(lock)) {}
  absl::Status Release() override { return lock_.Release(); }
  bool held() const override { return lock_.held(); }
  std::string name() const override { return lock_.path(); }

 private:
  ScopedFileLock lock_;
};

class FileLockBackend final : public LockBackend {
 public:
  absl::StatusOr<std::unique_ptr<HeldLock>> Acquire(
      absl::string_view resource, const LockOptions& options) override {
    absl::StatusOr<ScopedFileLock> lock =
        ScopedFileLock::Acquire(resource, options);
    if (!lock.ok()) return lock.status();
    return std::make_unique<HeldFileLock>(*std::move(lock));
  }
};

}  // namespace

std::unique_ptr<LockBackend> NewFileLockBackend() {
  return std::make_unique<FileLockBackend>();
}

}  // namespace onlyone
