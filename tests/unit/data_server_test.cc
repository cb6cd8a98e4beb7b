// The agent's data port (client/data_server.h) against the real client code: ListRepo and the
// Downloader pull models from it exactly as from the Hub; raw requests check the Hub's error
// codes, Range, HEAD, auth and that nothing outside a model's manifest is ever served.

#include "client/data_server.h"

#include <httplib.h>

#include <atomic>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/downloader.h"
#include "client/hf_source.h"
#include "client/http_client.h"
#include "client/model_manifest.h"
#include "client/sha256.h"
#include "common/paths.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/data_server_fixture.h"

namespace gswarm::client {
namespace {

namespace fs = std::filesystem;

TEST_F(DataServerTest, ListsAModelByNameAtItsCommit) {
  absl::StatusOr<RepoListing> listing = ListRepo(Hub(), "gswarm/thing", "main");
  ASSERT_TRUE(listing.ok()) << listing.status();
  EXPECT_EQ(listing->commit, kCommit);
  ASSERT_EQ(listing->files.size(), thing_.size());
  for (const v1::ModelFile& f : listing->files) {
    ASSERT_TRUE(thing_.count(f.path())) << f.path();
    EXPECT_EQ(f.size_bytes(), thing_[f.path()].size()) << f.path();
    EXPECT_EQ(f.sha256().size(), 64u) << f.path();
  }
  absl::StatusOr<RepoListing> by_sha = ListRepo(Hub(), "gswarm/thing", kCommit);
  ASSERT_TRUE(by_sha.ok()) << by_sha.status();
  EXPECT_EQ(by_sha->commit, kCommit);
}

TEST_F(DataServerTest, ModelWithoutCommitGetsAStableSha) {
  absl::StatusOr<RepoListing> first = ListRepo(Hub(), "gswarm/notes", "main");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->commit.size(), 40u);
  EXPECT_EQ(first->commit.find_first_not_of("0123456789abcdef"), std::string::npos);
  absl::StatusOr<RepoListing> again = ListRepo(Hub(), "gswarm/notes", first->commit);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->commit, first->commit);
}

TEST_F(DataServerTest, DownloaderPullsAModelByName) {
  absl::StatusOr<DownloadResult> thing = Download("thing", "hf://gswarm/thing");
  ASSERT_TRUE(thing.ok()) << thing.status();
  EXPECT_EQ(thing->commit, kCommit);
  ExpectSameFiles(out_ + "/thing", thing_);

  absl::StatusOr<DownloadResult> notes = Download("notes", "hf://gswarm/notes");
  ASSERT_TRUE(notes.ok()) << notes.status();
  ExpectSameFiles(out_ + "/notes", notes_);
  absl::StatusOr<ModelManifest> m = ReadManifest(out_ + "/notes");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->commit, notes->commit);
}

TEST_F(DataServerTest, APeerPullChecksTheFastDigestAndCarriesTheSha256) {
  absl::StatusOr<DownloadResult> thing = Download("thing", "hf://gswarm/thing", kToken, true);
  ASSERT_TRUE(thing.ok()) << thing.status();
  ExpectSameFiles(out_ + "/thing", thing_);
  absl::StatusOr<ModelManifest> source = ReadManifest(disk_ + "/thing");
  absl::StatusOr<ModelManifest> pulled = ReadManifest(out_ + "/thing");
  ASSERT_TRUE(source.ok() && pulled.ok());
  ASSERT_EQ(pulled->files.size(), source->files.size());
  for (size_t i = 0; i < source->files.size(); ++i) {
    EXPECT_EQ(pulled->files[i].sha256(), source->files[i].sha256()) << source->files[i].path();
    EXPECT_EQ(pulled->files[i].xxh3_128(), source->files[i].xxh3_128()) << source->files[i].path();
  }

  // A byte flips on the peer's disk after its manifest was written: the transfer is caught,
  // naming the file and the digest.
  std::string shard = Slurp(disk_ + "/thing/model.safetensors");
  shard[12345] ^= 0x01;
  WriteBytes(disk_ + "/thing/model.safetensors", shard);
  absl::StatusOr<DownloadResult> bad = Download("thing2", "hf://gswarm/thing", kToken, true);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss) << bad.status();
  EXPECT_NE(
      bad.status().message().find("checksum mismatch for model.safetensors: expected xxh3_128 "),
      std::string::npos)
      << bad.status();
  EXPECT_FALSE(fs::exists(out_ + "/thing2"));
}

