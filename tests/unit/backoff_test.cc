#include "common/backoff.h"

#include "gtest/gtest.h"

namespace gswarm::common {
namespace {

TEST(BackoffTest, StartsAtInitialAndGrowsToMax) {
  Backoff backoff(Backoff::Options{}, /*seed=*/1);
  absl::Duration first = backoff.Next();
  EXPECT_GE(first, absl::Milliseconds(500));
  EXPECT_LE(first, absl::Milliseconds(600));
  absl::Duration last;
  for (int i = 0; i < 20; ++i) last = backoff.Next();
  EXPECT_LE(last, absl::Seconds(30));
  EXPECT_GE(last, absl::Seconds(24));  // 30 s less at most 20% jitter
}

TEST(BackoffTest, NeverLeavesBoundsOverManyAttempts) {
  Backoff backoff(Backoff::Options{}, /*seed=*/7);
  for (int i = 0; i < 1000; ++i) {
    absl::Duration d = backoff.Next();
    ASSERT_GE(d, absl::Milliseconds(500)) << i;
    ASSERT_LE(d, absl::Seconds(30)) << i;
  }
}

TEST(BackoffTest, GrowsRoughlyExponentially) {
  Backoff::Options options;
  options.jitter = 0;
  Backoff backoff(options);
  EXPECT_EQ(backoff.Next(), absl::Milliseconds(500));
  EXPECT_EQ(backoff.Next(), absl::Seconds(1));
  EXPECT_EQ(backoff.Next(), absl::Seconds(2));
  EXPECT_EQ(backoff.Next(), absl::Seconds(4));
  EXPECT_EQ(backoff.attempts(), 4);
}

TEST(BackoffTest, ResetStartsOver) {
  Backoff::Options options;
  options.jitter = 0;
  Backoff backoff(options);
  for (int i = 0; i < 10; ++i) backoff.Next();
  backoff.Reset();
  EXPECT_EQ(backoff.Next(), absl::Milliseconds(500));
}

TEST(BackoffTest, JitterSpreadsAgentsApart) {
  // Two agents cut off together must not retry in lockstep.
  Backoff a(Backoff::Options{}, /*seed=*/1), b(Backoff::Options{}, /*seed=*/2);
  int differ = 0;
  for (int i = 0; i < 10; ++i) differ += a.Next() != b.Next();
  EXPECT_GE(differ, 8);
}

}  // namespace
}  // namespace gswarm::common
