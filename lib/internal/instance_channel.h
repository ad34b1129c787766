// Messages from later copies to the running (primary) copy of a
// SingleInstance, over a unix-domain stream socket beside the lock file
// (DIR/NAME.sock).
//
// Who may create the socket: only the lock holder, after it took the lock.
// A socket left behind by a crashed primary is removed and re-created by the
// next one, but only when it is provably that: a socket (lstat(2)), owned by
// our effective uid, that nobody listens on (a connect attempt is refused).
// Anything else at the path (a regular file, a symlink, a FIFO, another
// user's socket, a socket someone listens on) is left as it is, and Start()
// fails naming it. Only the holder ever removes the socket, and only the
// file it bound (device and inode checked) when it stops.
//
// Wire protocol, version 1: one request and one response per connection.
//   request:  "OO1Q" <u32 body length, big-endian> <body>
//             body = <u32 argc> argc x (<u32 n> <n bytes>)
//                    <u32 n> <working directory> <u32 n> <payload>
//   response: "OO1R" <u32 body length, big-endian> <body>
//             body = <u8 code> <text>; code 0: handled, text is the reply;
//             1: refused (a peer of another user), 2: too large,
//             3: malformed, 4: shutting down; text is then the reason.
// The sender's pid and uid come from SO_PEERCRED, never from the message.
//
// Deadlines: the sender bounds connect, send and the wait for the response
// by one timeout (a blocking connect(2) with SO_SNDTIMEO, which waits for
// room in a full backlog, then non-blocking I/O with poll(2)). Nothing polls
// on a timer: every wait is poll(2) on descriptors with the nearest deadline
// as timeout.
//
// Availability: the listener thread multiplexes up to
// kMaxListenerConnections connections with poll(2), each non-blocking with
// its own buffer and deadline (timeout for reading the request, and again
// for writing the response), and handles each request as soon as it is
// complete (those complete at once in the order they connected);
// on_message still runs for one message at a time. When it is full, a new
// connection displaces the one whose peer has made no progress for the longest
// among those waiting for their peer (to send, or to take the response), which
// is closed without an answer; connections whose message waits for the
// application (queue mode) are never displaced, and while only those are open
// new senders wait in the backlog. So idle, slow or stalled peers cost at most
// a descriptor each, up to the cap, and cannot delay a sender that sends its
// request at once.
//
// Fork: a fork()ed child does not inherit the listener's thread; a
// pthread_atfork handler closes the listening socket in the child, so a child
// outliving the primary does not keep a socket nobody answers, and Stop() in
// the child only closes descriptors (it never joins a thread that is not
// there, nor removes the socket).

#ifndef ONLYONE_LIB_INTERNAL_INSTANCE_CHANNEL_H_
#define ONLYONE_LIB_INTERNAL_INSTANCE_CHANNEL_H_

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "onlyone/internal/fork_safe_mutex.h"

namespace onlyone::internal {

// One message as the channel carries it. (SingleInstance's public
// ChannelMessage has the same fields; the library converts, so that this
// internal header needs no public one.)
struct ChannelMessage {
  std::vector<std::string> arguments;
  std::string working_directory;
  std::string payload;
  pid_t sender_pid = 0;  // from SO_PEERCRED, never from the message
  uid_t sender_uid = 0;
};

enum class ResponseCode : uint8_t {
  kHandled = 0,
  kRefused = 1,
  kTooLarge = 2,
  kMalformed = 3,
  kShuttingDown = 4,
};

// Frames (header and body) for the wire protocol above.
std::string EncodeRequest(const ChannelMessage& message);
std::string EncodeResponse(ResponseCode code, absl::string_view text);
// Parses a request body (without the 8-byte header).
std::optional<ChannelMessage> DecodeRequestBody(absl::string_view body);

inline constexpr size_t kFrameHeaderBytes = 8;

// Connections a listener keeps open at once (see Availability above).
inline constexpr size_t kMaxListenerConnections = 32;

// One instance's socket and the bounds of each exchange on it: what the
// listener and a sender share.
struct ChannelEndpoint {
  std::string name;         // for messages
  std::string socket_path;  // DIR/NAME.sock
  size_t max_message_bytes = 64 * 1024;
  // Bounds each connect, read, write and reply.
  absl::Duration timeout = absl::Seconds(5);
};

struct ListenerOptions : ChannelEndpoint {
  bool shared = false;  // socket mode 0666 (else 0600)
  bool accept_other_users = false;
  // Runs on the listener thread; its result is the reply. Empty: messages
  // queue for Take().
  std::function<std::string(const ChannelMessage&)> on_message;
};

// The primary's side. Thread safety: Take(), Reply() and message_fd() may be
// called from any one thread while the listener thread runs; Stop() from the
// thread that owns the object.
class MessageListener {
 public:
  // Creates the socket and starts the thread. The caller holds the
  // instance's lock. A stale socket of ours is replaced; FailedPrecondition,
  // naming the path and what is there, when anything else is in the way.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<MessageListener>> Start(
      ListenerOptions options);

  MessageListener(const MessageListener&) = delete;
  MessageListener& operator=(const MessageListener&) = delete;
  ~MessageListener();

  // Stops accepting, joins the thread and closes every connection (their
  // senders get Unavailable); removes the socket file when `remove_socket`.
  // Idempotent.
  [[nodiscard]] absl::Status Stop(bool remove_socket);

  // True in a fork()ed child: the object must then be leaked after Stop(),
  // never destroyed, because its mutex may have been held by the parent's
  // listener thread at the fork, and destroying a locked mutex is undefined.
  bool IsForkedCopy() const;

  // Queue mode: readable (an eventfd) while Take() has a message; else -1.
  int message_fd() const;

  // Queue mode: the oldest waiting message whose sender still waits for the
  // answer (a sender that gave up is never delivered). Replies "" to the
  // previously taken message if Reply() was not called for it.
  std::optional<ChannelMessage> Take();
  // Queue mode: answers the message last returned by Take().
  [[nodiscard]] absl::Status Reply(absl::string_view reply);

 private:
  struct Connection;
  struct Queued {
    uint64_t id;
    // The connection's descriptor: open as long as the entry is queued (the
    // thread closes a waiting connection only after removing its entry).
    int fd;
    ChannelMessage message;
  };

  MessageListener(ListenerOptions options, int listen_fd, int wake_fd,
                  int message_fd, dev_t device, ino_t inode);
  void Run();
  void Wake();
  void HandleComplete(Connection& connection);
  void Drop(uint64_t id);

  const ListenerOptions options_;
  const int listen_fd_;
  const int wake_fd_;     // eventfd: Stop() and Reply() wake the thread
  const int message_fd_;  // eventfd (semaphore mode), queue mode only
  const dev_t socket_device_;
  const ino_t socket_inode_;
  // The process that started the thread; in a fork()ed child the thread
  // does not exist.
  const pid_t owner_pid_;
  std::unique_ptr<std::thread> thread_;
  bool stopped_ = false;

  // A pthread mutex rather than absl::Mutex: ThreadSanitizer sees its
  // synchronisation (Debian's Abseil is not instrumented; docs/testing.md).
  ForkSafeMutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t taken_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::pair<uint64_t, std::string>> replies_ ABSL_GUARDED_BY(mu_);
};

struct SendTarget : ChannelEndpoint {
  std::string lock_path;  // to verify a primary of another user
};

// The sender's side: sends `message` and returns the reply. See
// SingleInstance::Send() for the status codes.
[[nodiscard]] absl::StatusOr<std::string> SendMessage(
    const SendTarget& target, const ChannelMessage& message);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_INSTANCE_CHANNEL_H_
