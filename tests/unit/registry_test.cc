#include "host/registry.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "host/sqlite.h"

namespace gswarm::host {
namespace {

using google::protobuf::util::MessageDifferencer;
using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp At(int64_t seconds) { return TimeUtil::SecondsToTimestamp(seconds); }

v1::Model MakeModel(const std::string& name) {
  v1::Model m;
  m.set_name(name);
  m.set_type("llm");
  m.set_source_url("hf://org/" + name + "@main");
  m.set_revision("main");
  m.set_commit("0123456789abcdef0123456789abcdef01234567");
  m.set_size_bytes(14'000'000'000ull);
  v1::ModelMetadata* md = m.mutable_metadata();
  md->set_format("safetensors");
  md->set_architecture("LlamaForCausalLM");
  md->set_parameter_count(6'738'415'616ull);
  md->set_dtype("bfloat16");
  md->set_vocab_size(32000);
  md->set_context_length(4096);
  md->set_num_layers(32);
  md->set_hidden_size(4096);
  v1::ModelFile* file = m.add_files();
  file->set_path("model-00001-of-00002.safetensors");
  file->set_size_bytes(9'976'576'152ull);
  file->set_sha256(std::string(64, 'a'));
  file->set_etag("\"abc\"");
  file->set_xxh3_128(std::string(32, 'b'));
  m.add_files()->set_path("config.json");
  m.set_load_time_ms(1234);
  m.set_cache_location("custom");
  m.set_cache_path("/mnt/models");
  *m.mutable_last_used_at() = At(1'700'000'100);
  return m;
}

v1::Replica MakeReplica(const std::string& node, const std::string& tier, uint64_t size = 100) {
  v1::Replica r;
  r.set_node_id(node);
  r.set_tier(tier);
  r.set_path("/models/" + tier);
  r.set_size_bytes(size);
  r.set_state("ready");
  r.set_progress(1.0);
  r.set_commit("c1");
  if (tier == "disk") r.set_location("secondary");
  *r.mutable_loaded_at() = At(1'700'000'000);
  return r;
}

v1::Job MakeJob(const std::string& id, int64_t created_s, const std::string& state,
                const std::string& model = "m", const std::string& node = "n1") {
  v1::Job j;
  j.set_id(id);
  j.set_kind("download");
  j.set_model_name(model);
  j.set_node_id(node);
  j.set_state(state);
  *j.mutable_created_at() = At(created_s);
  return j;
}

std::vector<std::string> Ids(const std::vector<v1::Job>& jobs) {
  std::vector<std::string> ids;
  for (const v1::Job& j : jobs) ids.push_back(j.id());
  return ids;
}

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "registry_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/state/sub/host.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Registry> OpenOrDie(const std::string& path) {
    absl::StatusOr<std::unique_ptr<Registry>> registry = Registry::Open(path);
    EXPECT_TRUE(registry.ok()) << registry.status();
    return registry.ok() ? *std::move(registry) : nullptr;
  }

  // Runs one statement on the database file through a second, raw connection.
  std::string RawQuery(const std::string& sql) {
    absl::StatusOr<sqlite::Db> db = sqlite::Db::Open(path_, "test");
    EXPECT_TRUE(db.ok()) << db.status();
    absl::StatusOr<sqlite::Statement> s = db->Prepare(sql);
    EXPECT_TRUE(s.ok()) << s.status();
    absl::StatusOr<bool> row = s->Step();
    EXPECT_TRUE(row.ok()) << row.status();
    return row.ok() && *row ? s->Text(0) : "";
  }

  std::string dir_;
  std::string path_;
};

TEST_F(RegistryTest, OpenCreatesThePrivateFileInWalModeAtTheLatestSchema) {
  auto registry = OpenOrDie(path_);
  ASSERT_NE(registry, nullptr);
  EXPECT_EQ(registry->schema_version(), Registry::LatestSchemaVersion());
  EXPECT_GE(Registry::LatestSchemaVersion(), 1);
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(RawQuery("PRAGMA journal_mode"), "wal");
  ASSERT_TRUE(registry->PutModel(MakeModel("m")).ok());
  for (const char* suffix : {"-wal", "-shm"}) {
    ASSERT_EQ(::stat((path_ + suffix).c_str(), &st), 0) << suffix;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << suffix;
  }
  ASSERT_EQ(::stat((dir_ + "/state/sub").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(RawQuery("SELECT version FROM schema_version"),
            std::to_string(Registry::LatestSchemaVersion()));
}

TEST_F(RegistryTest, InMemoryDatabaseWorks) {
  auto registry = OpenOrDie(":memory:");
  ASSERT_NE(registry, nullptr);
  EXPECT_EQ(registry->schema_version(), Registry::LatestSchemaVersion());
  ASSERT_TRUE(registry->PutModel(MakeModel("tiny")).ok());
  EXPECT_EQ(registry->ListModels().size(), 1u);
}

TEST_F(RegistryTest, CatalogReplicasAndJobsSurviveReopen) {
  {
    auto registry = OpenOrDie(path_);
    ASSERT_TRUE(registry->PutModel(MakeModel("llama")).ok());
    ASSERT_TRUE(registry->PutReplica("llama", MakeReplica("n1", "disk")).ok());
    ASSERT_TRUE(registry->PutJob(MakeJob("j1", 10, "running"), R"({"model_name":"llama"})").ok());
  }
  auto registry = OpenOrDie(path_);
  ASSERT_NE(registry, nullptr);
  absl::StatusOr<v1::Model> model = registry->GetModel("llama");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->metadata().architecture(), "LlamaForCausalLM");
  ASSERT_EQ(model->replicas_size(), 1);
  EXPECT_EQ(model->replicas(0).node_id(), "n1");
  EXPECT_EQ(Ids(registry->UnfinishedJobs()), std::vector<std::string>{"j1"});
  EXPECT_EQ(*registry->GetJobRequest("j1"), R"({"model_name":"llama"})");
}

TEST_F(RegistryTest, ModelsRoundTripEveryCatalogField) {
  auto registry = OpenOrDie(":memory:");
  v1::Model in = MakeModel("llama2-7b");
  *in.mutable_created_at() = At(1'600'000'000);
  ASSERT_TRUE(registry->PutModel(in).ok());
  absl::StatusOr<v1::Model> out = registry->GetModel("llama2-7b");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(MessageDifferencer::Equals(in, *out)) << out->DebugString();

  v1::Model bare;
  bare.set_name("bare");
  ASSERT_TRUE(registry->PutModel(bare).ok());
  out = registry->GetModel("bare");
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE(out->has_metadata());
  EXPECT_FALSE(out->has_last_used_at());
  EXPECT_TRUE(out->has_created_at());  // stamped on first insert
  EXPECT_EQ(out->files_size(), 0);
}

TEST_F(RegistryTest, ListIsSortedByNameAndDeleteRemoves) {
  auto registry = OpenOrDie(":memory:");
  for (const char* name : {"zeta", "alpha", "mid"}) {
    ASSERT_TRUE(registry->PutModel(MakeModel(name)).ok());
  }
  ASSERT_TRUE(registry->PutReplica("mid", MakeReplica("n1", "dram")).ok());
  std::vector<v1::Model> models = registry->ListModels();
  ASSERT_EQ(models.size(), 3u);
  EXPECT_EQ(models[0].name(), "alpha");
  EXPECT_EQ(models[1].name(), "mid");
  EXPECT_EQ(models[2].name(), "zeta");
  EXPECT_EQ(models[1].replicas_size(), 1);
  EXPECT_EQ(models[0].replicas_size(), 0);
  EXPECT_EQ(models[1].metadata().num_layers(), 32u);

  ASSERT_TRUE(registry->DeleteModel("mid").ok());
  EXPECT_EQ(registry->ListModels().size(), 2u);
  absl::Status again = registry->DeleteModel("mid");
  EXPECT_EQ(again.code(), absl::StatusCode::kNotFound);
}

TEST_F(RegistryTest, UnknownModelIsNotFoundWithAHint) {
  auto registry = OpenOrDie(":memory:");
  absl::StatusOr<v1::Model> model = registry->GetModel("nope");
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(model.status().message(), "model \"nope\" is not registered (see `gswarm ls`)");
}

TEST_F(RegistryTest, UpdateReplacesFieldsButKeepsCreatedAt) {
  auto registry = OpenOrDie(":memory:");
  v1::Model m = MakeModel("llama");
  *m.mutable_created_at() = At(1'000);
  ASSERT_TRUE(registry->PutModel(m).ok());
  ASSERT_TRUE(registry->PutReplica("llama", MakeReplica("n1", "disk")).ok());
  m.set_size_bytes(42);
  m.mutable_metadata()->set_dtype("float16");
  *m.mutable_created_at() = At(2'000);
  ASSERT_TRUE(registry->PutModel(m).ok());
  absl::StatusOr<v1::Model> out = registry->GetModel("llama");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->size_bytes(), 42u);
  EXPECT_EQ(out->metadata().dtype(), "float16");
  EXPECT_EQ(out->created_at().seconds(), 1'000);
  EXPECT_EQ(out->replicas_size(), 1) << "an update must not drop the model's replicas";
}

TEST_F(RegistryTest, DeletingAModelDeletesItsReplicas) {
  auto registry = OpenOrDie(":memory:");
  ASSERT_TRUE(registry->PutModel(MakeModel("a")).ok());
  ASSERT_TRUE(registry->PutModel(MakeModel("b")).ok());
  ASSERT_TRUE(registry->PutReplica("a", MakeReplica("n1", "disk")).ok());
  ASSERT_TRUE(registry->PutReplica("a", MakeReplica("n1", "dram")).ok());
  ASSERT_TRUE(registry->PutReplica("b", MakeReplica("n1", "disk")).ok());
  ASSERT_TRUE(registry->DeleteModel("a").ok());
  auto left = registry->ReplicasOnNode("n1");
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].first, "b");
  // Re-registering "a" does not bring its replicas back.
  ASSERT_TRUE(registry->PutModel(MakeModel("a")).ok());
  EXPECT_EQ(registry->GetModel("a")->replicas_size(), 0);
}

TEST_F(RegistryTest, ReplicasNeedARegisteredModelAndAKey) {
  auto registry = OpenOrDie(":memory:");
  absl::Status status = registry->PutReplica("ghost", MakeReplica("n1", "disk"));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(status.message(), "\"ghost\" is not registered")) << status;
  ASSERT_TRUE(registry->PutModel(MakeModel("m")).ok());
  EXPECT_EQ(registry->PutReplica("m", MakeReplica("n1", "")).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(RegistryTest, PutReplicaUpsertsAndDeleteReplicaRemoves) {
  auto registry = OpenOrDie(":memory:");
  ASSERT_TRUE(registry->PutModel(MakeModel("m")).ok());
  v1::Replica r = MakeReplica("n1", "dram");
  r.set_state("copying");
  r.set_progress(0.5);
  ASSERT_TRUE(registry->PutReplica("m", r).ok());
  r.set_state("ready");
  r.set_progress(1.0);
  r.set_pinned(true);
  ASSERT_TRUE(registry->PutReplica("m", r).ok());
  auto on_node = registry->ReplicasOnNode("n1");
  ASSERT_EQ(on_node.size(), 1u);
  EXPECT_EQ(on_node[0].first, "m");
  r.set_model_name("m");  // filled in on read
  EXPECT_TRUE(MessageDifferencer::Equals(on_node[0].second, r)) << on_node[0].second.DebugString();

  ASSERT_TRUE(registry->DeleteReplica("m", "n1", "dram").ok());
  EXPECT_TRUE(registry->ReplicasOnNode("n1").empty());
  EXPECT_TRUE(registry->DeleteReplica("m", "n1", "dram").ok()) << "deleting twice is fine";
}

TEST_F(RegistryTest, ReplaceNodeReplicasReportsTheDiffAndSparesOtherNodes) {
  auto registry = OpenOrDie(":memory:");
  for (const char* name : {"a", "b", "c"}) ASSERT_TRUE(registry->PutModel(MakeModel(name)).ok());
  ASSERT_TRUE(registry->PutReplica("a", MakeReplica("n1", "disk")).ok());  // kept as is
  ASSERT_TRUE(registry->PutReplica("b", MakeReplica("n1", "disk")).ok());  // gone
  ASSERT_TRUE(registry->PutReplica("c", MakeReplica("n1", "dram")).ok());  // changed
  ASSERT_TRUE(registry->PutReplica("a", MakeReplica("n2", "disk")).ok());  // other node
  ASSERT_TRUE(registry->PutReplica("b", MakeReplica("n2", "dram")).ok());  // other node

  v1::Replica changed = MakeReplica("ignored", "dram", 999);
  std::vector<std::pair<std::string, v1::Replica>> report = {
      {"a", MakeReplica("n1", "disk")}, {"c", changed}, {"c", MakeReplica("n1", "disk")},  // new
  };
  absl::StatusOr<Registry::NodeDiff> diff = registry->ReplaceNodeReplicas("n1", report, {});
  ASSERT_TRUE(diff.ok()) << diff.status();
  EXPECT_EQ(diff->added, std::vector<std::string>{"c/disk"});
  EXPECT_EQ(diff->removed, std::vector<std::string>{"b/disk"});
  EXPECT_EQ(diff->updated, std::vector<std::string>{"c/dram"});

  auto n1 = registry->ReplicasOnNode("n1");
  ASSERT_EQ(n1.size(), 3u);
  EXPECT_EQ(n1[2].first, "c");
  EXPECT_EQ(n1[2].second.tier(), "dram");
  EXPECT_EQ(n1[2].second.node_id(), "n1") << "the node id comes from the reporting node";
  EXPECT_EQ(n1[2].second.size_bytes(), 999u);
  EXPECT_EQ(registry->ReplicasOnNode("n2").size(), 2u);

  // The same report again changes nothing.
  diff = registry->ReplaceNodeReplicas("n1", report, {});
  ASSERT_TRUE(diff.ok());
  EXPECT_TRUE(diff->added.empty() && diff->removed.empty() && diff->updated.empty());

  // An empty report clears the node.
  diff = registry->ReplaceNodeReplicas("n1", {}, {});
  ASSERT_TRUE(diff.ok());
  EXPECT_EQ(diff->removed.size(), 3u);
  EXPECT_TRUE(registry->ReplicasOnNode("n1").empty());
  EXPECT_EQ(registry->ReplicasOnNode("n2").size(), 2u);
}

TEST_F(RegistryTest, ReplaceNodeReplicasRegistersModelsFoundOnTheNode) {
  auto registry = OpenOrDie(":memory:");
  v1::Model found = MakeModel("discovered");
  found.set_type("");  // defaults to llm
  // As agents report it: the name, source and metadata ride on the replica.
  v1::Replica bare = MakeReplica("n1", "disk", 777);
  bare.set_commit("feedface");
  bare.set_model_name("bare");
  bare.set_source_url("file:///srv/bare");
  bare.mutable_metadata()->set_format("gguf");
  std::vector<std::pair<std::string, v1::Replica>> report = {
      {"discovered", MakeReplica("n1", "disk")},
      {"", bare},
      {"../evil", MakeReplica("n1", "disk")},  // skipped
  };
  absl::StatusOr<Registry::NodeDiff> diff = registry->ReplaceNodeReplicas("n1", report, {found});
  ASSERT_TRUE(diff.ok()) << diff.status();
  EXPECT_EQ(diff->added, (std::vector<std::string>{"bare/disk", "discovered/disk"}));

  absl::StatusOr<v1::Model> d = registry->GetModel("discovered");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->type(), "llm");
  EXPECT_EQ(d->metadata().architecture(), "LlamaForCausalLM");
  EXPECT_EQ(d->files_size(), 2);
  absl::StatusOr<v1::Model> b = registry->GetModel("bare");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->type(), "llm");
  EXPECT_EQ(b->size_bytes(), 777u);
  EXPECT_EQ(b->commit(), "feedface");
  EXPECT_EQ(b->source_url(), "file:///srv/bare");
  EXPECT_EQ(b->metadata().format(), "gguf");
  ASSERT_EQ(b->replicas_size(), 1);
  EXPECT_EQ(b->replicas(0).model_name(), "bare");
  EXPECT_EQ(registry->ListModels().size(), 2u);

  // The same report on reconnect changes nothing, source and metadata included.
  diff = registry->ReplaceNodeReplicas("n1", report, {found});
  ASSERT_TRUE(diff.ok());
  EXPECT_TRUE(diff->added.empty() && diff->removed.empty() && diff->updated.empty())
      << absl::StrJoin(diff->updated, ",");

  EXPECT_EQ(registry->ReplaceNodeReplicas("../n", {}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(RegistryTest, JobsRoundTripAndKeepTheirRequest) {
  auto registry = OpenOrDie(":memory:");
  v1::Job job = MakeJob("job-1", 100, "running");
  job.set_bytes_done(10);
  job.set_bytes_total(100);
  job.set_files_done(1);
  job.set_files_total(3);
  job.set_rate_bytes_per_s(12.5);
  job.set_bytes_from_hub(7);
  job.set_bytes_from_peers(3);
  job.set_message("downloading");
  *job.mutable_updated_at() = At(101);
  ASSERT_TRUE(registry->PutJob(job, R"({"source_url":"hf://a/b"})").ok());
  absl::StatusOr<v1::Job> out = registry->GetJob("job-1");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(MessageDifferencer::Equals(job, *out)) << out->DebugString();

  job.set_state("succeeded");
  *job.mutable_finished_at() = At(200);
  *job.mutable_created_at() = At(999);  // ignored: created_at keeps its first value
  *job.mutable_replica() = MakeReplica("n1", "disk");
  job.mutable_instance()->set_id("inst-1");
  ASSERT_TRUE(registry->PutJob(job).ok());
  out = registry->GetJob("job-1");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->state(), "succeeded");
  EXPECT_EQ(out->created_at().seconds(), 100);
  EXPECT_EQ(out->finished_at().seconds(), 200);
  EXPECT_EQ(out->replica().path(), "/models/disk");
  EXPECT_EQ(out->instance().id(), "inst-1");
  EXPECT_EQ(*registry->GetJobRequest("job-1"), R"({"source_url":"hf://a/b"})");

  absl::StatusOr<v1::Job> missing = registry->GetJob("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "job nope not found (see `gswarm jobs`)");
  EXPECT_EQ(registry->GetJobRequest("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry->PutJob(v1::Job()).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RegistryTest, ListJobsFiltersNewestFirstWithALimit) {
  auto registry = OpenOrDie(":memory:");
  ASSERT_TRUE(registry->PutJob(MakeJob("j1", 1, "succeeded", "a", "n1")).ok());
  ASSERT_TRUE(registry->PutJob(MakeJob("j3", 3, "running", "a", "n2")).ok());
  ASSERT_TRUE(registry->PutJob(MakeJob("j2", 2, "failed", "b", "n1")).ok());
  ASSERT_TRUE(registry->PutJob(MakeJob("j4", 4, "running", "b", "n1")).ok());

  EXPECT_EQ(Ids(registry->ListJobs({})), (std::vector<std::string>{"j4", "j3", "j2", "j1"}));
  EXPECT_EQ(Ids(registry->ListJobs({.state = "running"})), (std::vector<std::string>{"j4", "j3"}));
  EXPECT_EQ(Ids(registry->ListJobs({.model_name = "a"})), (std::vector<std::string>{"j3", "j1"}));
  EXPECT_EQ(Ids(registry->ListJobs({.model_name = "b", .node_id = "n1"})),
            (std::vector<std::string>{"j4", "j2"}));
  EXPECT_EQ(Ids(registry->ListJobs({.state = "running", .node_id = "n2"})),
            std::vector<std::string>{"j3"});
  EXPECT_EQ(Ids(registry->ListJobs({.limit = 2})), (std::vector<std::string>{"j4", "j3"}));
  EXPECT_EQ(registry->ListJobs({.limit = 0}).size(), 4u);
  EXPECT_TRUE(registry->ListJobs({.state = "cancelled"}).empty());
  // A value with SQL in it is only a value.
  EXPECT_TRUE(registry->ListJobs({.state = "x' OR '1'='1"}).empty());
}

TEST_F(RegistryTest, UnfinishedJobsAreThePendingAndRunningOnesOldestFirst) {
  auto registry = OpenOrDie(":memory:");
  ASSERT_TRUE(registry->PutJob(MakeJob("done", 1, "succeeded")).ok());
  ASSERT_TRUE(registry->PutJob(MakeJob("late", 5, "pending")).ok());
  ASSERT_TRUE(registry->PutJob(MakeJob("early", 2, "running")).ok());
  ASSERT_TRUE(registry->PutJob(MakeJob("gone", 3, "cancelled")).ok());
  EXPECT_EQ(Ids(registry->UnfinishedJobs()), (std::vector<std::string>{"early", "late"}));
}

TEST(ValidateModelNameTest, AcceptsTheRuleAndRefusesTheRest) {
  for (const std::string& good : {std::string("ok.name_1-2"), std::string("a"),
                                  std::string("Llama-2-7B"), std::string(128, 'x')}) {
    EXPECT_TRUE(ValidateModelName(good).ok()) << good;
  }
  for (const std::string& bad : {std::string("../x"), std::string("a..b"), std::string(""),
                                 std::string(129, 'x'), std::string("-x"), std::string("x y"),
                                 std::string("x/y"), std::string(".hidden"), std::string("é")}) {
    absl::Status status = ValidateModelName(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(status.message(), "letters, digits")) << status << bad;
  }
}

TEST_F(RegistryTest, PutModelRefusesAnInvalidName) {
  auto registry = OpenOrDie(":memory:");
  EXPECT_EQ(registry->PutModel(MakeModel("../etc")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(registry->ListModels().empty());
}

TEST_F(RegistryTest, ANewerSchemaIsRefusedWithAClearError) {
  { ASSERT_NE(OpenOrDie(path_), nullptr); }
  {
    absl::StatusOr<sqlite::Db> db = sqlite::Db::Open(path_, "test");
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE(db->Exec("UPDATE schema_version SET version = 99").ok());
  }
  absl::StatusOr<std::unique_ptr<Registry>> registry = Registry::Open(path_);
  ASSERT_FALSE(registry.ok());
  EXPECT_EQ(registry.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(registry.status().message());
  EXPECT_TRUE(absl::StrContains(message, path_)) << message;
  EXPECT_TRUE(absl::StrContains(
      message, absl::StrCat("host.db schema version 99 is newer than this gswarm (",
                            Registry::LatestSchemaVersion(), "): upgrade gswarm")))
      << message;
}

TEST_F(RegistryTest, ACorruptFileIsAnErrorNamingThePath) {
  std::filesystem::create_directories(std::filesystem::path(path_).parent_path());
  {
    std::ofstream out(path_, std::ios::binary);
    for (int i = 0; i < 512; ++i) out << "this is not a database, just garbage ";
  }
  absl::StatusOr<std::unique_ptr<Registry>> registry = Registry::Open(path_);
  ASSERT_FALSE(registry.ok());
  EXPECT_TRUE(absl::StrContains(registry.status().message(), path_)) << registry.status();
  EXPECT_TRUE(absl::StrContains(registry.status().message(), "not a database"))
      << registry.status();
}

TEST_F(RegistryTest, AnUnwritablePlaceIsAnErrorNamingThePath) {
  std::filesystem::create_directories(dir_);
  { std::ofstream(dir_ + "/file") << "x"; }
  const std::string path = dir_ + "/file/host.db";  // parent is a regular file
  absl::StatusOr<std::unique_ptr<Registry>> registry = Registry::Open(path);
  ASSERT_FALSE(registry.ok());
  EXPECT_TRUE(absl::StrContains(registry.status().message(), path)) << registry.status();
}

TEST(SqliteTest, ErrorsNameTheContextAndSqlitesMessageAndNothingHalfCommits) {
  absl::StatusOr<sqlite::Db> db = sqlite::Db::Open(":memory:", "registry: put model llama");
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE(db->Exec("CREATE TABLE t (k TEXT PRIMARY KEY)").ok());
  {
    absl::StatusOr<sqlite::Transaction> tx =
        sqlite::Transaction::Begin(*db, sqlite::Transaction::Kind::kWrite);
    ASSERT_TRUE(tx.ok()) << tx.status();
    absl::StatusOr<sqlite::Statement> insert = db->Prepare("INSERT INTO t (k) VALUES (?1)");
    ASSERT_TRUE(insert.ok());
    ASSERT_TRUE(insert->BindText(1, "a").Run().ok());
    ASSERT_TRUE(insert->Reset().ok());
    absl::Status dup = insert->BindText(1, "a").Run();
    EXPECT_EQ(dup.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(dup.message(), "registry: put model llama: UNIQUE constraint failed: t.k");
    // A bad parameter index is reported by the run, not lost.
    ASSERT_TRUE(insert->Reset().ok());
    EXPECT_FALSE(insert->BindText(7, "x").Run().ok());
  }  // not committed: rolled back
  absl::StatusOr<sqlite::Statement> count = db->Prepare("SELECT COUNT(*) FROM t");
  ASSERT_TRUE(count.ok());
  ASSERT_TRUE(*count->Step());
  EXPECT_EQ(count->Int64(0), 0);
  absl::Status syntax = db->Exec("SELEC nonsense");
  EXPECT_TRUE(absl::StartsWith(syntax.message(), "registry: put model llama: ")) << syntax;
}

TEST_F(RegistryTest, ConcurrentWritersAllLand) {
  auto registry = OpenOrDie(path_);
  ASSERT_NE(registry, nullptr);
  ASSERT_TRUE(registry->PutModel(MakeModel("m")).ok());
  constexpr int kThreads = 4;
  constexpr int kJobsPerThread = 200;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kJobsPerThread; ++i) {
        v1::Job job = MakeJob(absl::StrCat("t", t, "-", i), t * 1000 + i, "running");
        if (!registry->PutJob(job).ok()) ++failures;
        if (i % 50 == 0 && registry->ListModels().size() != 1) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(registry->ListJobs({.limit = 0}).size(), size_t{kThreads * kJobsPerThread});
  registry.reset();
  EXPECT_EQ(OpenOrDie(path_)->UnfinishedJobs().size(), size_t{kThreads * kJobsPerThread});
}

}  // namespace
}  // namespace gswarm::host
