// Where a Redis server is and how to log in: the parsed form of the URLs
// RedisLockOptions::server takes, and the one place the password is found.
//
// Example:
//   absl::StatusOr<RedisEndpoint> server =
//       ParseRedisUrl("redis://jobs:secret@10.0.0.5:6379/2");
//   if (!server.ok()) return server.status();  // InvalidArgument
//   ABSL_RAW_LOG(INFO, "%s", server->Describe().c_str());
//   // "redis://jobs@10.0.0.5:6379/2": never the password
//
// URLs:
//   redis://[user[:password]@]host[:port][/db]   TCP (port 6379 by default;
//                                                an IPv6 host in brackets)
//   unix:///path/to/redis.sock[?db=N]             a unix socket
// The user and password may be percent-encoded (%40 for '@').
//
// The password, when the URL has none, comes from (first found):
//   the file named by `password_file` (RedisLockOptions::password_file),
//   the file named by $ONLYONE_REDIS_PASSWORD_FILE,
//   $ONLYONE_REDIS_PASSWORD.
// A file's content is the password, one trailing newline removed. None of
// them puts the password on a command line that ps(1) shows, and no message
// built here or from Describe() contains it.
//
// Thread safety: pure functions, except that ResolvePassword reads the
// environment (getenv).

#ifndef ONLYONE_LIB_INTERNAL_REDIS_ENDPOINT_H_
#define ONLYONE_LIB_INTERNAL_REDIS_ENDPOINT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace onlyone::internal {

inline constexpr char kRedisPasswordEnv[] = "ONLYONE_REDIS_PASSWORD";
inline constexpr char kRedisPasswordFileEnv[] = "ONLYONE_REDIS_PASSWORD_FILE";

struct RedisEndpoint {
  enum class Transport { kTcp, kUnix };
  Transport transport = Transport::kTcp;
  std::string host;         // kTcp
  int port = 6379;          // kTcp
  std::string socket_path;  // kUnix
  std::string user;         // "" for the default user
  std::string password;     // "" for none
  int db = 0;

  // The server for messages, e.g. "redis://jobs@10.0.0.5:6379/2" or
  // "unix:///run/redis.sock": never the password.
  std::string Describe() const;
  // Identifies the server and the login, to share connections: includes
  // the password, so it is never shown.
  std::string ConnectionKey() const;
};

// Parses `url`; InvalidArgument naming the URL (password masked) and what
// is wrong with it.
[[nodiscard]] absl::StatusOr<RedisEndpoint> ParseRedisUrl(absl::string_view url);

// Fills endpoint.password from the sources above when the URL gave none;
// an unreadable password file is an error naming the file.
[[nodiscard]] absl::Status ResolvePassword(absl::string_view password_file,
                                           RedisEndpoint& endpoint);

// `url` with any password replaced by "***", for messages.
std::string MaskPassword(absl::string_view url);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_REDIS_ENDPOINT_H_
