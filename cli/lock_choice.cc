#include "cli/lock_choice.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cli/supervisor.h"
#include "onlyone/redis_backend.h"
#include "onlyone/semaphore_backend.h"
#include "onlyone/soft_lock_backend.h"

namespace onlyone::cli {
namespace {

// SingleInstance's lock as a HeldLock.
class HeldInstance final : public HeldLock {
 public:
  explicit HeldInstance(SingleInstance instance)
      : instance_(std::move(instance)) {}
  absl::Status Release() override { return instance_.Release(); }
  bool held() const override { return instance_.lock().held(); }
  std::string name() const override { return instance_.lock().path(); }
  uint64_t fencing_token() const override { return 0; }
  // A kernel lock is held until released or its holder dies: never lost.
  CancellationToken lost() const override { return never_lost_; }
  std::string InheritedLocksEnvValue() const override {
    return instance_.lock().InheritedLocksEnvValue();
  }

 private:
  // mutable: SingleInstance gives its lock only to a non-const caller.
  mutable SingleInstance instance_;
  const CancellationToken never_lost_;
};

// SingleInstance as a backend: the file lock with an owner record and a
// conflict policy. AcquireOptions::timeout is kWait's limit (zero: kFail),
// unless the policy is kReplace, which its grace period bounds.
class InstanceBackend final : public LockBackend {
 public:
  InstanceBackend(const InstanceOptions& options, bool by_path)
      : options_(options), by_path_(by_path) {}

  absl::StatusOr<std::unique_ptr<HeldLock>> Acquire(
      absl::string_view resource, const AcquireOptions& request) override {
    if (request.cancellation.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          resource, ": an instance lock's wait cannot be cancelled"));
    }
    InstanceOptions options = options_;
    options.shared = request.mode == LockMode::kShared;
    if (options.on_conflict != ConflictPolicy::kReplace) {
      options.on_conflict = request.timeout == absl::ZeroDuration()
                                ? ConflictPolicy::kFail
                                : ConflictPolicy::kWait;
      options.wait_timeout = request.timeout;
    }
    absl::StatusOr<SingleInstance> instance =
        by_path_ ? SingleInstance::AcquireAtPath(resource, options)
                 : SingleInstance::Acquire(resource, options);
    if (!instance.ok()) return instance.status();
    return std::make_unique<HeldInstance>(*std::move(instance));
  }

 private:
  const InstanceOptions options_;
  const bool by_path_;
};

}  // namespace

SoftLockOptions SoftOptionsOf(const LockTarget& target) {
  SoftLockOptions options;
  options.stale_after = target.stale_after;
  return options;
}

LockKind KindOf(const LockTarget& target) {
  if (target.soft) return LockKind::kSoft;
  if (!target.redis_server.empty()) return LockKind::kRedis;
  return target.slots > 0 ? LockKind::kSemaphore : LockKind::kInstance;
}

absl::StatusOr<std::string> SemaphorePathOf(const LockTarget& target) {
  if (!target.lock_path.empty()) return target.lock_path;
  InstanceOptions placement;
  placement.scope = target.scope;
  return InstanceSemaphorePath(target.name, placement);
}

RedisLockOptions RedisOptionsOf(const LockTarget& target) {
  RedisLockOptions options;
  options.server = target.redis_server;
  options.lease = target.redis_lease;
  options.password_file = target.redis_password_file;
  return options;
}

absl::StatusOr<LockChoice> ChooseLock(const LockTarget& target,
                                      const InstanceOptions& instance) {
  LockChoice choice;
  switch (KindOf(target)) {
    case LockKind::kInstance: {
      const bool by_path = !target.lock_path.empty();
      choice.backend = std::make_unique<InstanceBackend>(instance, by_path);
      choice.resource = by_path ? target.lock_path : target.name;
      return choice;
    }
    case LockKind::kSemaphore: {
      absl::StatusOr<std::string> path = SemaphorePathOf(target);
      if (!path.ok()) return path.status();
      SemaphoreFileOptions files;
      files.inheritable = instance.inheritable;
      choice.backend = NewSemaphoreBackend(target.slots, files);
      choice.resource = *std::move(path);
      return choice;
    }
    case LockKind::kSoft: {
      // The record names COMMAND, not the onlyone that supervises it.
      SoftLockOptions soft = SoftOptionsOf(target);
      soft.recorded_command_line = instance.recorded_command_line;
      choice.backend = NewSoftFileLockBackend(soft);
      choice.resource = target.lock_path;
      choice.can_be_lost = true;
      return choice;
    }
    case LockKind::kRedis: {
      RedisLockOptions redis = RedisOptionsOf(target);
      // What status and refusals on other hosts show: COMMAND, not onlyone.
      redis.command = ShellJoin(instance.recorded_command_line);
      choice.backend = NewRedisLockBackend(redis);
      choice.resource = target.name;
      choice.can_be_lost = true;
      return choice;
    }
  }
  return absl::InternalError("unknown lock kind");
}

std::unique_ptr<LockBackend> ProbeBackend(const LockTarget& target) {
  switch (KindOf(target)) {
    case LockKind::kInstance:
      return NewFileLockBackend();
    case LockKind::kSemaphore:
      return NewSemaphoreBackend(target.slots);
    case LockKind::kSoft:
      return NewSoftFileLockBackend(SoftOptionsOf(target));
    case LockKind::kRedis: {
      // What the holder description says while the probe holds the lock:
      // not onlyone's own command line, which may hold a URL's password.
      RedisLockOptions redis = RedisOptionsOf(target);
      redis.command = "onlyone wait";
      return NewRedisLockBackend(redis);
    }
  }
  return nullptr;
}

}  // namespace onlyone::cli
