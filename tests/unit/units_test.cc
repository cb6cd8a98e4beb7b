// common/units.h: byte counts for people.

#include "common/units.h"

#include <gtest/gtest.h>

namespace gswarm::common {
namespace {

TEST(FormatBytesTest, PicksAUnit) {
  EXPECT_EQ(FormatBytes(17), "17 B");
  EXPECT_EQ(FormatBytes(3 << 10), "3.0 KiB");
  EXPECT_EQ(FormatBytes(512ull << 20), "512.0 MiB");
  EXPECT_EQ(FormatBytes(3ull << 50), "3.0 PiB");
  EXPECT_EQ(FormatBytes(static_cast<uint64_t>(12.6 * (1ull << 30))), "12.6 GiB");
}

}  // namespace
}  // namespace gswarm::common
