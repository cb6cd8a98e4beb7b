#pragma once

// A directory for one test, created under `base` (mkdtemp) and removed with everything in it
// when the test ends. path() is empty when it could not be created.

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace gswarm::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& base = "/tmp", const std::string& prefix = "gswarm_test") {
    std::string pattern = base + "/" + prefix + ".XXXXXX";
    path_ = mkdtemp(pattern.data()) != nullptr ? pattern : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace gswarm::testing
