// DURATION arguments of the onlyone command (cli/duration.h).

#include "cli/duration.h"

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace onlyone::cli {
namespace {

using ::testing::HasSubstr;

absl::Duration Parsed(const std::string& text) {
  absl::StatusOr<absl::Duration> duration = ParseDuration(text);
  EXPECT_TRUE(duration.ok()) << text << ": " << duration.status();
  return duration.ok() ? *duration : absl::Duration();
}

TEST(CliDurationTest, AcceptsTheDocumentedForms) {
  EXPECT_EQ(Parsed("90s"), absl::Seconds(90));
  EXPECT_EQ(Parsed("1.5m"), absl::Seconds(90));
  EXPECT_EQ(Parsed("250ms"), absl::Milliseconds(250));
  EXPECT_EQ(Parsed("2h"), absl::Hours(2));
  EXPECT_EQ(Parsed("1h30m"), absl::Minutes(90));
  EXPECT_EQ(Parsed("30"), absl::Seconds(30));
  EXPECT_EQ(Parsed("0.5"), absl::Milliseconds(500));
  EXPECT_EQ(Parsed(".5"), absl::Milliseconds(500));
  EXPECT_EQ(Parsed("0"), absl::ZeroDuration());
  EXPECT_EQ(Parsed(" 5s "), absl::Seconds(5));
  EXPECT_EQ(Parsed("inf"), absl::InfiniteDuration());
}

TEST(CliDurationTest, RefusesWhatIsNotADuration) {
  for (const char* text : {"", "  ", "abc", "5x", "1.2.3", "s", "5 s", ".",
                           "1e3", "nan", "0x10"}) {
    absl::StatusOr<absl::Duration> duration = ParseDuration(text);
    EXPECT_TRUE(absl::IsInvalidArgument(duration.status())) << text;
  }
}

TEST(CliDurationTest, RefusesNegativeDurations) {
  for (const char* text : {"-1", "-5s", "-0.5", "-inf"}) {
    absl::StatusOr<absl::Duration> duration = ParseDuration(text);
    ASSERT_TRUE(absl::IsInvalidArgument(duration.status())) << text;
    EXPECT_THAT(duration.status().message(), HasSubstr("negative"));
  }
}

TEST(CliDurationTest, MessageQuotesTheTextAndListsTheForms) {
  absl::StatusOr<absl::Duration> duration = ParseDuration("5x");
  ASSERT_FALSE(duration.ok());
  EXPECT_THAT(duration.status().message(), HasSubstr("\"5x\""));
  EXPECT_THAT(duration.status().message(), HasSubstr("\"250ms\""));
  EXPECT_THAT(duration.status().message(), HasSubstr("\"30\""));
}

}  // namespace
}  // namespace onlyone::cli
