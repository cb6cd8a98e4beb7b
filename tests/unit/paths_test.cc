#include "common/paths.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace gswarm::common {
namespace {

namespace fs = std::filesystem;

// Each test runs with HOME in its own temporary directory; HOME is restored afterwards.
class PathsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* home = getenv("HOME")) old_home_ = home;
    std::string pattern = (fs::temp_directory_path() / "paths_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    ASSERT_EQ(setenv("HOME", dir_.c_str(), 1), 0);
  }

  void TearDown() override {
    if (old_home_) {
      setenv("HOME", old_home_->c_str(), 1);
    } else {
      unsetenv("HOME");
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  static std::string Slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream out;
    out << in.rdbuf();
    return out.str();
  }

  static unsigned Mode(const std::string& path) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return 0xffffffff;
    return st.st_mode & 07777;
  }

  int CountEntries() const {
    int n = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir_)) ++n;
    return n;
  }

  std::string dir_;
  std::optional<std::string> old_home_;
};

TEST_F(PathsTest, HomeDirHonoursHome) {
  EXPECT_EQ(HomeDir(), dir_);
  EXPECT_EQ(StateDir(), dir_ + "/.cache/gswarm");
  EXPECT_EQ(DefaultConfigPath(), dir_ + "/.gswarm.conf");
}

TEST_F(PathsTest, HomeDirFallsBackToPasswd) {
  unsetenv("HOME");
  std::string home = HomeDir();
  EXPECT_FALSE(home.empty());
  EXPECT_EQ(home.front(), '/');
}

TEST_F(PathsTest, ExpandUser) {
  EXPECT_EQ(ExpandUser("~"), dir_);
  EXPECT_EQ(ExpandUser("~/"), dir_ + "/");
  EXPECT_EQ(ExpandUser("~/.cache/gswarm/models"), dir_ + "/.cache/gswarm/models");
  EXPECT_EQ(ExpandUser("/dev/shm/gswarm_models"), "/dev/shm/gswarm_models");
  EXPECT_EQ(ExpandUser("relative/~"), "relative/~");
  EXPECT_EQ(ExpandUser("~other/x"), "~other/x");
  EXPECT_EQ(ExpandUser(""), "");
  setenv("HOME", "/", 1);
  EXPECT_EQ(ExpandUser("~/x"), "/x");
  EXPECT_EQ(DefaultConfigPath(), "/.gswarm.conf");
}

TEST_F(PathsTest, MakeDirsCreatesNestedDirectories) {
  std::string path = dir_ + "/a/b/c/";
  ASSERT_TRUE(MakeDirs(path, 0700).ok());
  EXPECT_TRUE(fs::is_directory(dir_ + "/a/b/c"));
  EXPECT_EQ(Mode(dir_ + "/a/b/c") & 0077, 0u);
  // Existing directories are fine.
  EXPECT_TRUE(MakeDirs(path).ok());
  EXPECT_TRUE(MakeDirs(dir_ + "/a").ok());
  EXPECT_TRUE(MakeDirs("/").ok());
}

TEST_F(PathsTest, MakeDirsFailsOnAFileInTheWay) {
  std::ofstream(dir_ + "/file") << "x";
  absl::Status status = MakeDirs(dir_ + "/file/sub");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(dir_ + "/file"), absl::string_view::npos) << status;
  status = MakeDirs(dir_ + "/file");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("not a directory"), absl::string_view::npos) << status;
  EXPECT_FALSE(MakeDirs("").ok());
}

TEST_F(PathsTest, WriteFileAtomicallyWritesContentAndMode) {
  std::string path = dir_ + "/out.txt";
  std::string contents(200000, 'x');
  contents += "end\n";
  ASSERT_TRUE(WriteFileAtomically(path, contents, 0600).ok());
  EXPECT_EQ(Slurp(path), contents);
  EXPECT_EQ(Mode(path), 0600u);
  EXPECT_EQ(CountEntries(), 1) << "temporary file left behind";

  // Replaces the file, mode included, regardless of the umask.
  mode_t old_umask = umask(0077);
  ASSERT_TRUE(WriteFileAtomically(path, "new", 0644).ok());
  umask(old_umask);
  EXPECT_EQ(Slurp(path), "new");
  EXPECT_EQ(Mode(path), 0644u);
  EXPECT_EQ(CountEntries(), 1);

  ASSERT_TRUE(WriteFileAtomically(path, "", 0600).ok());
  EXPECT_EQ(Slurp(path), "");
}

TEST_F(PathsTest, WriteFileAtomicallyFailsCleanly) {
  absl::Status status = WriteFileAtomically(dir_ + "/missing/out.txt", "x");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(dir_ + "/missing/out.txt"), absl::string_view::npos) << status;

  // Renaming over a non-empty directory fails after the temporary file was written.
  ASSERT_TRUE(MakeDirs(dir_ + "/taken/inside").ok());
  status = WriteFileAtomically(dir_ + "/taken", "x");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(dir_ + "/taken"), absl::string_view::npos) << status;
  EXPECT_EQ(CountEntries(), 1) << "temporary file left behind";
}

TEST_F(PathsTest, ReadFile) {
  std::string path = dir_ + "/in.txt";
  ASSERT_TRUE(WriteFileAtomically(path, std::string("a\0b", 3)).ok());
  absl::StatusOr<std::string> data = ReadFile(path);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(*data, std::string("a\0b", 3));

  data = ReadFile(dir_ + "/nope");
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(data.status().message(), "cannot open " + dir_ + "/nope: No such file or directory");

  data = ReadFile(dir_);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().message(), "cannot read " + dir_ + ": Is a directory");
}

TEST_F(PathsTest, Hostname) { EXPECT_FALSE(Hostname().empty()); }

}  // namespace
}  // namespace gswarm::common
