#include "onlyone/redis_backend.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "onlyone/internal/printable.h"

namespace onlyone {
namespace {

class HeldRedisLock final : public HeldLock {
 public:
  explicit HeldRedisLock(RedisLock lock) : lock_(std::move(lock)) {}
  absl::Status Release() override { return lock_.Release(); }
  bool held() const override { return lock_.held(); }
  std::string name() const override { return lock_.name(); }
  uint64_t fencing_token() const override { return lock_.fencing_token(); }
  CancellationToken lost() const override { return lock_.lost(); }

 private:
  RedisLock lock_;
};

class RedisLockBackend final : public LockBackend {
 public:
  explicit RedisLockBackend(const RedisLockOptions& options)
      : options_(options) {}

  absl::StatusOr<std::unique_ptr<HeldLock>> Acquire(
      absl::string_view resource, const AcquireOptions& options) override {
    if (options.mode != LockMode::kExclusive) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Redis lock '", internal::Printable(resource), "': a Redis lock has no shared mode"));
    }
    RedisLockOptions redis_options = options_;
    redis_options.timeout = options.timeout;
    redis_options.cancellation = options.cancellation;
    absl::StatusOr<RedisLock> lock =
        RedisLock::Acquire(resource, redis_options);
    if (!lock.ok()) return lock.status();
    return std::make_unique<HeldRedisLock>(*std::move(lock));
  }

 private:
  const RedisLockOptions options_;
};

}  // namespace

std::unique_ptr<LockBackend> NewRedisLockBackend(
    const RedisLockOptions& options) {
  return std::make_unique<RedisLockBackend>(options);
}

}  // namespace onlyone
