#include "onlyone/single_instance.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <utility>

#include "absl/base/internal/raw_logging.h"
#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "onlyone/internal/holder_inspection.h"
#include "onlyone/internal/instance_channel.h"
#include "onlyone/internal/instance_conflict.h"
#include "onlyone/internal/instance_paths.h"
#include "onlyone/internal/instance_process.h"
#include "onlyone/internal/instance_record.h"
#include "onlyone/internal/posix_error.h"
#include "onlyone/lock_backend.h"

namespace onlyone {
namespace {

using internal::OwnerRecord;
using internal::PosixError;

// Hard ceiling for InstanceOptions::max_message_bytes.
constexpr size_t kMaxMessageBytesCeiling = 64 * 1024 * 1024;

// Where an instance's lock is: its name and path (what the conflict
// policies need), and how the lock file is to be opened.
struct Location : internal::ConflictTarget {
  bool shared = false;
  mode_t file_mode = kDefaultLockFileMode;
  // The user and session scopes' directories are onlyone's own.
  internal::LockFilePlace place = internal::LockFilePlace::kElsewhere;
  // False for a file that holds someone's data, which gets no record: it is
  // locked through a read-only descriptor, so that a script locking its own
  // file can still be executed.
  bool writable = true;
  uid_t euid = 0;  // geteuid(), read once per call
  // For LegacyLockPaths(), computed only when needed: where earlier
  // onlyone builds kept this lock. Unset for a path.
  std::optional<internal::DirectoryKind> kind;
  internal::InstanceDirectory directory;
};

internal::DirectoryKind KindFor(const InstanceOptions& options) {
  if (!options.directory.empty()) return internal::DirectoryKind::kExplicit;
  switch (options.scope) {
    case Scope::kSession:
      return internal::DirectoryKind::kSession;
    case Scope::kMachine:
      return internal::DirectoryKind::kMachine;
    case Scope::kUser:
      break;
  }
  return internal::DirectoryKind::kUser;
}

absl::StatusOr<Location> Locate(absl::string_view name,
                                const InstanceOptions& options) {
  if (absl::Status valid = internal::ValidateInstanceName(name); !valid.ok()) {
    return valid;
  }
  const internal::DirectoryKind kind = KindFor(options);
  absl::StatusOr<internal::InstanceDirectory> directory =
      internal::ResolveInstanceDirectory(kind, options.directory);
  if (!directory.ok()) return directory.status();
  Location location;
  location.display_name = std::string(name);
  location.lock_path = internal::LockPathIn(*directory, name);
  location.shared = directory->shared;
  location.file_mode = directory->lock_file_mode();
  location.euid = directory->euid;
  location.kind = kind;
  if (kind == internal::DirectoryKind::kUser ||
      kind == internal::DirectoryKind::kSession) {
    location.place = internal::LockFilePlace::kOwnPrivateDirectory;
  }
  location.directory = *std::move(directory);
  return location;
}

// Whether `path` is a regular file that holds data other than an owner
// record. Looked at before locking only to choose the access mode; whether a
// record is written is decided again on the locked descriptor.
bool HoldsOtherData(const std::string& path) {
  const int fd = open(path.c_str(),
                      O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return false;  // missing, or Acquire will say why
  absl::Cleanup close_fd = [fd] { close(fd); };
  struct stat file;
  if (fstat(fd, &file) != 0 || !S_ISREG(file.st_mode)) return false;
  absl::StatusOr<bool> may_hold_record =
      internal::MayHoldOwnerRecord(fd, path, file);
  return may_hold_record.ok() && !*may_hold_record;
}

// Where earlier onlyone builds kept the lock of `location`.
std::vector<std::string> LegacyLockPaths(const Location& location) {
  if (!location.kind.has_value()) return {};
  return internal::LegacyLockPaths(*location.kind, location.directory,
                                   location.display_name);
}

// A lock file given by path: shared between users (mode 0666) when its
// directory is sticky and writable by everyone, like /run/lock.
Location LocatePath(absl::string_view lock_path) {
  Location location;
  location.display_name = std::string(lock_path);
  location.lock_path = std::string(lock_path);
  location.is_path = true;
  location.euid = geteuid();
  const size_t slash = location.lock_path.rfind('/');
  const std::string directory =
      slash == std::string::npos
          ? "."
          : (slash == 0 ? "/" : location.lock_path.substr(0, slash));
  struct stat info;
  if (stat(directory.c_str(), &info) == 0 && (info.st_mode & S_IWOTH) != 0 &&
      (info.st_mode & S_ISVTX) != 0) {
    location.shared = true;
    location.file_mode = internal::kSharedLockFileMode;
  }
  location.writable = !HoldsOtherData(location.lock_path);
  return location;
}

absl::Status ValidateMessagingOptions(absl::string_view name,
                                      const InstanceOptions& options) {
  if (options.max_message_bytes == 0 ||
      options.max_message_bytes > kMaxMessageBytesCeiling) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": max_message_bytes must be 1 to ", kMaxMessageBytesCeiling,
        ", not ", options.max_message_bytes));
  }
  if (options.message_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": message_timeout must be positive, not ",
                     absl::FormatDuration(options.message_timeout)));
  }
  return absl::OkStatus();
}

