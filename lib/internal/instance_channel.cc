#include "onlyone/internal/instance_channel.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstring>

#include "absl/base/call_once.h"
#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "onlyone/internal/file_kind.h"
#include "onlyone/internal/interruptible_wait.h"
#include "onlyone/internal/posix_error.h"
#include "onlyone/internal/proc_locks.h"
#include "onlyone/internal/retry.h"
#include "onlyone/internal/thread_signals.h"

namespace onlyone::internal {
namespace {

constexpr absl::string_view kRequestMagic = "OO1Q";
constexpr absl::string_view kResponseMagic = "OO1R";
constexpr int kBacklog = 64;
// Refusal reasons are short; a response body may carry this much text even
// when max_message_bytes is smaller.
constexpr size_t kMinResponseBytes = 4096;

void PutU32(uint32_t value, std::string* out) {
  const char bytes[4] = {
      static_cast<char>(value >> 24), static_cast<char>(value >> 16),
      static_cast<char>(value >> 8), static_cast<char>(value)};
  out->append(bytes, 4);
}

uint32_t ReadU32(const char* bytes) {
  return (static_cast<uint32_t>(static_cast<unsigned char>(bytes[0])) << 24) |
         (static_cast<uint32_t>(static_cast<unsigned char>(bytes[1])) << 16) |
         (static_cast<uint32_t>(static_cast<unsigned char>(bytes[2])) << 8) |
         static_cast<uint32_t>(static_cast<unsigned char>(bytes[3]));
}

bool TakeU32(absl::string_view* in, uint32_t* value) {
  if (in->size() < 4) return false;
  *value = ReadU32(in->data());
  in->remove_prefix(4);
  return true;
}

bool TakeBytes(absl::string_view* in, std::string* out) {
  uint32_t length;
  if (!TakeU32(in, &length) || in->size() < length) return false;
  out->assign(in->data(), length);
  in->remove_prefix(length);
  return true;
}

void PutBytes(absl::string_view bytes, std::string* out) {
  PutU32(static_cast<uint32_t>(bytes.size()), out);
  out->append(bytes.data(), bytes.size());
}

std::string Frame(absl::string_view magic, absl::string_view body) {
  std::string frame;
  frame.reserve(kFrameHeaderBytes + body.size());
  frame.append(magic.data(), magic.size());
  PutU32(static_cast<uint32_t>(body.size()), &frame);
  frame.append(body.data(), body.size());
  return frame;
}

// Milliseconds until `deadline` (on the MonotonicNow() clock) for poll(2),
// rounded up so that a wake-up never comes before the deadline; -1 for no
// deadline.
int PollTimeout(absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return -1;
  const absl::Duration left = deadline - MonotonicNow();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(
      absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))),
      INT_MAX));
}

// Listening sockets of this process, closed in fork() children (see the
// header). Slots hold fd + 1, 0 when free; atomics, because the child
// handler may use only async-signal-safe operations.
constexpr int kForkSlots = 64;
std::atomic<int> listening_fds_plus_one[kForkSlots];

void CloseListenersInChild() {
  for (std::atomic<int>& slot : listening_fds_plus_one) {
    const int value = slot.exchange(0);
    if (value != 0) close(value - 1);
  }
}

bool RegisterForFork(int fd) {
  static absl::once_flag once;
  absl::call_once(
      once, [] { pthread_atfork(nullptr, nullptr, CloseListenersInChild); });
  for (std::atomic<int>& slot : listening_fds_plus_one) {
    int expected = 0;
    if (slot.compare_exchange_strong(expected, fd + 1)) return true;
  }
  return false;
}

// Before the descriptor is closed, so that a fork() in between never closes
// a reused descriptor number in the child.
void UnregisterForFork(int fd) {
  for (std::atomic<int>& slot : listening_fds_plus_one) {
    int expected = fd + 1;
    if (slot.compare_exchange_strong(expected, 0)) return;
  }
}

// A sockaddr_un for `path`. sun_path holds 107 bytes; a longer path is
// reached through /proc/self/fd/N/BASENAME with N a descriptor of its
// directory, kept open as long as this object lives.
class UnixAddress {
 public:
  UnixAddress() = default;
  UnixAddress(const UnixAddress&) = delete;
  UnixAddress& operator=(const UnixAddress&) = delete;
  ~UnixAddress() {
    if (directory_fd_ >= 0) close(directory_fd_);
  }

