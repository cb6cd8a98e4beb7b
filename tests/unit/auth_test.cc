#include "common/auth.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>

#include "gtest/gtest.h"

namespace gswarm::common {
namespace {

TEST(AuthTest, NoExpectedTokenMeansAuthOff) {
  EXPECT_TRUE(CheckAuthorization("", std::nullopt).ok());
  EXPECT_TRUE(CheckAuthorization("", "Bearer anything").ok());
}

TEST(AuthTest, RightTokenPasses) {
  EXPECT_TRUE(CheckAuthorization("s3cret", "Bearer s3cret").ok());
  EXPECT_TRUE(CheckAuthorization("s3cret", "bearer s3cret").ok());
  EXPECT_TRUE(CheckAuthorization("s3cret", "Bearer   s3cret  ").ok());
}

TEST(AuthTest, MissingTokenIsRefusedSayingSo) {
  absl::Status status = CheckAuthorization("s3cret", std::nullopt);
  EXPECT_TRUE(absl::IsUnauthenticated(status));
  EXPECT_NE(status.message().find("missing token"), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find("GSWARM_TOKEN"), absl::string_view::npos) << status;
}

TEST(AuthTest, WrongTokenIsRefusedSayingSo) {
  for (const char* presented : {"Bearer s3creT", "Bearer s3cret2", "Bearer s3cre", "Bearer x"}) {
    absl::Status status = CheckAuthorization("s3cret", presented);
    EXPECT_TRUE(absl::IsUnauthenticated(status)) << presented;
    EXPECT_NE(status.message().find("wrong token"), absl::string_view::npos) << status;
  }
}

TEST(AuthTest, MalformedHeaderIsRefused) {
  for (const char* presented : {"s3cret", "Basic s3cret", "Bearer", "Bearer  ", ""}) {
    absl::Status status = CheckAuthorization("s3cret", presented);
    EXPECT_TRUE(absl::IsUnauthenticated(status)) << presented;
    EXPECT_NE(status.message().find("malformed"), absl::string_view::npos) << status;
  }
}

TEST(AuthTest, BearerToken) {
  EXPECT_EQ(BearerToken("Bearer abc"), absl::string_view("abc"));
  EXPECT_EQ(BearerToken("BEARER abc"), absl::string_view("abc"));
  EXPECT_FALSE(BearerToken("Token abc").has_value());
  EXPECT_FALSE(BearerToken("Bearer ").has_value());
}

TEST(AuthTest, GeneratedTokensAreLongAndDistinct) {
  std::string a = GenerateToken(), b = GenerateToken();
  EXPECT_EQ(a.size(), 64u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(AuthTest, Loopback) {
  EXPECT_TRUE(IsLoopbackAddress("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackAddress("127.1.2.3"));
  EXPECT_TRUE(IsLoopbackAddress("localhost"));
  EXPECT_TRUE(IsLoopbackAddress("::1"));
  EXPECT_TRUE(IsLoopbackAddress("[::1]"));
  EXPECT_FALSE(IsLoopbackAddress("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackAddress("::"));
  EXPECT_FALSE(IsLoopbackAddress("10.0.0.1"));
}

class TokenFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("gswarm-auth-test-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(TokenFileTest, CreatedOnceWithMode0600ThenReused) {
  const std::string path = (dir_ / "nested" / "token").string();
  bool created = false;
  absl::StatusOr<std::string> first = LoadOrCreateTokenFile(path, &created);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(created);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  absl::StatusOr<std::string> second = LoadOrCreateTokenFile(path, &created);
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(*first, *second);
  EXPECT_EQ(*ReadTokenFile(path), *first);
}

TEST_F(TokenFileTest, MissingFileIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(ReadTokenFile((dir_ / "none").string()).status()));
}

}  // namespace
}  // namespace gswarm::common