absl::Status ValidateOptions(absl::string_view name,
                             const InstanceOptions& options) {
  if (options.wait_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": negative wait_timeout ",
                     absl::FormatDuration(options.wait_timeout)));
  }
  if (options.grace_period < absl::ZeroDuration() ||
      options.grace_period == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name,
                     ": grace_period must be finite and not negative, "
                     "not ",
                     absl::FormatDuration(options.grace_period)));
  }
  if (options.shared && (options.on_conflict == ConflictPolicy::kReplace ||
                         options.listen)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": a shared lock can neither replace its holders nor listen "
              "for messages (many copies hold it at once)"));
  }
  if (options.on_message && !options.listen) {
    return absl::InvalidArgumentError(absl::StrCat(
        name,
        ": on_message is set but listen is not; set listen to receive "
        "messages"));
  }
  return ValidateMessagingOptions(name, options);
}

// ---------------------------------------------------------------------------
// Acquisition.

// This process's record without acquired_at: `recorded_command_line` and
// `recorded_executable` (when not empty) stand for its own.
OwnerRecord RecordForThisProcess(
    uid_t euid, const std::vector<std::string>& recorded_command_line,
    const std::string& recorded_executable) {
  OwnerRecord record = internal::SelfRecord(euid);
  if (!recorded_command_line.empty()) {
    record.command_line = recorded_command_line;
    record.command_line_truncated =
        internal::TruncateCommandLine(record.command_line);
  }
  if (!recorded_executable.empty()) record.executable = recorded_executable;
  return record;
}

// The owner record to write now, for a lock taken at `acquired_at`. The
// common case (no command line given, the same effective uid as when the
// identity was cached) reuses the encoded identity and costs one line.
std::string OwnerRecordFor(const internal::SelfIdentity& self,
                           const Location& location,
                           const InstanceOptions& options,
                           absl::Time acquired_at) {
  if (options.recorded_command_line.empty() &&
      options.recorded_executable.empty() &&
      self.record.uid == location.euid) {
    return internal::EncodeOwnerRecord(self.encoded, acquired_at);
  }
  return internal::EncodeOwnerRecord(
      internal::EncodeIdentity(RecordForThisProcess(
          location.euid, options.recorded_command_line,
          options.recorded_executable)),
      acquired_at);
}

// Everything a successful acquisition produced.
struct Acquired {
  Acquired(std::string name, std::unique_ptr<LockBackend> backend,
           std::unique_ptr<HeldLock> lock)
      : name(std::move(name)),
        backend(std::move(backend)),
        lock(std::move(lock)) {}

  std::string name;  // the instance name, or the lock path
  // Outlives the lock it gave (a backend may keep what its locks use).
  std::unique_ptr<LockBackend> backend;
  std::unique_ptr<HeldLock> lock;
  // lock->file_lock(): the file the owner record is written into; nullptr
  // for a backend without one (no record, hand-off or inheritance then).
  ScopedFileLock* file = nullptr;
  internal::LockFilePlace place = internal::LockFilePlace::kElsewhere;
  bool shared = false;  // InstanceOptions::shared: no owner record
  // What UpdateRecord() keeps from the first record: the command line
  // (InstanceOptions::recorded_command_line, or when that is empty the
  // identity's), the recorded executable if one was given, the locker (the
  // identity's pid) and the time. The identity is the acquiring process's,
  // never freed.
  std::vector<std::string> recorded_command_line;
  std::string recorded_executable;
  const internal::SelfIdentity* identity = nullptr;
  absl::Time acquired_at;
  std::unique_ptr<internal::MessageListener> listener;
  bool callback_mode = false;
};