  absl::Status Set(const std::string& path) {
    std::memset(&address_, 0, sizeof address_);
    address_.sun_family = AF_UNIX;
    std::string usable = path;
    if (path.size() >= sizeof address_.sun_path) {
      const size_t slash = path.rfind('/');
      const std::string directory =
          slash == std::string::npos
              ? "."
              : (slash == 0 ? "/" : path.substr(0, slash));
      const std::string base =
          slash == std::string::npos ? path : path.substr(slash + 1);
      directory_fd_ = open(directory.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (directory_fd_ < 0) {
        return PosixError(absl::StrCat(directory, ": open"), errno);
      }
      usable = absl::StrCat("/proc/self/fd/", directory_fd_, "/", base);
      if (usable.size() >= sizeof address_.sun_path) {
        return absl::InvalidArgumentError(
            absl::StrCat("message socket path ", path,
                         " is too long for a unix-domain socket (", path.size(),
                         " bytes, and ", usable.size(),
                         " even through /proc/self/fd; the limit is ",
                         sizeof address_.sun_path - 1,
                         "): use a shorter name or directory"));
      }
    }
    std::memcpy(address_.sun_path, usable.data(), usable.size());
    length_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) +
                                     usable.size() + 1);
    return absl::OkStatus();
  }

  const sockaddr* get() const {
    return reinterpret_cast<const sockaddr*>(&address_);
  }
  socklen_t length() const { return length_; }

 private:
  sockaddr_un address_{};
  socklen_t length_ = 0;
  int directory_fd_ = -1;
};

// What is at `path` instead of a socket, for a refusal: "a regular file
// owned by uid 1000", "a symbolic link owned by uid 0 pointing to TARGET".
std::string DescribeInTheWay(const std::string& path, const struct stat& file) {
  const char* kind = NonRegularFileKind(file.st_mode);
  std::string description = absl::StrCat(
      kind == nullptr ? "a regular file" : kind, " owned by uid ", file.st_uid);
  if (S_ISLNK(file.st_mode)) {
    char target[PATH_MAX];
    const ssize_t length = readlink(path.c_str(), target, sizeof target);
    if (length > 0) {
      absl::StrAppend(&description, " pointing to ",
                      absl::string_view(target, static_cast<size_t>(length)));
    }
  }
  return description;
}

// Makes way for the socket at `path` (reached through `address`): removes a
// stale socket of ours, refuses anything else and leaves it as it is. The
// caller holds the instance's lock, so the holder that bound a socket found
// here is gone; it is still removed only when it is provably that socket:
// a socket, owned by our effective uid, that nobody listens on (a connect
// attempt is refused).
absl::Status RemoveStaleSocket(const std::string& name, const std::string& path,
                               const UnixAddress& address) {
  struct stat existing;
  if (lstat(path.c_str(), &existing) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return PosixError(absl::StrCat(path, ": lstat"), errno);
  }
  const std::string refusal =
      absl::StrCat("cannot listen for messages to ", name, ": ", path, " is ");
  const std::string left_alone = "; it is left as it is";
  if (!S_ISSOCK(existing.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        refusal, DescribeInTheWay(path, existing), ", not a message socket",
        left_alone,
        ": remove or rename it if nothing needs it, or use another instance "
        "name or directory"));
  }
  const uid_t self = geteuid();
  if (existing.st_uid != self) {
    // Also as root, who could: another user's socket is never removed.
    return absl::FailedPreconditionError(
        absl::StrCat(refusal, "a socket of uid ", existing.st_uid,
                     ", not of uid ", self, left_alone, ": if no copy of ",
                     name, " runs, its owner (or root) may remove it"));
  }
  const int probe =
      socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) return PosixError(absl::StrCat(path, ": socket"), errno);
  absl::Cleanup close_probe = [probe] { close(probe); };
  // Non-blocking, so it never waits: connected, or EAGAIN for a full
  // backlog, both mean that a process listens.
  const int connect_error =
      connect(probe, address.get(), address.length()) == 0 ? 0 : errno;
  if (connect_error == 0 || connect_error == EAGAIN) {
    struct ucred listener {};
    socklen_t listener_length = sizeof listener;
    const std::string who = getsockopt(probe, SOL_SOCKET, SO_PEERCRED,
                                       &listener, &listener_length) == 0 &&
                                    listener.pid > 0
                                ? absl::StrCat("pid ", listener.pid)
                                : std::string("a process");
    return absl::FailedPreconditionError(absl::StrCat(
        refusal, "a socket that ", who,
        " listens on, although this process holds the lock", left_alone,
        ": stop that process, or use another instance name or directory"));
  }
  if (connect_error == ENOENT) return absl::OkStatus();  // removed meanwhile
  if (connect_error != ECONNREFUSED) {
    return PosixError(
        absl::StrCat(path, ": connect (checking whether the socket is stale)"),
        connect_error);
  }
  // Stale. Between the checks and unlink(2) another file could take the
  // socket's place only if someone removed or renamed ours first: no onlyone
  // holder, since only the lock holder creates or removes the socket and we
  // hold the lock; no other user in a private directory (it is ours) nor in
  // a sticky one (where nobody else may remove our file). What remains is a
  // process with our own uid, or root, which may remove our files anyway,
  // and another user in a directory that is writable by them and not sticky
  // (an explicit lock path), where the lock file is theirs to replace as
  // well. So the window is acceptable; checking the identity again after the
  // probe keeps it to two system calls and makes sure that what the probe
  // found refused is the file removed.
  struct stat checked;
  if (lstat(path.c_str(), &checked) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return PosixError(absl::StrCat(path, ": lstat"), errno);
  }
  if (checked.st_dev != existing.st_dev || checked.st_ino != existing.st_ino) {
    return absl::FailedPreconditionError(absl::StrCat(
        refusal, DescribeInTheWay(path, checked),
        ", which replaced the stale socket while it was being checked",
        left_alone, ": try again"));
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return PosixError(absl::StrCat(path, ": removing the stale message socket"),
                      errno);
  }
  return absl::OkStatus();
}

