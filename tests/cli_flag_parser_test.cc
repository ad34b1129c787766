// The subcommand flag parser of the onlyone command (cli/flag_parser.h),
// on flags defined here.

#include "cli/flag_parser.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_FLAG(std::string, test_name, "", "A name.");
ABSL_FLAG(int, test_count, 3, "A count.");
ABSL_FLAG(bool, test_switch, false, "A switch.");
ABSL_FLAG(bool, test_other, false, "A flag of another subcommand.");

namespace onlyone::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr FlagSpec kAccepted[] = {
    {"test_name", "NAME"}, {"test_count", "N"}, {"test_switch", ""}};
constexpr FlagSpec kKnown[] = {{"test_name", "NAME"},
                               {"test_count", "N"},
                               {"test_switch", ""},
                               {"test_other", ""}};

class CliFlagParserTest : public ::testing::Test {
 protected:
  absl::StatusOr<ParsedArgs> Parse(const std::vector<std::string>& args,
                                   bool takes_command = true) {
    return ParseArgs(args, "try", kAccepted, kKnown, takes_command);
  }

 private:
  absl::FlagSaver saver_;
};

TEST_F(CliFlagParserTest, SetsFlagsInEverySpelling) {
  absl::StatusOr<ParsedArgs> parsed =
      Parse({"--test-name", "a", "--test_count=7", "-test-switch"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(absl::GetFlag(FLAGS_test_name), "a");
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), 7);
  EXPECT_TRUE(absl::GetFlag(FLAGS_test_switch));
  EXPECT_THAT(parsed->given,
              ElementsAre("test_name", "test_count", "test_switch"));
  EXPECT_TRUE(parsed->Given("test_count"));
  EXPECT_FALSE(parsed->help);
  EXPECT_THAT(parsed->positional, IsEmpty());
}

TEST_F(CliFlagParserTest, BooleanTakesAnExplicitValueOnlyAfterEquals) {
  ASSERT_TRUE(Parse({"--test-switch=false"}).ok());
  EXPECT_FALSE(absl::GetFlag(FLAGS_test_switch));
  absl::StatusOr<ParsedArgs> parsed = Parse({"--test-switch", "false"});
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(absl::GetFlag(FLAGS_test_switch));
  EXPECT_THAT(parsed->positional, ElementsAre("false"));
}

TEST_F(CliFlagParserTest, EverythingAfterDoubleDashIsTheCommand) {
  absl::StatusOr<ParsedArgs> parsed =
      Parse({"--test-name=x", "--", "cmd", "--test-count", "9", "--"});
  ASSERT_TRUE(parsed.ok());
  EXPECT_THAT(parsed->positional,
              ElementsAre("cmd", "--test-count", "9", "--"));
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), 3);
}

TEST_F(CliFlagParserTest, FirstNonFlagStartsTheCommand) {
  absl::StatusOr<ParsedArgs> parsed =
      Parse({"--test-name", "x", "ls", "-l", "--help"});
  ASSERT_TRUE(parsed.ok());
  EXPECT_THAT(parsed->positional, ElementsAre("ls", "-l", "--help"));
  EXPECT_FALSE(parsed->help);
}

TEST_F(CliFlagParserTest, HelpInEverySpelling) {
  for (const char* help : {"-h", "--help", "-help"}) {
    absl::StatusOr<ParsedArgs> parsed = Parse({"--test-name=x", help});
    ASSERT_TRUE(parsed.ok()) << help;
    EXPECT_TRUE(parsed->help) << help;
  }
}

TEST_F(CliFlagParserTest, UnknownFlag) {
  absl::StatusOr<ParsedArgs> parsed = Parse({"--bogus", "x"});
  ASSERT_TRUE(absl::IsInvalidArgument(parsed.status()));
  EXPECT_THAT(parsed.status().message(), HasSubstr("unknown flag \"--bogus\""));
}

TEST_F(CliFlagParserTest, FlagOfAnotherSubcommand) {
  absl::StatusOr<ParsedArgs> parsed = Parse({"--test-other"});
  ASSERT_TRUE(absl::IsInvalidArgument(parsed.status()));
  EXPECT_THAT(parsed.status().message(),
              HasSubstr("--test-other is not a flag of 'onlyone try'"));
}

TEST_F(CliFlagParserTest, MissingValue) {
  absl::StatusOr<ParsedArgs> parsed = Parse({"--test-count"});
  ASSERT_TRUE(absl::IsInvalidArgument(parsed.status()));
  EXPECT_THAT(parsed.status().message(),
              HasSubstr("--test-count needs a value (N)"));
}

TEST_F(CliFlagParserTest, BadValue) {
  absl::StatusOr<ParsedArgs> parsed = Parse({"--test-count=many"});
  ASSERT_TRUE(absl::IsInvalidArgument(parsed.status()));
  EXPECT_THAT(parsed.status().message(),
              HasSubstr("--test-count: invalid value \"many\""));
  parsed = Parse({"--test-switch=maybe"});
  ASSERT_TRUE(absl::IsInvalidArgument(parsed.status()));
  EXPECT_THAT(parsed.status().message(), HasSubstr("true or false"));
}

TEST_F(CliFlagParserTest, PositionalRefusedWithoutCommand) {
  absl::StatusOr<ParsedArgs> parsed =
      Parse({"stray"}, /*takes_command=*/false);
  ASSERT_TRUE(absl::IsInvalidArgument(parsed.status()));
  EXPECT_THAT(parsed.status().message(), HasSubstr("\"stray\""));
  parsed = Parse({"--", "stray"}, /*takes_command=*/false);
  ASSERT_TRUE(absl::IsInvalidArgument(parsed.status()));
}

TEST_F(CliFlagParserTest, LastValueWins) {
  ASSERT_TRUE(Parse({"--test-count=1", "--test-count=2"}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), 2);
}

TEST(CliFlagHelpTest, ListsFlagsWithMetavarHelpAndDefault) {
  const std::string help = FlagsHelp(kAccepted);
  EXPECT_THAT(help, HasSubstr("  --test-name NAME\n      A name.\n"));
  EXPECT_THAT(help, HasSubstr("  --test-count N\n      A count. (default: 3)"));
  EXPECT_THAT(help, HasSubstr("  --test-switch\n      A switch.\n"));
}

TEST(CliFlagHelpTest, WrapsAtTheWidth) {
  EXPECT_EQ(Wrap("aaa bbb ccc", 2, 10), "  aaa bbb\n  ccc\n");
  EXPECT_EQ(Wrap("one\ntwo", 0), "one\ntwo\n");
}

TEST(CliFlagHelpTest, DashedName) {
  EXPECT_EQ(DashedName("max_runtime"), "max-runtime");
}

}  // namespace
}  // namespace onlyone::cli