// InstanceMessage is the public type, ChannelMessage the channel's; the
// fields are the same.
InstanceMessage FromChannel(const internal::ChannelMessage& message) {
  InstanceMessage converted;
  converted.arguments = message.arguments;
  converted.working_directory = message.working_directory;
  converted.payload = message.payload;
  converted.sender_pid = message.sender_pid;
  converted.sender_uid = message.sender_uid;
  return converted;
}

internal::ChannelMessage ToChannel(const InstanceMessage& message) {
  internal::ChannelMessage converted;
  converted.arguments = message.arguments;
  converted.working_directory = message.working_directory;
  converted.payload = message.payload;
  return converted;
}

// The socket of the instance at `location`, bounded as `options` say: the
// same for its listener and its senders.
internal::ChannelEndpoint EndpointFor(const Location& location,
                                      const InstanceOptions& options) {
  internal::ChannelEndpoint endpoint;
  endpoint.name = location.display_name;
  endpoint.socket_path = internal::SocketPathFor(location.lock_path);
  endpoint.max_message_bytes = options.max_message_bytes;
  endpoint.timeout = options.message_timeout;
  return endpoint;
}

absl::StatusOr<std::unique_ptr<internal::MessageListener>> StartListening(
    const Location& location, const InstanceOptions& options) {
  internal::ListenerOptions listener;
  static_cast<internal::ChannelEndpoint&>(listener) =
      EndpointFor(location, options);
  listener.shared = location.shared;
  listener.accept_other_users = options.accept_other_users;
  if (options.on_message) {
    listener.on_message =
        [on_message = options.on_message](const internal::ChannelMessage& m) {
          return on_message(FromChannel(m));
        };
  }
  return internal::MessageListener::Start(std::move(listener));
}

// Every instance lock file in `directory`, with its holder.
absl::StatusOr<std::vector<ListedInstance>> ListDirectory(
    const internal::InstanceDirectory& directory) {
  DIR* listing = opendir(directory.path.c_str());
  if (listing == nullptr) {
    return PosixError(absl::StrCat(directory.path, ": opendir"), errno);
  }
  absl::Cleanup close_listing = [listing] { closedir(listing); };
  std::vector<ListedInstance> instances;
  for (;;) {
    errno = 0;
    const struct dirent* entry = readdir(listing);
    if (entry == nullptr) {
      if (errno != 0) {
        return PosixError(absl::StrCat(directory.path, ": readdir"), errno);
      }
      break;
    }
    std::optional<std::string> name =
        internal::InstanceNameOf(directory, entry->d_name);
    if (!name.has_value()) continue;
    ListedInstance listed;
    listed.name = *std::move(name);
    listed.lock_path = internal::LockPathIn(directory, listed.name);
    absl::StatusOr<internal::Inspection> inspection =
        internal::InspectLockFile(listed.lock_path);
    // Not a regular file (something planted), or unreadable: not a lock.
    if (!inspection.ok()) continue;
    listed.holder = internal::HolderFrom(*inspection);
    instances.push_back(std::move(listed));
  }
  return instances;
}

// The backend behind an instance lock: the kernel file lock, opened as the
// location says. Another backend plugs in here; the conflict policies
// (lib/internal/instance_conflict.h) do not change.
std::unique_ptr<LockBackend> BackendFor(const Location& location,
                                        const InstanceOptions& options) {
  FileLockOptions file_options;
  file_options.file_mode = location.file_mode;
  file_options.writable = location.writable;
  file_options.inheritable = options.inheritable;
  return NewFileLockBackend(file_options);
}