void ConsumeEvent(int event_fd) {
  uint64_t value;
  RetryOnEintr([&] { return read(event_fd, &value, sizeof value); });
}

void PostEvent(int event_fd) {
  const uint64_t one = 1;
  RetryOnEintr([&] { return write(event_fd, &one, sizeof one); });
}

}  // namespace

std::string EncodeRequest(const ChannelMessage& message) {
  std::string body;
  PutU32(static_cast<uint32_t>(message.arguments.size()), &body);
  for (const std::string& argument : message.arguments)
    PutBytes(argument, &body);
  PutBytes(message.working_directory, &body);
  PutBytes(message.payload, &body);
  return Frame(kRequestMagic, body);
}

std::string EncodeResponse(ResponseCode code, absl::string_view text) {
  std::string body;
  body.reserve(1 + text.size());
  body.push_back(static_cast<char>(code));
  body.append(text.data(), text.size());
  return Frame(kResponseMagic, body);
}

std::optional<ChannelMessage> DecodeRequestBody(absl::string_view body) {
  ChannelMessage message;
  uint32_t count;
  if (!TakeU32(&body, &count)) return std::nullopt;
  // Each argument takes at least its 4-byte length: a larger count is a lie.
  if (count > body.size() / 4) return std::nullopt;
  message.arguments.resize(count);
  for (std::string& argument : message.arguments) {
    if (!TakeBytes(&body, &argument)) return std::nullopt;
  }
  if (!TakeBytes(&body, &message.working_directory) ||
      !TakeBytes(&body, &message.payload) || !body.empty()) {
    return std::nullopt;
  }
  return message;
}

// ---------------------------------------------------------------------------
// The listener.

struct MessageListener::Connection {
  enum class State { kReading, kAwaitingReply, kWriting, kDone };

  Connection(int fd, uint64_t id, pid_t pid, uid_t uid, absl::Time now,
             absl::Duration timeout)
      : fd(fd),
        id(id),
        pid(pid),
        uid(uid),
        deadline(now + timeout),
        last_progress(now) {}
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { close(fd); }

  const int fd;
  const uint64_t id;
  const pid_t pid;
  const uid_t uid;
  State state = State::kReading;
  absl::Time deadline;
  // When the peer last sent or took bytes (or connected): who goes first
  // when the listener is full.
  absl::Time last_progress;
  std::string in;
  bool have_header = false;
  size_t body_length = 0;
  std::string out;
  size_t written = 0;

  void Respond(ResponseCode code, absl::string_view text,
               absl::Duration timeout) {
    out = EncodeResponse(code, text);
    written = 0;
    state = State::kWriting;
    deadline = MonotonicNow() + timeout;
    WriteSome();
  }

  void WriteSome() {
    while (written < out.size()) {
      const ssize_t sent = RetryOnEintr([&] {
        return send(fd, out.data() + written, out.size() - written,
                    MSG_NOSIGNAL | MSG_DONTWAIT);
      });
      if (sent < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        state = State::kDone;  // the sender went away
        return;
      }
      written += static_cast<size_t>(sent);
      last_progress = MonotonicNow();
    }
    state = State::kDone;
  }

  // Waiting for its peer (to send the request, or to take the response)
  // rather than for the application.
  bool WaitsForPeer() const {
    return state == State::kReading || state == State::kWriting;
  }