TEST_F(DataServerTest, DownloaderPullsAHubRepoAtACommitHeldHere) {
  absl::StatusOr<DownloadResult> got =
      Download("thing-copy", absl::StrCat("hf://acme/thing@", kCommit));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->commit, kCommit);
  ExpectSameFiles(out_ + "/thing-copy", thing_);
  absl::StatusOr<ModelManifest> m = ReadManifest(out_ + "/thing-copy");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->commit, kCommit);

  // A peer stands in for the Hub only at commits it holds, not for branches.
  absl::StatusOr<RepoListing> main = ListRepo(Hub(), "acme/thing", "main");
  EXPECT_TRUE(absl::IsNotFound(main.status())) << main.status();
}

TEST_F(DataServerTest, FindsAHubRepoThatArrivesAfterTheFirstLookup) {
  EXPECT_TRUE(absl::IsNotFound(ListRepo(Hub(), "acme/late", kOtherSha).status()));
  WriteModel(dram_ + "/late", "hf://acme/late@main", kOtherSha, {{"x.bin", "xyz"}});
  absl::StatusOr<RepoListing> listing = ListRepo(Hub(), "acme/late", kOtherSha);
  ASSERT_TRUE(listing.ok()) << listing.status();
  EXPECT_EQ(listing->commit, kOtherSha);
}

TEST_F(DataServerTest, InterruptedPullResumesWithRange) {
  const std::string big = RandomBytes(16 << 20, 4);
  WriteModel(disk_ + "/big", "file:///x", "", {{"w.bin", big}});
  DownloadRequest req;
  req.model_name = "big";
  req.source_url = "hf://gswarm/big";
  req.target_dir = out_ + "/big";
  req.staging_dir = out_ + "/.gswarm-staging/big";
  req.hub = Hub();
  std::atomic<bool> cancel{false};
  absl::StatusOr<DownloadResult> first = Downloader().Run(
      req, [&](const DownloadProgress& p) { cancel = cancel || p.bytes_done >= (2 << 20); },
      &cancel);
  ASSERT_TRUE(absl::IsCancelled(first.status())) << first.status();
  absl::StatusOr<DownloadResult> second = Downloader().Run(req, nullptr, nullptr);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_LT(second->bytes_fetched, big.size());  // continued, not restarted
  EXPECT_EQ(Slurp(out_ + "/big/w.bin"), big);
}

TEST_F(DataServerTest, WrongOrMissingTokenFailsAndNothingLands) {
  absl::StatusOr<DownloadResult> none = Download("t1", "hf://gswarm/thing", "");
  EXPECT_TRUE(absl::IsUnauthenticated(none.status())) << none.status();
  absl::StatusOr<DownloadResult> wrong = Download("t2", "hf://gswarm/thing", "not-the-token");
  EXPECT_TRUE(absl::IsPermissionDenied(wrong.status())) << wrong.status();
  EXPECT_FALSE(fs::exists(out_ + "/t1"));
  EXPECT_FALSE(fs::exists(out_ + "/t2"));

  HttpResponse r = Request("GET", "/gswarm/thing/resolve/main/config.json", {}, /*auth=*/false);
  EXPECT_EQ(r.status, 401);
  EXPECT_FALSE(absl::StrContains(r.body, "llama"));
  HttpResponse health = Request("GET", "/health", {}, /*auth=*/false);
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(nlohmann::json::parse(health.body, nullptr, false), nlohmann::json({{"status", "ok"}}));
}

