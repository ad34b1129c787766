#include "onlyone/soft_lock_backend.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace onlyone {
namespace {

class HeldSoftLock final : public HeldLock {
 public:
  explicit HeldSoftLock(SoftFileLock lock)
      : lock_(std::move(lock)), name_(lock_.path()) {}
  absl::Status Release() override { return lock_.Release(); }
  bool held() const override { return lock_.held(); }
  std::string name() const override { return name_; }
  uint64_t fencing_token() const override { return 0; }
  CancellationToken lost() const override { return lock_.lost(); }

 private:
  SoftFileLock lock_;
  const std::string name_;
};

class SoftFileLockBackend final : public LockBackend {
 public:
  explicit SoftFileLockBackend(const SoftLockOptions& defaults)
      : defaults_(defaults) {}

  absl::StatusOr<std::unique_ptr<HeldLock>> Acquire(
      absl::string_view resource, const AcquireOptions& options) override {
    if (options.mode != LockMode::kExclusive) {
      return absl::InvalidArgumentError(
          absl::StrCat(resource, ": a soft lock has no shared mode"));
    }
    SoftLockOptions soft_options = defaults_;
    soft_options.timeout = options.timeout;
    soft_options.cancellation = options.cancellation;
    absl::StatusOr<SoftFileLock> lock =
        SoftFileLock::Acquire(resource, soft_options);
    if (!lock.ok()) return lock.status();
    return std::make_unique<HeldSoftLock>(*std::move(lock));
  }

 private:
  const SoftLockOptions defaults_;
};

}  // namespace

std::unique_ptr<LockBackend> NewSoftFileLockBackend(
    const SoftLockOptions& defaults) {
  return std::make_unique<SoftFileLockBackend>(defaults);
}

}  // namespace onlyone