  // Reads what has arrived; returns true once the request is complete.
  bool ReadSome(size_t max_body_bytes, absl::Duration timeout) {
    char buffer[16 * 1024];
    for (;;) {
      const size_t wanted = have_header
                                ? kFrameHeaderBytes + body_length - in.size()
                                : kFrameHeaderBytes - in.size();
      if (wanted == 0) return true;
      const ssize_t got = RetryOnEintr([&] {
        return recv(fd, buffer, std::min(wanted, sizeof buffer), MSG_DONTWAIT);
      });
      if (got < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) state = State::kDone;
        return false;
      }
      if (got == 0) {  // the sender gave up before sending everything
        state = State::kDone;
        return false;
      }
      in.append(buffer, static_cast<size_t>(got));
      last_progress = MonotonicNow();
      if (!have_header && in.size() == kFrameHeaderBytes) {
        if (absl::string_view(in).substr(0, 4) != kRequestMagic) {
          Respond(ResponseCode::kMalformed, "not an onlyone message", timeout);
          return false;
        }
        body_length = ReadU32(in.data() + 4);
        if (body_length > max_body_bytes) {
          Respond(ResponseCode::kTooLarge,
                  absl::StrCat("a message of ", body_length,
                               " bytes exceeds the limit of ", max_body_bytes,
                               " bytes"),
                  timeout);
          return false;
        }
        have_header = true;
        in.reserve(kFrameHeaderBytes + body_length);
      }
    }
  }
};

absl::StatusOr<std::unique_ptr<MessageListener>> MessageListener::Start(
    ListenerOptions options) {
  const std::string& path = options.socket_path;
  UnixAddress address;
  if (absl::Status set = address.Set(path); !set.ok()) return set;

  if (absl::Status cleared = RemoveStaleSocket(options.name, path, address);
      !cleared.ok()) {
    return cleared;
  }

  const int listen_fd =
      socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd < 0) return PosixError(absl::StrCat(path, ": socket"), errno);
  absl::Cleanup close_listen = [listen_fd] { close(listen_fd); };
  if (bind(listen_fd, address.get(), address.length()) != 0) {
    return PosixError(absl::StrCat(path, ": bind"), errno);
  }
  absl::Cleanup remove_socket = [&path] { unlink(path.c_str()); };
  // Nobody can connect before listen(2), so the mode is right before anyone
  // can use the socket. The peer's uid is checked as well (SO_PEERCRED);
  // the mode keeps other users out of private sockets altogether.
  if (chmod(path.c_str(), options.shared ? 0666 : 0600) != 0) {
    return PosixError(absl::StrCat(path, ": chmod"), errno);
  }
  struct stat bound;
  if (lstat(path.c_str(), &bound) != 0) {
    return PosixError(absl::StrCat(path, ": lstat"), errno);
  }
  if (listen(listen_fd, kBacklog) != 0) {
    return PosixError(absl::StrCat(path, ": listen"), errno);
  }
  const int wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) return PosixError(absl::StrCat(path, ": eventfd"), errno);
  absl::Cleanup close_wake = [wake_fd] { close(wake_fd); };
  int message_fd = -1;
  if (!options.on_message) {
    message_fd = eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
    if (message_fd < 0) {
      return PosixError(absl::StrCat(path, ": eventfd"), errno);
    }
  }
  absl::Cleanup close_message = [message_fd] {
    if (message_fd >= 0) close(message_fd);
  };
  if (!RegisterForFork(listen_fd)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        path, ": too many listening SingleInstances in this process (",
        kForkSlots, ")"));
  }

  std::unique_ptr<MessageListener> listener(
      new MessageListener(std::move(options), listen_fd, wake_fd, message_fd,
                          bound.st_dev, bound.st_ino));
  std::move(close_listen).Cancel();
  std::move(remove_socket).Cancel();
  std::move(close_wake).Cancel();
  std::move(close_message).Cancel();
  MessageListener* raw = listener.get();
  {
    // The application's process-directed signals go to its own threads.
    NewThreadsBlockSignals blocked;
    listener->thread_ = std::make_unique<std::thread>([raw] { raw->Run(); });
  }
  return listener;
}

MessageListener::MessageListener(ListenerOptions options, int listen_fd,
                                 int wake_fd, int message_fd, dev_t device,
                                 ino_t inode)
    : options_(std::move(options)),
      listen_fd_(listen_fd),
      wake_fd_(wake_fd),
      message_fd_(message_fd),
      socket_device_(device),
      socket_inode_(inode),
      owner_pid_(getpid()) {}

MessageListener::~MessageListener() { Stop(false).IgnoreError(); }