absl::StatusOr<Acquired> AcquireAt(const Location& location,
                                   const InstanceOptions& options) {
  const absl::Time deadline = options.wait_timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : absl::Now() + options.wait_timeout;
  std::unique_ptr<LockBackend> backend = BackendFor(location, options);
  AcquireOptions request;
  request.mode = options.shared ? LockMode::kShared : LockMode::kExclusive;
  auto acquire = [&](const std::string& path, absl::Duration timeout) {
    AcquireOptions timed = request;
    timed.timeout = timeout;
    return backend->Acquire(path, timed);
  };
  std::unique_ptr<HeldLock> lock;
  auto attempt = [&](absl::Duration timeout) -> absl::Status {
    absl::StatusOr<std::unique_ptr<HeldLock>> taken =
        acquire(location.lock_path, timeout);
    if (!taken.ok()) return taken.status();
    lock = *std::move(taken);
    return absl::OkStatus();
  };
  absl::Status taken;
  switch (options.on_conflict) {
    case ConflictPolicy::kFail:
      taken = internal::LockFailingAtOnce(location, attempt);
      break;
    case ConflictPolicy::kWait:
      taken = internal::LockWaiting(location, attempt, options.wait_timeout);
      break;
    case ConflictPolicy::kReplace:
      taken = internal::LockReplacing(location, attempt, options.grace_period);
      break;
  }
  if (!taken.ok()) return taken;
  ScopedFileLock* const file = lock->file_lock();
  if (file != nullptr && file->status_when_locked().st_size == 0) {
    // Waited for, then let go at once: only its holder's exit matters.
    auto wait_for = [&](const std::string& path, absl::Duration timeout) {
      return acquire(path, timeout).status();
    };
    if (absl::Status legacy = internal::CheckLegacyLocks(
            location, LegacyLockPaths(location),
            options.on_conflict == ConflictPolicy::kWait, options.wait_timeout,
            deadline, wait_for);
        !legacy.ok()) {
      return legacy;  // the lock's destructor releases it
    }
  }

  // Only now, holding the lock, does this process say who it is.
  const internal::SelfIdentity& self = internal::CachedSelfIdentity();
  const absl::Time acquired_at = absl::Now();
  if (!options.shared && file != nullptr) {
    absl::StatusOr<bool> written = internal::WriteOwnerRecord(
        file->fd(), location.lock_path,
        OwnerRecordFor(self, location, options, acquired_at),
        file->status_when_locked(), location.place);
    if (!written.ok()) return written.status();
  }

  Acquired acquired(location.display_name, std::move(backend),
                    std::move(lock));
  acquired.file = file;
  acquired.place = location.place;
  acquired.shared = options.shared;
  acquired.recorded_command_line = options.recorded_command_line;
  acquired.recorded_executable = options.recorded_executable;
  acquired.identity = &self;
  acquired.acquired_at = acquired_at;
  if (options.listen) {
    // After the lock and the record: only the holder creates the socket.
    absl::StatusOr<std::unique_ptr<internal::MessageListener>> listener =
        StartListening(location, options);
    if (!listener.ok()) return listener.status();
    acquired.listener = *std::move(listener);
    acquired.callback_mode = static_cast<bool>(options.on_message);
  }
  return acquired;
}

}  // namespace

// ---------------------------------------------------------------------------

struct SingleInstance::State {
  explicit State(Acquired parts) : parts(std::move(parts)) {}

  Acquired parts;
  bool released = false;
};

absl::StatusOr<SingleInstance> SingleInstance::Acquire(
    absl::string_view name, const InstanceOptions& options) {
  if (absl::Status valid = ValidateOptions(name, options); !valid.ok()) {
    return valid;
  }
  absl::StatusOr<Location> location = Locate(name, options);
  if (!location.ok()) return location.status();
  absl::StatusOr<Acquired> acquired = AcquireAt(*location, options);
  if (!acquired.ok()) return acquired.status();
  return SingleInstance(std::make_unique<State>(*std::move(acquired)));
}

absl::StatusOr<SingleInstance> SingleInstance::AcquireAtPath(
    absl::string_view lock_path, const InstanceOptions& options) {
  if (lock_path.empty()) {
    return absl::InvalidArgumentError("lock path is empty");
  }
  if (absl::Status valid = ValidateOptions(lock_path, options); !valid.ok()) {
    return valid;
  }
  absl::StatusOr<Acquired> acquired =
      AcquireAt(LocatePath(lock_path), options);
  if (!acquired.ok()) return acquired.status();
  return SingleInstance(std::make_unique<State>(*std::move(acquired)));
}

