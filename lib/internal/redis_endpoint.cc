#include "onlyone/internal/redis_endpoint.h"

#include <cerrno>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "onlyone/internal/posix_error.h"
#include "onlyone/internal/printable.h"
#include "onlyone/internal/small_file.h"

namespace onlyone::internal {
namespace {

constexpr size_t kPasswordFileLimit = 4096;

absl::Status BadUrl(absl::string_view url, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(
      "bad Redis URL '", Printable(MaskPassword(url)), "': ", reason,
      " (expected redis://[user:password@]host:port[/db] or "
      "unix:///path/to/redis.sock)"));
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = absl::ascii_tolower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Percent-decodes `text`; false on a malformed escape.
bool PercentDecode(absl::string_view text, std::string* decoded) {
  decoded->clear();
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      decoded->push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size()) return false;
    const int high = HexDigit(text[i + 1]);
    const int low = HexDigit(text[i + 2]);
    if (high < 0 || low < 0) return false;
    decoded->push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  return true;
}

bool ParseDb(absl::string_view text, int* db) {
  return !text.empty() && absl::SimpleAtoi(text, db) && *db >= 0 &&
         *db <= 100000 && absl::ascii_isdigit(text[0]);
}

absl::StatusOr<RedisEndpoint> ParseUnixUrl(absl::string_view url,
                                           absl::string_view rest) {
  RedisEndpoint endpoint;
  endpoint.transport = RedisEndpoint::Transport::kUnix;
  const size_t query = rest.find('?');
  absl::string_view path = rest.substr(0, query);
  if (query != absl::string_view::npos) {
    absl::string_view parameter = rest.substr(query + 1);
    if (!absl::ConsumePrefix(&parameter, "db=") ||
        !ParseDb(parameter, &endpoint.db)) {
      return BadUrl(url, "the only query a unix URL takes is ?db=N");
    }
  }
  if (!absl::StartsWith(path, "/")) {
    return BadUrl(url, "a unix socket path must be absolute (unix:///path)");
  }
  if (path.size() >= 108) {
    return BadUrl(url, "the socket path is longer than a unix socket allows");
  }
  endpoint.socket_path = std::string(path);
  return endpoint;
}

absl::StatusOr<RedisEndpoint> ParseTcpUrl(absl::string_view url,
                                          absl::string_view rest) {
  RedisEndpoint endpoint;
  const size_t slash = rest.find('/');
  absl::string_view authority = rest.substr(0, slash);
  if (slash != absl::string_view::npos) {
    const absl::string_view db = rest.substr(slash + 1);
    if (!db.empty() && !ParseDb(db, &endpoint.db)) {
      return BadUrl(url, "the database after '/' must be a number");
    }
  }
  const size_t at = authority.rfind('@');
  if (at != absl::string_view::npos) {
    const absl::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    const size_t colon = userinfo.find(':');
    if (!PercentDecode(userinfo.substr(0, colon), &endpoint.user)) {
      return BadUrl(url, "a malformed %-escape in the user name");
    }
    if (colon != absl::string_view::npos &&
        !PercentDecode(userinfo.substr(colon + 1), &endpoint.password)) {
      return BadUrl(url, "a malformed %-escape in the password");
    }
  }
  absl::string_view port;
  if (absl::ConsumePrefix(&authority, "[")) {
    const size_t close = authority.find(']');
    if (close == absl::string_view::npos) {
      return BadUrl(url, "an IPv6 address without its closing ']'");
    }
    endpoint.host = std::string(authority.substr(0, close));
    authority = authority.substr(close + 1);
    if (!authority.empty() && !absl::ConsumePrefix(&authority, ":")) {
      return BadUrl(url, "text after the IPv6 address");
    }
    port = authority;
  } else {
    const size_t colon = authority.find(':');
    endpoint.host = std::string(authority.substr(0, colon));
    if (colon != absl::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return BadUrl(url, "an empty port after ':'");
    }
  }
  if (endpoint.host.empty()) return BadUrl(url, "no host");
  for (const char c : endpoint.host) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '-' && c != ':' &&
        c != '_') {
      return BadUrl(url, "the host has a character hosts do not have");
    }
  }
  if (!port.empty() &&
      (!absl::SimpleAtoi(port, &endpoint.port) || endpoint.port < 1 ||
       endpoint.port > 65535 || !absl::ascii_isdigit(port[0]))) {
    return BadUrl(url, "the port must be a number from 1 to 65535");
  }
  return endpoint;
}

}  // namespace

std::string RedisEndpoint::Describe() const {
  if (transport == Transport::kUnix) {
    return db == 0 ? absl::StrCat("unix://", socket_path)
                   : absl::StrCat("unix://", socket_path, "?db=", db);
  }
  const std::string shown_host =
      absl::StrContains(host, ':') ? absl::StrCat("[", host, "]") : host;
  return absl::StrCat("redis://", user.empty() ? "" : user + "@", shown_host,
                      ":", port, db == 0 ? "" : absl::StrCat("/", db));
}

std::string RedisEndpoint::ConnectionKey() const {
  return absl::StrCat(Describe(), "\n", user, "\n", password);
}

std::string MaskPassword(absl::string_view url) {
  const size_t scheme = url.find("://");
  if (scheme == absl::string_view::npos) return std::string(url);
  const size_t authority_start = scheme + 3;
  const size_t authority_end = url.find('/', authority_start);
  const absl::string_view authority =
      url.substr(authority_start, authority_end == absl::string_view::npos
                                      ? absl::string_view::npos
                                      : authority_end - authority_start);
  const size_t at = authority.rfind('@');
  if (at == absl::string_view::npos) return std::string(url);
  const size_t colon = authority.substr(0, at).find(':');
  if (colon == absl::string_view::npos) return std::string(url);
  return absl::StrCat(url.substr(0, authority_start + colon + 1), "***",
                      url.substr(authority_start + at));
}

absl::StatusOr<RedisEndpoint> ParseRedisUrl(absl::string_view url) {
  absl::string_view rest = url;
  if (absl::ConsumePrefix(&rest, "unix://")) return ParseUnixUrl(url, rest);
  if (absl::ConsumePrefix(&rest, "redis://")) return ParseTcpUrl(url, rest);
  if (absl::StartsWith(url, "rediss://")) {
    return BadUrl(url, "TLS (rediss://) is not supported");
  }
  return BadUrl(url, "it must start with redis:// or unix://");
}

absl::Status ResolvePassword(absl::string_view password_file,
                             RedisEndpoint& endpoint) {
  if (!endpoint.password.empty()) return absl::OkStatus();
  std::string file(password_file);
  if (file.empty()) {
    const char* from_env = std::getenv(kRedisPasswordFileEnv);
    if (from_env != nullptr) file = from_env;
  }
  if (!file.empty()) {
    std::string contents;
    if (!ReadSmallFile(file, kPasswordFileLimit, &contents)) {
      const int error_number = errno;
      return PosixError(
          absl::StrCat(Printable(file), ": reading the Redis password file"),
          error_number);
    }
    absl::string_view password = contents;
    if (absl::ConsumeSuffix(&password, "\n")) absl::ConsumeSuffix(&password, "\r");
    endpoint.password = std::string(password);
    return absl::OkStatus();
  }
  const char* password = std::getenv(kRedisPasswordEnv);
  if (password != nullptr) endpoint.password = password;
  return absl::OkStatus();
}

}  // namespace onlyone::internal