absl::Status MessageListener::Stop(bool remove_socket) {
  if (stopped_) return absl::OkStatus();
  stopped_ = true;
  if (IsForkedCopy()) {
    // A fork()ed child: the thread is not here, and a mutex it held at the
    // fork stays locked forever. The atfork handler closed the listening
    // socket; close our copies of the rest and leak the thread object
    // (destroying a joinable std::thread would terminate the process).
    close(wake_fd_);
    if (message_fd_ >= 0) close(message_fd_);
    thread_.release();  // NOLINT: intentionally leaked, see above
    return absl::OkStatus();
  }
  // Refuses new connections at once, also through copies of the socket that
  // a child might hold.
  shutdown(listen_fd_, SHUT_RDWR);
  {
    ForkSafeLock lock(&mu_);
    stopping_ = true;
  }
  Wake();
  thread_->join();
  thread_.reset();
  UnregisterForFork(listen_fd_);
  absl::Status status;
  if (close(listen_fd_) != 0) {
    status = PosixError(absl::StrCat(options_.socket_path, ": close"), errno);
  }
  if (remove_socket) {
    // Only the file we bound: never a socket a later holder created.
    struct stat now;
    if (lstat(options_.socket_path.c_str(), &now) == 0 &&
        now.st_dev == socket_device_ && now.st_ino == socket_inode_ &&
        unlink(options_.socket_path.c_str()) != 0 && errno != ENOENT &&
        status.ok()) {
      status =
          PosixError(absl::StrCat(options_.socket_path, ": unlink"), errno);
    }
  }
  close(wake_fd_);
  if (message_fd_ >= 0) close(message_fd_);
  return status;
}

int MessageListener::message_fd() const { return message_fd_; }

bool MessageListener::IsForkedCopy() const { return getpid() != owner_pid_; }

void MessageListener::Wake() { PostEvent(wake_fd_); }

std::optional<ChannelMessage> MessageListener::Take() {
  if (message_fd_ < 0) return std::nullopt;
  ForkSafeLock lock(&mu_);
  if (taken_id_ != 0) {
    replies_.emplace_back(taken_id_, "");
    taken_id_ = 0;
    Wake();
  }
  while (!queue_.empty()) {
    Queued next = std::move(queue_.front());
    queue_.pop_front();
    ConsumeEvent(message_fd_);
    // The thread drops messages whose sender hung up, but it may not have
    // seen the hang-up yet; the kernel already knows.
    struct pollfd sender = {next.fd, 0, 0};
    if (poll(&sender, 1, 0) == 1 &&
        (sender.revents & (POLLHUP | POLLERR)) != 0) {
      continue;
    }
    taken_id_ = next.id;
    return std::move(next.message);
  }
  return std::nullopt;
}

absl::Status MessageListener::Reply(absl::string_view reply) {
  ForkSafeLock lock(&mu_);
  if (taken_id_ == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(options_.name,
                     ": no message to reply to (call TakeMessage() first; "
                     "each message gets one reply)"));
  }
  replies_.emplace_back(taken_id_, std::string(reply));
  taken_id_ = 0;
  Wake();
  return absl::OkStatus();
}

void MessageListener::Drop(uint64_t id) {
  ForkSafeLock lock(&mu_);
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->id == id) {
      queue_.erase(it);
      ConsumeEvent(message_fd_);
      return;
    }
  }
}

void MessageListener::HandleComplete(Connection& connection) {
  std::optional<ChannelMessage> message = DecodeRequestBody(
      absl::string_view(connection.in).substr(kFrameHeaderBytes));
  if (!message.has_value()) {
    connection.Respond(ResponseCode::kMalformed, "malformed message",
                       options_.timeout);
    return;
  }
  message->sender_pid = connection.pid;
  message->sender_uid = connection.uid;
  connection.in.clear();
  connection.in.shrink_to_fit();
  if (options_.on_message) {
    const std::string reply = options_.on_message(*message);
    connection.Respond(ResponseCode::kHandled, reply, options_.timeout);
    return;
  }
  connection.state = Connection::State::kAwaitingReply;
  connection.deadline = absl::InfiniteFuture();  // bounded by the sender
  ForkSafeLock lock(&mu_);
  queue_.push_back(Queued{connection.id, connection.fd, *std::move(message)});
  PostEvent(message_fd_);
}