absl::StatusOr<std::optional<InstanceInfo>> SingleInstance::Holder(
    absl::string_view name, const InstanceOptions& options) {
  absl::StatusOr<Location> location = Locate(name, options);
  if (!location.ok()) return location.status();
  absl::StatusOr<std::optional<InstanceInfo>> holder =
      HolderAtPath(location->lock_path);
  if (!holder.ok() || holder->has_value()) return holder;
  // Free here: a copy of an earlier build may hold it where that build kept
  // it. Locations that are not lock files cannot hold it.
  for (const std::string& legacy : LegacyLockPaths(*location)) {
    absl::StatusOr<std::optional<InstanceInfo>> old = HolderAtPath(legacy);
    if (old.ok() && old->has_value()) return old;
  }
  return holder;
}

absl::StatusOr<std::optional<InstanceInfo>> SingleInstance::HolderAtPath(
    absl::string_view lock_path) {
  if (lock_path.empty()) {
    return absl::InvalidArgumentError("lock path is empty");
  }
  absl::StatusOr<internal::Inspection> inspection =
      internal::InspectLockFile(std::string(lock_path));
  if (!inspection.ok()) return inspection.status();
  return internal::HolderFrom(*inspection);
}

absl::StatusOr<std::string> SingleInstance::LockPath(
    absl::string_view name, const InstanceOptions& options) {
  absl::StatusOr<Location> location = Locate(name, options);
  if (!location.ok()) return location.status();
  return location->lock_path;
}

absl::StatusOr<std::vector<ListedInstance>> SingleInstance::List(
    const InstanceOptions& options) {
  const internal::DirectoryKind kind = KindFor(options);
  absl::StatusOr<internal::InstanceDirectory> directory =
      internal::ResolveInstanceDirectory(kind, options.directory);
  if (!directory.ok()) return directory.status();
  absl::StatusOr<std::vector<ListedInstance>> instances =
      ListDirectory(*directory);
  if (!instances.ok()) return instances.status();
  // Copies of an earlier build that still run, where that build kept its
  // locks, unless the same name is held here too.
  for (const internal::InstanceDirectory& legacy :
       internal::LegacyDirectories(kind, directory->euid)) {
    if (legacy.path == directory->path) continue;
    absl::StatusOr<std::vector<ListedInstance>> old = ListDirectory(legacy);
    if (!old.ok()) continue;  // missing or unreadable: nothing runs there
    for (ListedInstance& listed : *old) {
      if (!listed.holder.has_value()) continue;
      auto same = std::find_if(instances->begin(), instances->end(),
                               [&](const ListedInstance& current) {
                                 return current.name == listed.name;
                               });
      if (same == instances->end()) {
        instances->push_back(std::move(listed));
      } else if (!same->holder.has_value()) {
        *same = std::move(listed);
      }
    }
  }
  std::sort(instances->begin(), instances->end(),
            [](const ListedInstance& a, const ListedInstance& b) {
              return a.name < b.name;
            });
  return instances;
}

absl::Status SingleInstance::ValidateName(absl::string_view name) {
  return internal::ValidateInstanceName(name);
}

std::string SingleInstance::DescribeRunning(absl::string_view name,
                                            const InstanceInfo& holder) {
  return internal::DescribeRunning(name, holder);
}

std::string SingleInstance::DescribeHeld(absl::string_view lock_path,
                                         const InstanceInfo& holder) {
  return internal::DescribeHeld(lock_path, holder);
}

absl::StatusOr<std::string> SingleInstance::Send(
    absl::string_view name, const InstanceMessage& message,
    const InstanceOptions& options) {
  // The name is checked once, by Locate(); the options first, so that a
  // bad one creates no directory.
  if (absl::Status valid = ValidateMessagingOptions(name, options);
      !valid.ok()) {
    return valid;
  }
  absl::StatusOr<Location> location = Locate(name, options);
  if (!location.ok()) return location.status();
  internal::SendTarget target;
  static_cast<internal::ChannelEndpoint&>(target) =
      EndpointFor(*location, options);
  target.lock_path = location->lock_path;
  return internal::SendMessage(target, ToChannel(message));
}

