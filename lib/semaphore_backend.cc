#include "onlyone/semaphore_backend.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace onlyone {
namespace {

class HeldPermit final : public HeldLock {
 public:
  explicit HeldPermit(ScopedSemaphore permit) : permit_(std::move(permit)) {}
  absl::Status Release() override { return permit_.Release(); }
  bool held() const override { return permit_.held(); }
  std::string name() const override { return permit_.path(); }
  uint64_t fencing_token() const override { return 0; }
  // Kernel locks are held until released or their holder dies: never lost.
  CancellationToken lost() const override { return never_lost_; }
  std::string InheritedLocksEnvValue() const override {
    const ScopedFileLock* lock = permit_.slot_lock();
    return lock == nullptr ? "" : lock->InheritedLocksEnvValue();
  }

 private:
  ScopedSemaphore permit_;
  const CancellationToken never_lost_;
};

class SemaphoreBackend final : public LockBackend {
 public:
  SemaphoreBackend(int slots, const SemaphoreFileOptions& file_options)
      : slots_(slots), file_options_(file_options) {}

  absl::StatusOr<std::unique_ptr<HeldLock>> Acquire(
      absl::string_view resource, const AcquireOptions& options) override {
    if (options.mode != LockMode::kExclusive) {
      return absl::InvalidArgumentError(absl::StrCat(
          resource, ": a semaphore's permits have no shared mode"));
    }
    SemaphoreOptions semaphore_options;
    static_cast<SemaphoreFileOptions&>(semaphore_options) = file_options_;
    semaphore_options.timeout = options.timeout;
    semaphore_options.cancellation = options.cancellation;
    absl::StatusOr<ScopedSemaphore> permit =
        ScopedSemaphore::Acquire(resource, slots_, semaphore_options);
    if (!permit.ok()) return permit.status();
    return std::make_unique<HeldPermit>(*std::move(permit));
  }

 private:
  const int slots_;
  const SemaphoreFileOptions file_options_;
};

}  // namespace

std::unique_ptr<LockBackend> NewSemaphoreBackend(
    int slots, const SemaphoreFileOptions& file_options) {
  return std::make_unique<SemaphoreBackend>(slots, file_options);
}

}  // namespace onlyone