void MessageListener::Run() {
  pthread_setname_np(pthread_self(), "onlyone-listen");  // for ps -L, gdb
  std::vector<std::unique_ptr<Connection>> connections;
  // Among the connections that wait for their peer, the one whose peer has
  // made no progress for the longest (the oldest of equals); end() if none.
  const auto least_recent_progress = [&connections] {
    auto found = connections.end();
    for (auto it = connections.begin(); it != connections.end(); ++it) {
      if ((*it)->WaitsForPeer() &&
          (found == connections.end() ||
           (*it)->last_progress < (*found)->last_progress)) {
        found = it;
      }
    }
    return found;
  };
  std::vector<pollfd> poll_fds;
  uint64_t next_id = 1;
  const uid_t self_uid = geteuid();
  for (;;) {
    {
      ForkSafeLock lock(&mu_);
      // Replies first: one given just before Stop() still goes out.
      for (auto& [id, text] : replies_) {
        for (auto& connection : connections) {
          if (connection->id == id &&
              connection->state == Connection::State::kAwaitingReply) {
            connection->Respond(ResponseCode::kHandled, text,
                                options_.timeout);
          }
        }
      }
      replies_.clear();
      if (stopping_) break;
    }
    const absl::Time now = MonotonicNow();
    absl::Time next_deadline = absl::InfiniteFuture();
    poll_fds.clear();
    poll_fds.push_back({wake_fd_, POLLIN, 0});
    // When full, a new connection makes room by displacing one that waits
    // for its peer; with none (all wait for the application), new senders
    // wait in the backlog.
    const bool accepting = connections.size() < kMaxListenerConnections ||
                           least_recent_progress() != connections.end();
    poll_fds.push_back({accepting ? listen_fd_ : -1, POLLIN, 0});
    for (auto& connection : connections) {
      if (connection->deadline <= now)
        connection->state = Connection::State::kDone;
      short events = 0;
      switch (connection->state) {
        case Connection::State::kReading:
          events = POLLIN;
          break;
        case Connection::State::kWriting:
          events = POLLOUT;
          break;
        case Connection::State::kAwaitingReply:
        case Connection::State::kDone:
          break;  // POLLHUP still tells that the sender left
      }
      poll_fds.push_back({connection->fd, events, 0});
      next_deadline = std::min(next_deadline, connection->deadline);
    }
    // Connections that timed out are dropped before sleeping.
    bool any_done = false;
    for (auto& connection : connections) {
      any_done = any_done || connection->state == Connection::State::kDone;
    }
    const int ready = any_done ? 0
                               : poll(poll_fds.data(), poll_fds.size(),
                                      PollTimeout(next_deadline));
    if (ready < 0 && errno != EINTR) break;
    if (ready > 0) {
      if (poll_fds[0].revents != 0) ConsumeEvent(wake_fd_);
      for (size_t i = 0; i < connections.size(); ++i) {
        Connection& connection = *connections[i];
        const short revents = poll_fds[i + 2].revents;
        if (revents == 0) continue;
        switch (connection.state) {
          case Connection::State::kReading:
            if (connection.ReadSome(options_.max_message_bytes,
                                    options_.timeout)) {
              HandleComplete(connection);
            }
            break;
          case Connection::State::kWriting:
            connection.WriteSome();
            break;
          case Connection::State::kAwaitingReply:
            if ((revents & (POLLHUP | POLLERR)) != 0) {
              Drop(connection.id);
              connection.state = Connection::State::kDone;
            }
            break;
          case Connection::State::kDone:
            break;
        }
      }
    }
    connections.erase(
        std::remove_if(connections.begin(), connections.end(),
                       [](const std::unique_ptr<Connection>& connection) {
                         return connection->state == Connection::State::kDone;
                       }),
        connections.end());
    if (ready > 0 && (poll_fds[1].revents & POLLIN) != 0) {
      // poll(2) said that a connection waits; whether more do, only
      // accept(2) tells, and it is not asked at the price of displacing one.
      for (bool known_waiting = true;
           known_waiting || connections.size() < kMaxListenerConnections;
           known_waiting = false) {
        if (connections.size() >= kMaxListenerConnections) {
          // Full: the connection whose peer has made no progress for the
          // longest goes, so that idle or stalled peers cannot keep a ready
          // sender waiting (its request is usually complete at accept).
          const auto displaced = least_recent_progress();
          if (displaced == connections.end()) break;
          connections.erase(displaced);
        }
        const int fd = RetryOnEintr([&] {
          return accept4(listen_fd_, nullptr, nullptr,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        });
        // EAGAIN: none left; EMFILE etc.: retried next round.
        if (fd < 0) break;
        struct ucred peer {};
        socklen_t peer_length = sizeof peer;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_length) != 0) {
          close(fd);
          continue;
        }
        auto connection =
            std::make_unique<Connection>(fd, next_id++, peer.pid, peer.uid,
                                         MonotonicNow(), options_.timeout);
        if (!options_.accept_other_users && peer.uid != self_uid) {
          connection->Respond(
              ResponseCode::kRefused,
              absl::StrCat("it accepts messages only from uid ", self_uid,
                           ", and the sender has uid ", peer.uid),
              options_.timeout);
        } else if (connection->ReadSome(options_.max_message_bytes,
                                        options_.timeout)) {
          // Usually the request is already there: no extra poll round.
          HandleComplete(*connection);
        }
        if (connection->state != Connection::State::kDone) {
          connections.push_back(std::move(connection));
        }
      }
    }
  }
  // Stopping. Responses are a few bytes into an empty socket buffer, so one
  // non-blocking attempt delivers them; senders still waiting are told that
  // this copy is exiting rather than seeing the connection just close.
  for (auto& connection : connections) {
    switch (connection->state) {
      case Connection::State::kWriting:
        connection->WriteSome();
        break;
      case Connection::State::kReading:
      case Connection::State::kAwaitingReply:
        connection->Respond(ResponseCode::kShuttingDown,
                            "it is exiting and answers no more messages",
                            options_.timeout);
        break;
      case Connection::State::kDone:
        break;
    }
  }
  ForkSafeLock lock(&mu_);
  while (!queue_.empty()) {
    queue_.pop_front();
    ConsumeEvent(message_fd_);
  }
  taken_id_ = 0;
}