SingleInstance::SingleInstance(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

SingleInstance::SingleInstance(SingleInstance&&) noexcept = default;

SingleInstance& SingleInstance::operator=(SingleInstance&& other) noexcept {
  if (this != &other) {
    Release().IgnoreError();  // as in the destructor
    state_ = std::move(other.state_);
  }
  return *this;
}

SingleInstance::~SingleInstance() { Release().IgnoreError(); }

absl::Status SingleInstance::Release() {
  if (state_ == nullptr || state_->released) return absl::OkStatus();
  state_->released = true;
  absl::Status status;
  if (state_->parts.listener != nullptr) {
    // Only the holder removes the socket, and before it lets go of the lock:
    // a fork()ed child or a parent that handed the lock off leaves it.
    status = state_->parts.listener->Stop(
        /*remove_socket=*/state_->parts.lock->held());
    if (state_->parts.listener->IsForkedCopy()) {
      state_->parts.listener.release();  // NOLINT: see IsForkedCopy()
    } else {
      state_->parts.listener.reset();
    }
  }
  absl::Status released = state_->parts.lock->Release();
  if (status.ok()) status = released;
  return status;
}

ScopedFileLock& SingleInstance::lock() {
  ABSL_RAW_CHECK(state_ != nullptr,
                 "SingleInstance::lock() on a moved-from object");
  ABSL_RAW_CHECK(state_->parts.file != nullptr,
                 "SingleInstance::lock() on a lock that is not a file lock");
  return *state_->parts.file;
}

absl::Status SingleInstance::UpdateRecord() {
  if (state_ != nullptr && state_->parts.shared) {
    return absl::FailedPreconditionError(absl::StrCat(
        state_->parts.name,
        ": a shared lock has no owner record (many copies hold it at once)"));
  }
  if (state_ == nullptr || state_->released || !state_->parts.lock->held() ||
      state_->parts.file == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        state_ == nullptr ? "SingleInstance" : state_->parts.name,
        ": this process does not hold the lock, so it may not write its "
        "owner record"));
  }
  const Acquired& parts = state_->parts;
  OwnerRecord record = RecordForThisProcess(
      geteuid(), parts.recorded_command_line, parts.recorded_executable);
  if (parts.recorded_command_line.empty()) {
    // The command line as first recorded, even if the process has renamed
    // itself since (setproctitle after daemonizing).
    record.command_line = parts.identity->record.command_line;
    record.command_line_truncated =
        parts.identity->record.command_line_truncated;
  }
  // The kernel keeps listing the process that took the lock.
  record.locker_pid = parts.identity->record.pid;
  record.acquired_at = parts.acquired_at;
  absl::StatusOr<bool> written = internal::WriteOwnerRecord(
      parts.file->fd(), parts.file->path(), record, parts.place);
  if (!written.ok()) return written.status();
  return absl::OkStatus();
}

int SingleInstance::message_fd() const {
  if (state_ == nullptr || state_->parts.listener == nullptr) return -1;
  return state_->parts.listener->message_fd();
}

absl::StatusOr<std::optional<InstanceMessage>> SingleInstance::TakeMessage() {
  if (state_ == nullptr || state_->parts.listener == nullptr ||
      state_->parts.callback_mode) {
    return absl::FailedPreconditionError(absl::StrCat(
        state_ == nullptr ? "SingleInstance" : state_->parts.name,
        ": not listening in pollable mode (set listen without on_message)"));
  }
  std::optional<internal::ChannelMessage> message =
      state_->parts.listener->Take();
  if (!message.has_value()) return std::nullopt;
  return FromChannel(*message);
}

absl::Status SingleInstance::Reply(absl::string_view reply) {
  if (state_ == nullptr || state_->parts.listener == nullptr ||
      state_->parts.callback_mode) {
    return absl::FailedPreconditionError(absl::StrCat(
        state_ == nullptr ? "SingleInstance" : state_->parts.name,
        ": not listening in pollable mode (set listen without on_message)"));
  }
  return state_->parts.listener->Reply(reply);
}

}  // namespace onlyone
