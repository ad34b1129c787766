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

TEST_F(CliFlagParserTest, AStrayWordBeforeDoubleDashIsAnError) {
  absl::StatusOr<ParsedArgs> parsed =
      Parse({"--test-count", "10", "minutes", "--test-name", "x", "--", "cmd"});
  ASSERT_TRUE(absl::IsInvalidArgument(parsed.status()));
  EXPECT_EQ(parsed.status().message(),
            "stray \"minutes\" before \"--\": it is neither a flag nor a "
            "flag's value (--test-count took \"10\" as its value); COMMAND "
            "goes after \"--\"");
  parsed = Parse({"--test-count=10", "minutes", "--", "cmd"});
  ASSERT_TRUE(absl::IsInvalidArgument(parsed.status()));
  EXPECT_EQ(parsed.status().message(),
            "stray \"minutes\" before \"--\": it is neither a flag nor a "
            "flag's value; COMMAND goes after \"--\"");
  // Without "--", the first word starts the command.
  parsed = Parse({"--test-count", "10", "echo", "-x"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(parsed->positional, ElementsAre("echo", "-x"));
  // A command whose own arguments hold "--" goes after ours.
  parsed = Parse({"--", "echo", "--", "x"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(parsed->positional, ElementsAre("echo", "--", "x"));
}

TEST_F(CliFlagParserTest, DidYouMeanACloseFlag) {
  absl::StatusOr<ParsedArgs> parsed = Parse({"--test-nmae", "x"});
  ASSERT_TRUE(absl::IsInvalidArgument(parsed.status()));
  EXPECT_EQ(parsed.status().message(),
            "unknown flag \"--test-nmae\"; did you mean --test-name?");
  parsed = Parse({"--test-cont=1"});
  EXPECT_THAT(parsed.status().message(), HasSubstr("did you mean --test-count?"));
  // Nothing close: no guess.
  parsed = Parse({"--verbosity"});
  EXPECT_EQ(parsed.status().message(), "unknown flag \"--verbosity\"");
}

constexpr ShortFlag kShort[] = {
    {'n', "test_count", "0"},
    {'c', "test_count", "", "COUNT"},
    {'s', "test_switch", "true"},
};
constexpr FlagHint kHints[] = {{"-o", "no such thing here"},
                               {"--other", "use --test-switch"}};

absl::StatusOr<ParsedArgs> ParseWithShortFlags(
    const std::vector<std::string>& args) {
  CommandSyntax syntax;
  syntax.command = "try";
  syntax.accepted = kAccepted;
  syntax.known = kKnown;
  syntax.short_flags = kShort;
  syntax.hints = kHints;
  syntax.takes_command = true;
  return ParseArgs(args, syntax);
}

TEST_F(CliFlagParserTest, ShortFlagsStandForFlags) {
  absl::StatusOr<ParsedArgs> parsed = ParseWithShortFlags({"-n", "-s", "cmd"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), 0);
  EXPECT_TRUE(absl::GetFlag(FLAGS_test_switch));
  EXPECT_THAT(parsed->given, ElementsAre("test_count", "test_switch"));
  EXPECT_THAT(parsed->positional, ElementsAre("cmd"));

  ASSERT_TRUE(ParseWithShortFlags({"-c", "7"}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), 7);
  ASSERT_TRUE(ParseWithShortFlags({"-c8"}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), 8);
  // A long flag with one dash is still that flag.
  ASSERT_TRUE(ParseWithShortFlags({"-test-count", "9"}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), 9);

  absl::StatusOr<ParsedArgs> missing = ParseWithShortFlags({"-c"});
  EXPECT_EQ(missing.status().message(), "-c needs a value (COUNT)");
  absl::StatusOr<ParsedArgs> bad = ParseWithShortFlags({"-cx"});
  EXPECT_THAT(bad.status().message(), HasSubstr("-c: invalid value \"x\""));
}

TEST_F(CliFlagParserTest, HintsForRefusedSpellings) {
  absl::StatusOr<ParsedArgs> parsed = ParseWithShortFlags({"-o", "cmd"});
  ASSERT_TRUE(absl::IsInvalidArgument(parsed.status()));
  EXPECT_EQ(parsed.status().message(),
            "-o is not a flag of 'onlyone try': no such thing here");
  parsed = ParseWithShortFlags({"--other"});
  EXPECT_EQ(parsed.status().message(),
            "--other is not a flag of 'onlyone try': use --test-switch");
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
