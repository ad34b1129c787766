#include "onlyone/lock_backend.h"

#include <utility>

namespace onlyone {
namespace {

class HeldFileLock final : public HeldLock {
 public:
  explicit HeldFileLock(ScopedFileLock lock) : lock_(std::move(lock)) {}
  absl::Status Release() override { return lock_.Release(); }
  bool held() const override { return lock_.held(); }
  std::string name() const override { return lock_.path(); }
  uint64_t fencing_token() const override { return 0; }
  // A kernel lock is held until released or its holder dies: never lost.
  CancellationToken lost() const override { return never_lost_; }
  ScopedFileLock* file_lock() override { return &lock_; }
  std::string InheritedLocksEnvValue() const override {
    return lock_.InheritedLocksEnvValue();
  }

 private:
  ScopedFileLock lock_;
  const CancellationToken never_lost_;
};

class FileLockBackend final : public LockBackend {
 public:
  explicit FileLockBackend(const FileLockOptions& file_options)
      : file_options_(file_options) {}

  absl::StatusOr<std::unique_ptr<HeldLock>> Acquire(
      absl::string_view resource, const AcquireOptions& options) override {
    absl::StatusOr<ScopedFileLock> lock =
        ScopedFileLock::Acquire(resource, LockOptions(options, file_options_));
    if (!lock.ok()) return lock.status();
    return std::make_unique<HeldFileLock>(*std::move(lock));
  }

 private:
  const FileLockOptions file_options_;
};

}  // namespace

std::unique_ptr<LockBackend> NewFileLockBackend(
    const FileLockOptions& file_options) {
  return std::make_unique<FileLockBackend>(file_options);
}

}  // namespace onlyone