TEST_F(DataServerTest, UnknownModelRevisionOrFileAreHubErrors) {
  auto code = [&](const std::string& path) {
    HttpResponse r = Request("GET", path);
    EXPECT_EQ(r.status, 404) << path;
    return r.Header("x-error-code");
  };
  EXPECT_EQ(code("/api/models/gswarm/nope/revision/main"), "RepoNotFound");
  EXPECT_EQ(code(absl::StrCat("/api/models/gswarm/thing/revision/", kOtherSha)),
            "RevisionNotFound");
  EXPECT_EQ(code(absl::StrCat("/api/models/acme/thing/revision/", kOtherSha)), "RevisionNotFound");
  EXPECT_EQ(code(absl::StrCat("/api/models/acme/other/revision/", kCommit)), "RepoNotFound");
  EXPECT_EQ(code("/gswarm/thing/resolve/main/missing.bin"), "EntryNotFound");
  EXPECT_EQ(code(absl::StrCat("/gswarm/thing/resolve/", kOtherSha, "/config.json")),
            "RevisionNotFound");
  EXPECT_EQ(code("/gswarm/nope/resolve/main/config.json"), "RepoNotFound");

  absl::StatusOr<RepoListing> missing = ListRepo(Hub(), "gswarm/nope", "main");
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  // Read-only: nothing answers a write.
  for (const char* method : {"PUT", "POST", "DELETE"}) {
    HttpResponse w = Request(method, "/gswarm/thing/resolve/main/config.json");
    EXPECT_EQ(w.status, 404) << method;
  }
  EXPECT_EQ(Slurp(disk_ + "/thing/config.json"), thing_["config.json"]);
}

TEST_F(DataServerTest, ServesRangesAndHead) {
  const std::string& bytes = thing_["model.safetensors"];
  const std::string path = "/gswarm/thing/resolve/main/model.safetensors";
  const std::string size = std::to_string(bytes.size());

  HttpResponse whole = Request("GET", path);
  EXPECT_EQ(whole.status, 200);
  EXPECT_EQ(whole.body, bytes);
  EXPECT_EQ(whole.Header("x-repo-commit"), kCommit);
  EXPECT_EQ(whole.Header("accept-ranges"), "bytes");

  HttpResponse mid = Request("GET", path, {"Range: bytes=10-19"});
  EXPECT_EQ(mid.status, 206);
  EXPECT_EQ(mid.body, bytes.substr(10, 10));
  EXPECT_EQ(mid.Header("content-range"), "bytes 10-19/" + size);
  EXPECT_EQ(mid.Header("content-length"), "10");

  HttpResponse tail = Request("GET", path, {"Range: bytes=1000000-"});
  EXPECT_EQ(tail.status, 206);
  EXPECT_EQ(tail.body, bytes.substr(1000000));
  HttpResponse suffix = Request("GET", path, {"Range: bytes=-5"});
  EXPECT_EQ(suffix.status, 206);
  EXPECT_EQ(suffix.body, bytes.substr(bytes.size() - 5));
  HttpResponse clamped = Request("GET", path, {"Range: bytes=5-999999999"});
  EXPECT_EQ(clamped.status, 206);
  EXPECT_EQ(clamped.body, bytes.substr(5));

  HttpResponse several = Request("GET", path, {"Range: bytes=0-1,5-6"});
  EXPECT_EQ(several.status, 200);  // several ranges: the whole file, as HTTP allows
  EXPECT_EQ(several.body, bytes);

  HttpResponse beyond = Request("GET", path, {"Range: bytes=" + size + "-"});
  EXPECT_EQ(beyond.status, 416);
  EXPECT_EQ(beyond.Header("content-range"), "bytes */" + size);

  HttpResponse head = Request("HEAD", path);
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.Header("content-length"), size);
  EXPECT_TRUE(head.body.empty());
  absl::StatusOr<RepoListing> listing = ListRepo(Hub(), "gswarm/thing", "main");
  ASSERT_TRUE(listing.ok());
  for (const v1::ModelFile& f : listing->files) {
    if (f.path() == "model.safetensors") {
      EXPECT_EQ(head.Header("etag"), "\"" + f.sha256() + "\"");
    }
  }

  HttpResponse empty = Request("GET", "/gswarm/thing/resolve/main/empty.txt");
  EXPECT_EQ(empty.status, 200);
  EXPECT_EQ(empty.Header("content-length"), "0");
  HttpResponse nested = Request("GET", "/gswarm/thing/resolve/main/tokenizer%2Ftokenizer.json");
  EXPECT_EQ(nested.status, 200);
  EXPECT_EQ(nested.body, "{}");
}