// ---------------------------------------------------------------------------
// The sender.

namespace {

enum class IoResult { kDone, kTimedOut, kClosed, kFailed };

IoResult WriteAll(int fd, absl::string_view bytes, absl::Time deadline,
                  int* error_number) {
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t sent = RetryOnEintr([&] {
      return send(fd, bytes.data() + written, bytes.size() - written,
                  MSG_NOSIGNAL);
    });
    if (sent >= 0) {
      written += static_cast<size_t>(sent);
      continue;
    }
    *error_number = errno;
    if (errno == EPIPE || errno == ECONNRESET) return IoResult::kClosed;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return IoResult::kFailed;
    struct pollfd writable = {fd, POLLOUT, 0};
    const int timeout_ms = PollTimeout(deadline);
    if (timeout_ms == 0) return IoResult::kTimedOut;
    const int ready = poll(&writable, 1, timeout_ms);
    if (ready < 0 && errno != EINTR) {
      *error_number = errno;
      return IoResult::kFailed;
    }
  }
  return IoResult::kDone;
}

IoResult ReadExactly(int fd, size_t count, absl::Time deadline,
                     std::string* out, int* error_number) {
  const size_t start = out->size();
  out->resize(start + count);
  size_t filled = 0;
  while (filled < count) {
    const ssize_t got = RetryOnEintr(
        [&] { return recv(fd, out->data() + start + filled, count - filled, 0); });
    if (got > 0) {
      filled += static_cast<size_t>(got);
      continue;
    }
    if (got == 0) return IoResult::kClosed;
    *error_number = errno;
    if (errno == ECONNRESET) return IoResult::kClosed;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return IoResult::kFailed;
    struct pollfd readable = {fd, POLLIN, 0};
    const int timeout_ms = PollTimeout(deadline);
    if (timeout_ms == 0) return IoResult::kTimedOut;
    const int ready = poll(&readable, 1, timeout_ms);
    if (ready < 0 && errno != EINTR) {
      *error_number = errno;
      return IoResult::kFailed;
    }
  }
  return IoResult::kDone;
}

// Connects with a blocking connect(2) bounded by SO_SNDTIMEO: when the
// primary's backlog is full, the kernel waits for room (no retry loop) and
// gives up with EAGAIN at the timeout.
absl::Status Connect(int fd, const UnixAddress& address,
                     const SendTarget& target, absl::Time deadline) {
  for (;;) {
    const absl::Duration left = deadline - MonotonicNow();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the running copy of ", target.name,
          " did not accept the connection within ",
          absl::FormatDuration(target.timeout), " (it is busy or hung)"));
    }
    struct timeval timeout =
        absl::ToTimeval(std::max(left, absl::Microseconds(1)));
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout) !=
        0) {
      return PosixError(absl::StrCat(target.socket_path, ": setsockopt"),
                        errno);
    }
    if (connect(fd, address.get(), address.length()) == 0) {
      return absl::OkStatus();
    }
    const int error_number = errno;
    switch (error_number) {
      case EINTR:
        continue;
      case EAGAIN:
      case EINPROGRESS:
        return absl::DeadlineExceededError(absl::StrCat(
            "the running copy of ", target.name,
            " did not accept the connection within ",
            absl::FormatDuration(target.timeout), " (it is busy or hung)"));
      case ENOENT:
        return absl::UnavailableError(
            absl::StrCat("no running copy of ", target.name,
                         " is listening for messages (no socket at ",
                         target.socket_path, ")"));
      case ECONNREFUSED:
        return absl::UnavailableError(absl::StrCat(
            "no running copy of ", target.name,
            " is listening for messages (nothing accepts connections at ",
            target.socket_path, ")"));
      default:
        return PosixError(absl::StrCat(target.socket_path, ": connect"),
                          error_number);
    }
  }
}

// A primary of another user must hold the lock: anyone may bind a socket
// in a shared directory while no primary listens.
absl::Status VerifyOtherUsersPrimary(const SendTarget& target,
                                     const struct ucred& server) {
  struct stat lock_file;
  if (lstat(target.lock_path.c_str(), &lock_file) == 0 &&
      S_ISREG(lock_file.st_mode)) {
    for (const FlockHolder& holder :
         FlockHolders(lock_file.st_dev, lock_file.st_ino)) {
      if (holder.pid == server.pid) return absl::OkStatus();
    }
  }
  return absl::PermissionDeniedError(
      absl::StrCat("not sending to ", target.socket_path,
                   ": it is served by pid ", server.pid, " (uid ", server.uid,
                   "), which does not hold the lock ", target.lock_path));
}

}  // namespace

