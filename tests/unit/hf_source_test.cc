// Source parsing and path checks: no network.

#include "client/hf_source.h"

#include <filesystem>
#include <fstream>

#include "client/download_plan.h"
#include "client/downloader.h"
#include "gtest/gtest.h"

namespace gswarm::client {
namespace {

namespace fs = std::filesystem;

std::string MakeTempDir(const char* prefix) {
  std::string pattern = fs::temp_directory_path().string() + "/" + prefix + "XXXXXX";
  char* made = ::mkdtemp(pattern.data());
  return made == nullptr ? "" : std::string(made);
}

TEST(ParseSourceTest, HubRepoWithDefaultRevision) {
  absl::StatusOr<SourceSpec> s = ParseSource("hf://test-org/tiny-llama");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->kind, SourceSpec::kHub);
  EXPECT_EQ(s->repo, "test-org/tiny-llama");
  EXPECT_EQ(s->revision, "main");
}

TEST(ParseSourceTest, HubRevisionAndOverride) {
  absl::StatusOr<SourceSpec> s = ParseSource("hf://Org_1/Model.v2-x@v1.0");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->repo, "Org_1/Model.v2-x");
  EXPECT_EQ(s->revision, "v1.0");
  s = ParseSource("hf://org/x@v1.0", "refs/pr/1");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->revision, "refs/pr/1");
}

TEST(ParseSourceTest, RejectsBadRepoNamesAndRevisions) {
  for (const char* bad : {"hf://../x", "hf://org/..", "hf://org/../x", "hf://org", "hf://org/x/y",
                          "hf://org/x y", "hf:///x", "hf://org/.hidden", "hf://", "hf://org/x@",
                          "hf://org/x@../main", "hf://org/x@a b"}) {
    absl::StatusOr<SourceSpec> s = ParseSource(bad);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ParseSourceTest, UnknownSchemeSaysWhatWorks) {
  absl::StatusOr<SourceSpec> s = ParseSource("ftp://x");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.status().message(),
            "unknown source scheme in \"ftp://x\": use hf://org/repo[@revision], https://... or "
            "file:///abs/dir");
  EXPECT_EQ(ParseSource("test-org/tiny-llama").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParseSourceTest, HttpsFileAndLocalDirectory) {
  absl::StatusOr<SourceSpec> s = ParseSource("https://host.example/a/b/model%2Bq8.gguf?x=1#f");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->kind, SourceSpec::kHttps);
  EXPECT_EQ(s->path, "model+q8.gguf");
  EXPECT_FALSE(ParseSource("https://host.example/").ok());
  EXPECT_FALSE(ParseSource("https://host.example/a/..").ok());
  EXPECT_FALSE(ParseSource("http://host.example").ok());

  std::string dir = MakeTempDir("gswarm-src-");
  s = ParseSource("file://" + dir + "/");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->kind, SourceSpec::kLocalDir);
  EXPECT_EQ(s->path, dir);
  EXPECT_EQ(ParseSource("file://relative/dir").status().code(), absl::StatusCode::kInvalidArgument);
  // Parsing is syntax (the host parses sources it cannot look at); the node that imports the
  // folder checks that it is one.
  s = ParseSource("file://" + dir + "/missing");
  ASSERT_TRUE(s.ok()) << s.status();
  DownloadRequest request;
  request.model_name = "m";
  EXPECT_EQ(MakePlan(request, *s).status().code(), absl::StatusCode::kNotFound);
  std::ofstream(dir + "/f") << "x";
  s = ParseSource("file://" + dir + "/f");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(MakePlan(request, *s).status().code(), absl::StatusCode::kInvalidArgument);
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST(CheckRelativePathTest, KeepsFilesInsideTheDirectory) {
  EXPECT_TRUE(CheckRelativePath("config.json").ok());
  EXPECT_TRUE(CheckRelativePath("sub/dir/model..v2.bin").ok());
  for (const char* bad :
       {"", "../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "a/", ".", "a\\..\\b", "a\nb"}) {
    EXPECT_FALSE(CheckRelativePath(bad).ok()) << bad;
  }
}

TEST(HubOptionsTest, AuthorizationGoesToTheEndpointHostOnly) {
  HubOptions hub;
  hub.endpoint = "https://huggingface.co";
  hub.token = "hf_secret";
  EXPECT_EQ(hub.AuthHeadersFor("https://huggingface.co/org/x/resolve/abc/config.json"),
            std::vector<std::string>{"Authorization: Bearer hf_secret"});
  EXPECT_TRUE(hub.AuthHeadersFor("https://cdn-lfs.huggingface.co/repos/x").empty());
  EXPECT_TRUE(hub.AuthHeadersFor("https://huggingface.co.evil.example/x").empty());
  EXPECT_TRUE(hub.AuthHeadersFor("http://huggingface.co/x").empty());
  hub.token.clear();
  EXPECT_TRUE(hub.AuthHeadersFor("https://huggingface.co/x").empty());
}

// A listing's sizes are byte counts: a float too big for uint64_t (found by fuzz_hub_listing),
// a fraction or a negative number is refused naming the file, not converted.
TEST(ParseRepoListingTest, SizesMustBeByteCounts) {
  auto listing = [](const std::string& size, bool lfs) {
    const std::string entry =
        lfs ? R"("lfs": {"sha256": "AB", "size": )" + size + "}" : R"("size": )" + size;
    return ParseRepoListing(
        R"({"sha": "abc", "siblings": [{"rfilename": "model.safetensors", )" + entry + "}]}",
        "test listing");
  };
  for (bool lfs : {false, true}) {
    absl::StatusOr<RepoListing> good = listing("18446744073709551615", lfs);
    ASSERT_TRUE(good.ok()) << good.status();
    EXPECT_EQ(good->files.at(0).size_bytes(), 18446744073709551615ull);
    EXPECT_EQ(good->files.at(0).sha256(), lfs ? "ab" : "");
    for (const char* bad : {"1.55556e+29", "1.5", "-1", "\"12\"", "null"}) {
      absl::StatusOr<RepoListing> got = listing(bad, lfs);
      EXPECT_FALSE(got.ok()) << bad;
      EXPECT_NE(got.status().message().find("the size of model.safetensors is not a byte count"),
                std::string::npos)
          << got.status();
    }
  }
  absl::StatusOr<RepoListing> none =
      ParseRepoListing(R"({"sha": "abc", "siblings": [{"rfilename": "a.txt"}]})", "test listing");
  EXPECT_NE(none.status().message().find("no size for a.txt"), std::string::npos) << none.status();
}

}  // namespace
}  // namespace gswarm::client