TEST_F(DataServerTest, NeverServesAFileOutsideTheManifest) {
  httplib::Client client("127.0.0.1", server_->port());
  client.set_url_encode(false);  // send the paths exactly as written
  const httplib::Headers auth = {{"Authorization", absl::StrCat("Bearer ", kToken)}};
  for (const char* path : {
           "/gswarm/thing/resolve/main/../secret.txt",
           "/gswarm/thing/resolve/main/../../secret.txt",
           "/gswarm/thing/resolve/main/%2e%2e/secret.txt",
           "/gswarm/thing/resolve/main/%2e%2e%2f%2e%2e%2fsecret.txt",
           "/gswarm/thing/resolve/main//etc/passwd",
           "/gswarm/thing/resolve/main/%2Fetc%2Fpasswd",
           "/gswarm/thing/resolve/main/.gswarm/manifest.json",
           "/gswarm/thing/resolve/main/./config.json",
           "/gswarm/..%2Fsecret.txt/resolve/main/x",
           "/gswarm/%2e%2e/resolve/main/secret.txt",
           "/acme/..%2F..%2Fsecret.txt/resolve/main/x",
           "/api/models/gswarm/%2e%2e/revision/main",
       }) {
    httplib::Result r = client.Get(path, auth);
    ASSERT_TRUE(r) << path << ": " << httplib::to_string(r.error());
    EXPECT_TRUE(r->status == 404 || r->status == 400) << path << " -> " << r->status;
    EXPECT_FALSE(absl::StrContains(r->body, kSecret)) << path;
    EXPECT_FALSE(absl::StrContains(r->body, "root:")) << path;
  }
}

TEST_F(DataServerTest, ModelReplacedOrShrunkMidTransferDoesNotCrash) {
  const std::string big(RandomBytes(24 << 20, 3));
  WriteModel(dram_ + "/big", "file:///x", "", {{"w.bin", big}});
  httplib::Client client("127.0.0.1", server_->port());
  const httplib::Headers auth = {{"Authorization", absl::StrCat("Bearer ", kToken)}};

  // Deleted and recreated with other bytes: the transfer under way keeps the old file.
  std::string got;
  bool replaced = false;
  httplib::Result r =
      client.Get("/gswarm/big/resolve/main/w.bin", auth, [&](const char* data, size_t n) {
        got.append(data, n);
        if (!replaced) {
          replaced = true;
          fs::remove_all(dram_ + "/big");
          WriteModel(dram_ + "/big", "file:///x", "", {{"w.bin", "new"}});
        }
        return true;
      });
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(got == big) << "got " << got.size() << " bytes";
  HttpResponse fresh = Request("GET", "/gswarm/big/resolve/main/w.bin");
  EXPECT_EQ(fresh.body, "new");

  // Shrunk in place: the transfer is cut short, never padded or looped.
  WriteModel(dram_ + "/big", "file:///x", "", {{"w.bin", big}});
  got.clear();
  bool shrunk = false;
  r = client.Get("/gswarm/big/resolve/main/w.bin", auth, [&](const char* data, size_t n) {
    got.append(data, n);
    if (!shrunk) {
      shrunk = true;
      ::truncate((dram_ + "/big/w.bin").c_str(), 0);
    }
    return true;
  });
  EXPECT_LT(got.size(), big.size());
  EXPECT_EQ(got, big.substr(0, got.size()));
  EXPECT_EQ(Request("GET", "/health", {}, false).status, 200);
}

TEST_F(DataServerTest, PortInUseFailsNamingThePort) {
  absl::StatusOr<std::unique_ptr<DataServer>> second =
      DataServer::Start({.bind = "127.0.0.1", .port = server_->port(), .roots = {disk_}});
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(absl::IsUnavailable(second.status())) << second.status();
  EXPECT_TRUE(absl::StrContains(second.status().message(), std::to_string(server_->port())))
      << second.status();
}

}  // namespace
}  // namespace gswarm::client