absl::StatusOr<std::string> SendMessage(
    const SendTarget& target, const ChannelMessage& message) {
  const std::string request = EncodeRequest(message);
  const size_t body_bytes = request.size() - kFrameHeaderBytes;
  if (body_bytes > target.max_message_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "message for ", target.name, " is ", body_bytes,
        " bytes; max_message_bytes is ", target.max_message_bytes));
  }
  if (target.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "message for ", target.name, ": message_timeout must be positive, not ",
        absl::FormatDuration(target.timeout)));
  }
  const absl::Time deadline = target.timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : MonotonicNow() + target.timeout;
  UnixAddress address;
  if (absl::Status set = address.Set(target.socket_path); !set.ok()) return set;
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return PosixError(absl::StrCat(target.socket_path, ": socket"), errno);
  }
  absl::Cleanup close_fd = [fd] { close(fd); };
  if (absl::Status connected = Connect(fd, address, target, deadline);
      !connected.ok()) {
    return connected;
  }
  if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0) {
    return PosixError(absl::StrCat(target.socket_path, ": fcntl"), errno);
  }
  struct ucred server {};
  socklen_t server_length = sizeof server;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &server, &server_length) != 0) {
    return PosixError(absl::StrCat(target.socket_path, ": SO_PEERCRED"), errno);
  }
  if (server.uid != geteuid()) {
    if (absl::Status verified = VerifyOtherUsersPrimary(target, server);
        !verified.ok()) {
      return verified;
    }
  }
  const std::string primary = absl::StrCat("the running copy of ", target.name,
                                           " (pid ", server.pid, ")");
  const std::string closed_early = absl::StrCat(
      primary, " closed the connection before answering (it may be exiting)");

  int error_number = 0;
  const IoResult sent = WriteAll(fd, request, deadline, &error_number);
  if (sent == IoResult::kTimedOut) {
    return absl::DeadlineExceededError(
        absl::StrCat(primary, " did not take the message within ",
                     absl::FormatDuration(target.timeout)));
  }
  if (sent == IoResult::kFailed) {
    return PosixError(absl::StrCat(target.socket_path, ": send"), error_number);
  }
  // kClosed: a primary that refuses a message closes without reading it; its
  // response may still be waiting to be read.
  std::string response;
  IoResult got =
      ReadExactly(fd, kFrameHeaderBytes, deadline, &response, &error_number);
  if (got == IoResult::kDone &&
      absl::string_view(response).substr(0, 4) != kResponseMagic) {
    return absl::InternalError(absl::StrCat(
        target.socket_path, ": the peer does not speak the onlyone protocol"));
  }
  const size_t max_response =
      1 + std::max(target.max_message_bytes, kMinResponseBytes);
  if (got == IoResult::kDone) {
    const size_t length = ReadU32(response.data() + 4);
    if (length == 0 || length > max_response) {
      return absl::ResourceExhaustedError(absl::StrCat(
          primary, " sent a reply of ", length > 0 ? length - 1 : 0,
          " bytes; max_message_bytes is ", target.max_message_bytes));
    }
    response.clear();
    got = ReadExactly(fd, length, deadline, &response, &error_number);
  }
  switch (got) {
    case IoResult::kDone:
      break;
    case IoResult::kTimedOut:
      return absl::DeadlineExceededError(
          absl::StrCat(primary, " did not answer within ",
                       absl::FormatDuration(target.timeout)));
    case IoResult::kClosed:
      return absl::UnavailableError(closed_early);
    case IoResult::kFailed:
      return PosixError(absl::StrCat(target.socket_path, ": recv"),
                        error_number);
  }
  const ResponseCode code = static_cast<ResponseCode>(response[0]);
  std::string text = response.substr(1);
  switch (code) {
    case ResponseCode::kHandled:
      return text;
    case ResponseCode::kRefused:
      return absl::PermissionDeniedError(
          absl::StrCat(primary, " refused the message: ", text));
    case ResponseCode::kTooLarge:
      return absl::ResourceExhaustedError(
          absl::StrCat(primary, " refused the message: ", text));
    case ResponseCode::kShuttingDown:
      return absl::UnavailableError(
          absl::StrCat(primary, " is shutting down: ", text));
    case ResponseCode::kMalformed:
    default:
      return absl::InternalError(
          absl::StrCat(primary, " could not read the message: ", text));
  }
}

}  // namespace onlyone::internal
