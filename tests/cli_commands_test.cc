// Helpers of the onlyone subcommands (cli/commands.h): name checks, the
// default name, exit codes of errors, and the JSON of status and list (and
// of a semaphore's slots).

#include "cli/commands.h"

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cli/exit_codes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "onlyone/single_instance.h"

namespace onlyone::cli {
namespace {

using ::testing::HasSubstr;

// The command checks names with the library's rule, ValidateInstanceName().
TEST(CliValidateNameTest, AcceptsNames) {
  for (const std::string& name :
       {std::string("a"), std::string("com.example.Editor"),
        std::string("x_y-1"), std::string(200, 'n'), std::string("...")}) {
    EXPECT_TRUE(ValidateInstanceName(name).ok()) << name;
  }
}

TEST(CliValidateNameTest, RefusesWithAReason) {
  EXPECT_THAT(ValidateInstanceName("").message(), HasSubstr("empty"));
  EXPECT_THAT(ValidateInstanceName(".").message(),
              HasSubstr("names a directory"));
  EXPECT_THAT(ValidateInstanceName("..").message(),
              HasSubstr("names a directory"));
  EXPECT_THAT(ValidateInstanceName(std::string(201, 'n')).message(),
              HasSubstr("the limit is 200"));
  EXPECT_THAT(ValidateInstanceName("a/b").message(),
              HasSubstr("\"a/b\" has character '/' at position 2"));
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateInstanceName("caf\xc3\xa9")));
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateInstanceName("a\nb")));
}

TEST(CliNameFromCommandTest, BaseNameWithBadCharactersReplaced) {
  EXPECT_EQ(NameFromCommand("/usr/local/bin/sync.sh"), "sync.sh");
  EXPECT_EQ(NameFromCommand("backup"), "backup");
  EXPECT_EQ(NameFromCommand("./my job"), "my_job");
  EXPECT_EQ(NameFromCommand("/opt/tool/"), "tool");
  EXPECT_EQ(NameFromCommand("caf\xc3\xa9-x.1"), "caf__-x.1");
  EXPECT_EQ(NameFromCommand(std::string(300, 'x')), std::string(200, 'x'));
  // What makes no name at all.
  EXPECT_EQ(NameFromCommand(".."), "");
  EXPECT_EQ(NameFromCommand("/"), "");
}

TEST(CliExitCodeTest, ErrorsMapToSysexits) {
  EXPECT_EQ(ExitCodeForError(absl::InvalidArgumentError("x")), kExitUsage);
  EXPECT_EQ(ExitCodeForError(absl::InternalError("x")), kExitSoftware);
  EXPECT_EQ(ExitCodeForError(absl::UnknownError("x")), kExitSoftware);
  EXPECT_EQ(ExitCodeForError(absl::PermissionDeniedError("x")), kExitOsError);
  EXPECT_EQ(ExitCodeForError(absl::NotFoundError("x")), kExitOsError);
  EXPECT_EQ(ExitCodeForError(absl::FailedPreconditionError("x")),
            kExitOsError);
  EXPECT_EQ(ExitCodeForError(absl::ResourceExhaustedError("x")),
            kExitOsError);
}

TEST(CliJsonTest, HolderWithRecord) {
  InstanceInfo holder;
  holder.pid = 4711;
  holder.has_record = true;
  holder.process_start_time = absl::FromUnixSeconds(1795316401);
  holder.acquired_at = absl::FromUnixMillis(1795316401250);
  holder.boot_id = "boot";
  holder.hostname = "build-7";
  holder.uid = 1000;
  holder.user = "alice";
  holder.executable = "/usr/bin/onlyone";
  holder.command_line = {"/usr/bin/backup", "--full"};
  holder.version = "0.1.0";
  const nlohmann::json json =
      nlohmann::json::parse(HolderToJson(holder).dump());
  EXPECT_EQ(json["pid"], 4711);
  EXPECT_EQ(json["has_record"], true);
  EXPECT_EQ(json["process_start_time"], "2026-11-22T03:00:01+00:00");
  EXPECT_EQ(json["acquired_at"], "2026-11-22T03:00:01.25+00:00");
  EXPECT_EQ(json["boot_id"], "boot");
  EXPECT_EQ(json["hostname"], "build-7");
  EXPECT_EQ(json["uid"], 1000);
  EXPECT_EQ(json["user"], "alice");
  EXPECT_EQ(json["executable"], "/usr/bin/onlyone");
  EXPECT_EQ(json["command_line"],
            nlohmann::json::array({"/usr/bin/backup", "--full"}));
  EXPECT_EQ(json["version"], "0.1.0");
  // Keys in the documented order.
  EXPECT_EQ(HolderToJson(holder).begin().key(), "pid");
}

TEST(CliJsonTest, HolderWithoutRecordHasNulls) {
  InstanceInfo holder;
  holder.pid = 12;
  const nlohmann::ordered_json json = HolderToJson(holder);
  EXPECT_EQ(json["pid"], 12);
  EXPECT_EQ(json["has_record"], false);
  for (const char* field :
       {"process_start_time", "acquired_at", "boot_id", "hostname", "uid",
        "user", "executable", "command_line", "version"}) {
    EXPECT_TRUE(json[field].is_null()) << field;
  }
}

TEST(CliJsonTest, FreeLock) {
  const nlohmann::ordered_json json =
      LockToJson("nightly", "/run/x/nightly.lock", std::nullopt);
  EXPECT_EQ(json.dump(),
            "{\"name\":\"nightly\",\"lock_path\":\"/run/x/nightly.lock\","
            "\"held\":false,\"holder\":null}");
  EXPECT_TRUE(LockToJson("", "/tmp/a.lock", std::nullopt)["name"].is_null());
}

}  // namespace
}  // namespace onlyone::cli
