#include "host/registry.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <optional>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/paths.h"
#include "common/status.h"
#include "google/protobuf/util/message_differencer.h"
#include "host/node_registry.h"
#include "host/registry_rows.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

using sqlite::Statement;
using Kind = sqlite::Transaction::Kind;

// ---- Schema ----

absl::StatusOr<int> ReadSchemaVersion(sqlite::Db& db) {
  ASSIGN_OR_RETURN(Statement s, db.Prepare("SELECT MAX(version) FROM schema_version"));
  ASSIGN_OR_RETURN(bool row, s.Step());
  return row ? static_cast<int>(s.Int64(0)) : 0;  // MAX of no rows is NULL, read as 0
}

absl::Status WriteSchemaVersion(sqlite::Db& db, int version) {
  RETURN_IF_ERROR(db.Exec("DELETE FROM schema_version"));
  ASSIGN_OR_RETURN(Statement s, db.Prepare("INSERT INTO schema_version (version) VALUES (?1)"));
  s.BindInt64(1, version);
  return s.Run();
}

// Applies the missing migrations, one transaction each. The version is re-read inside each
// transaction, so two processes opening one database at once do not apply a script twice.
absl::StatusOr<int> Migrate(sqlite::Db& db, const std::string& path) {
  const int latest = Registry::LatestSchemaVersion();
  RETURN_IF_ERROR(db.Exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"));
  while (true) {
    ASSIGN_OR_RETURN(sqlite::Transaction tx, sqlite::Transaction::Begin(db, Kind::kWrite));
    ASSIGN_OR_RETURN(int version, ReadSchemaVersion(db));
    if (version > latest) {
      return absl::FailedPreconditionError(
          absl::StrCat("registry: open ", path, ": host.db schema version ", version,
                       " is newer than this gswarm (", latest, "): upgrade gswarm"));
    }
    if (version == latest) {
      RETURN_IF_ERROR(tx.Commit());
      return version;
    }
    db.set_error_context(
        absl::StrCat("registry: open ", path, ": migrating to schema version ", version + 1));
    RETURN_IF_ERROR(db.Exec(rows::Migrations()[version]));
    RETURN_IF_ERROR(WriteSchemaVersion(db, version + 1));
    RETURN_IF_ERROR(tx.Commit());
    spdlog::info("registry {}: schema migrated to version {}", path, version + 1);
  }
}

// Creates the file with mode 0600 before SQLite opens it (SQLite would use 0644); SQLite gives
// the -wal and -shm files the database's mode.
absl::Status CreateDatabaseFile(const std::string& path, const std::string& context) {
  const size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    RETURN_IF_ERROR(common::Annotate(common::MakeDirs(path.substr(0, slash), 0700), context));
  }
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return absl::ErrnoToStatus(errno, context);
  ::close(fd);
  return absl::OkStatus();
}

}  // namespace

int Registry::LatestSchemaVersion() { return static_cast<int>(rows::Migrations().size()); }

Registry::Registry(sqlite::Db db, int schema_version)
    : schema_version_(schema_version), db_(std::move(db)) {}

absl::StatusOr<std::unique_ptr<Registry>> Registry::Open(const std::string& path) {
  if (path.empty()) {
    return absl::InvalidArgumentError("registry: no database path given");
  }
  const std::string context = absl::StrCat("registry: open ", path);
  const bool in_memory = path == ":memory:";
  if (!in_memory) RETURN_IF_ERROR(CreateDatabaseFile(path, context));
  ASSIGN_OR_RETURN(sqlite::Db db, sqlite::Db::Open(path, context));
  // busy_timeout first, so that switching to WAL waits for another process's lock.
  RETURN_IF_ERROR(db.Exec("PRAGMA busy_timeout = 5000"));
  {
    ASSIGN_OR_RETURN(Statement s, db.Prepare("PRAGMA journal_mode = WAL"));
    ASSIGN_OR_RETURN(bool row, s.Step());
    const std::string mode = row ? s.Text(0) : "";
    if (mode != "wal" && !in_memory) {
      spdlog::warn("{}: journal mode is \"{}\", not WAL (is the file on a network file system?)",
                   context, mode);
    }
  }
  RETURN_IF_ERROR(db.Exec("PRAGMA synchronous = NORMAL"));
  RETURN_IF_ERROR(db.Exec("PRAGMA foreign_keys = ON"));
  ASSIGN_OR_RETURN(int version, Migrate(db, path));
  return std::unique_ptr<Registry>(new Registry(std::move(db), version));
}

absl::StatusOr<sqlite::Transaction> Registry::Begin(Kind kind, std::string what) const {
  db_.set_error_context(absl::StrCat("registry: ", what));
  return sqlite::Transaction::Begin(db_, kind);
}

// ---- Catalog ----

absl::Status Registry::PutModel(const v1::Model& model) {
  RETURN_IF_ERROR(ValidateModelName(model.name()));
  gswarm::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Transaction tx,
                   Begin(Kind::kWrite, absl::StrCat("put model ", model.name())));
  RETURN_IF_ERROR(rows::UpsertModel(db_, model));
  return tx.Commit();
}

absl::StatusOr<v1::Model> Registry::GetModel(absl::string_view name) const {
  gswarm::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Transaction tx, Begin(Kind::kRead, absl::StrCat("get model ", name)));
  ASSIGN_OR_RETURN(Statement s, db_.Prepare(absl::StrCat("SELECT ", rows::kModelColumns,
                                                         " FROM models WHERE name = ?1")));
  s.BindText(1, name);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) {
    return absl::NotFoundError(
        absl::StrCat("model \"", name, "\" is not registered (see `gswarm ls`)"));
  }
  ASSIGN_OR_RETURN(v1::Model model, rows::ReadModel(s));
  RETURN_IF_ERROR(rows::SelectReplicas(
      db_, "WHERE model_name = ?1 ORDER BY node_id, tier", name,
      [&](std::string, v1::Replica r) { *model.add_replicas() = std::move(r); }));
  RETURN_IF_ERROR(tx.Commit());
  return model;
}

bool Registry::HasModel(absl::string_view name) const {
  gswarm::MutexLock lock(&mu_);
  absl::StatusOr<bool> exists = rows::ModelExists(db_, name);
  if (!exists.ok()) {
    spdlog::error("registry: looking up model {}: {}", name, exists.status().message());
    return false;
  }
  return *exists;
}

std::vector<v1::Model> Registry::ListModels() const {
  gswarm::MutexLock lock(&mu_);
  std::vector<v1::Model> models;
  absl::Status status = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    ASSIGN_OR_RETURN(sqlite::Transaction tx, Begin(Kind::kRead, "list models"));
    ASSIGN_OR_RETURN(Statement s, db_.Prepare(absl::StrCat("SELECT ", rows::kModelColumns,
                                                           " FROM models ORDER BY name")));
    absl::flat_hash_map<std::string, size_t> index;
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      ASSIGN_OR_RETURN(v1::Model model, rows::ReadModel(s));
      index[model.name()] = models.size();
      models.push_back(std::move(model));
    }
    RETURN_IF_ERROR(rows::SelectReplicas(db_, "ORDER BY model_name, node_id, tier", std::nullopt,
                                         [&](std::string model_name, v1::Replica r) {
                                           auto it = index.find(model_name);
                                           if (it == index.end()) return;
                                           *models[it->second].add_replicas() = std::move(r);
                                         }));
    return tx.Commit();
  }();
  if (!status.ok()) {
    spdlog::error("{}", status.message());
    return {};
  }
  return models;
}

absl::Status Registry::DeleteModel(absl::string_view name) {
  gswarm::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Transaction tx,
                   Begin(Kind::kWrite, absl::StrCat("delete model ", name)));
  ASSIGN_OR_RETURN(Statement s, db_.Prepare("DELETE FROM models WHERE name = ?1"));
  s.BindText(1, name);
  RETURN_IF_ERROR(s.Run());
  if (db_.Changes() == 0) {
    return absl::NotFoundError(
        absl::StrCat("model \"", name, "\" is not registered (see `gswarm ls`)"));
  }
  return tx.Commit();
}

// ---- Replicas ----

absl::Status Registry::PutReplica(absl::string_view model_name, const v1::Replica& replica) {
  if (replica.node_id().empty() || replica.tier().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("replica of model \"", model_name, "\" needs a node id and a tier"));
  }
  gswarm::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Transaction tx,
                   Begin(Kind::kWrite, absl::StrCat("put replica ", model_name, " on node ",
                                                    replica.node_id(), " ", replica.tier())));
  ASSIGN_OR_RETURN(bool exists, rows::ModelExists(db_, model_name));
  if (!exists) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model \"", model_name, "\" is not registered: register it before recording a replica"));
  }
  RETURN_IF_ERROR(rows::UpsertReplica(db_, model_name, replica));
  return tx.Commit();
}

absl::Status Registry::DeleteReplica(absl::string_view model_name, absl::string_view node_id,
                                     absl::string_view tier) {
  gswarm::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Transaction tx,
                   Begin(Kind::kWrite, absl::StrCat("delete replica ", model_name, " on node ",
                                                    node_id, " ", tier)));
  ASSIGN_OR_RETURN(
      Statement s,
      db_.Prepare("DELETE FROM replicas WHERE model_name = ?1 AND node_id = ?2 AND tier = ?3"));
  s.BindText(1, model_name).BindText(2, node_id).BindText(3, tier);
  RETURN_IF_ERROR(s.Run());
  return tx.Commit();
}

absl::StatusOr<Registry::NodeDiff> Registry::ReplaceNodeReplicas(
    absl::string_view node_id, const std::vector<std::pair<std::string, v1::Replica>>& replicas,
    const std::vector<v1::Model>& models_found) {
  RETURN_IF_ERROR(ValidateNodeId(node_id));
  // "model/tier" -> (model, replica): a model name never holds '/', so keys are unambiguous.
  std::map<std::string, std::pair<std::string, v1::Replica>> wanted;
  for (const auto& [name, replica] : replicas) {
    const std::string& model_name = name.empty() ? replica.model_name() : name;
    if (absl::Status valid = ValidateModelName(model_name); !valid.ok()) {
      spdlog::warn("node={}: inventory entry skipped: {}", node_id, valid.message());
      continue;
    }
    if (replica.tier().empty()) {
      spdlog::warn("node={}: inventory entry for model {} skipped: no tier", node_id, model_name);
      continue;
    }
    // As stored and read back, so that an unchanged replica compares equal.
    v1::Replica r = replica;
    r.set_node_id(std::string(node_id));
    r.set_model_name(model_name);
    r.clear_source_url();
    r.clear_metadata();
    std::string key = absl::StrCat(model_name, "/", r.tier());
    wanted[std::move(key)] = {model_name, std::move(r)};
  }

  gswarm::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Transaction tx,
                   Begin(Kind::kWrite, absl::StrCat("reconcile node ", node_id)));
  std::map<std::string, v1::Replica> before;
  RETURN_IF_ERROR(rows::SelectReplicas(db_, "WHERE node_id = ?1", node_id,
                                       [&](std::string model_name, v1::Replica r) {
                                         std::string key = absl::StrCat(model_name, "/", r.tier());
                                         before[std::move(key)] = std::move(r);
                                       }));
  std::set<std::string> checked;
  for (const auto& [key, entry] : wanted) {
    const std::string& model_name = entry.first;
    if (!checked.insert(model_name).second) continue;
    ASSIGN_OR_RETURN(bool exists, rows::ModelExists(db_, model_name));
    if (exists) continue;
    auto found = std::find_if(models_found.begin(), models_found.end(),
                              [&](const v1::Model& m) { return m.name() == model_name; });
    // The replica as reported, with the source and metadata that `entry` no longer has.
    const v1::Replica& reported =
        std::find_if(replicas.begin(), replicas.end(), [&](const auto& pair) {
          return (pair.first.empty() ? pair.second.model_name() : pair.first) == model_name;
        })->second;
    v1::Model model;
    if (found != models_found.end()) model = *found;
    model.set_name(model_name);
    model.clear_replicas();
    model.clear_instances();
    if (model.type().empty()) model.set_type("llm");
    if (model.source_url().empty()) model.set_source_url(reported.source_url());
    if (model.size_bytes() == 0) model.set_size_bytes(reported.size_bytes());
    if (model.commit().empty()) model.set_commit(reported.commit());
    if (!model.has_metadata() && reported.has_metadata()) {
      *model.mutable_metadata() = reported.metadata();
    }
    RETURN_IF_ERROR(rows::UpsertModel(db_, model));
    spdlog::info("node={}: registered model {} found on the node", node_id, model_name);
  }
  {
    ASSIGN_OR_RETURN(Statement s, db_.Prepare("DELETE FROM replicas WHERE node_id = ?1"));
    s.BindText(1, node_id);
    RETURN_IF_ERROR(s.Run());
  }
  NodeDiff diff;
  for (const auto& [key, entry] : wanted) {
    RETURN_IF_ERROR(rows::UpsertReplica(db_, entry.first, entry.second));
    auto old = before.find(key);
    if (old == before.end()) {
      diff.added.push_back(key);
    } else if (!google::protobuf::util::MessageDifferencer::Equals(old->second, entry.second)) {
      diff.updated.push_back(key);
    }
  }
  for (const auto& [key, replica] : before) {
    if (!wanted.contains(key)) diff.removed.push_back(key);
  }
  RETURN_IF_ERROR(tx.Commit());
  return diff;
}

std::vector<std::pair<std::string, v1::Replica>> Registry::ReplicasOnNode(
    absl::string_view node_id) const {
  gswarm::MutexLock lock(&mu_);
  std::vector<std::pair<std::string, v1::Replica>> out;
  absl::Status status = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    ASSIGN_OR_RETURN(sqlite::Transaction tx,
                     Begin(Kind::kRead, absl::StrCat("list replicas on node ", node_id)));
    RETURN_IF_ERROR(rows::SelectReplicas(db_, "WHERE node_id = ?1 ORDER BY model_name, tier",
                                         node_id, [&](std::string model_name, v1::Replica r) {
                                           out.emplace_back(std::move(model_name), std::move(r));
                                         }));
    return tx.Commit();
  }();
  if (!status.ok()) {
    spdlog::error("{}", status.message());
    return {};
  }
  return out;
}

// ---- Jobs ----

absl::Status Registry::PutJob(const v1::Job& job, absl::string_view request_json) {
  if (job.id().empty()) return absl::InvalidArgumentError("registry: a job needs an id");
  gswarm::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Transaction tx, Begin(Kind::kWrite, absl::StrCat("put job ", job.id())));
  RETURN_IF_ERROR(rows::UpsertJob(db_, job, request_json));
  return tx.Commit();
}

absl::StatusOr<v1::Job> Registry::GetJob(absl::string_view id) const {
  gswarm::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Transaction tx, Begin(Kind::kRead, absl::StrCat("get job ", id)));
  ASSIGN_OR_RETURN(std::vector<v1::Job> jobs,
                   QueryJobs(absl::StrCat("SELECT ", rows::kJobColumns, " FROM jobs WHERE id = ?1"),
                             {std::string(id)}, 1));
  if (jobs.empty()) {
    return absl::NotFoundError(absl::StrCat("job ", id, " not found (see `gswarm jobs`)"));
  }
  RETURN_IF_ERROR(tx.Commit());
  return std::move(jobs.front());
}

absl::StatusOr<std::string> Registry::GetJobRequest(absl::string_view id) const {
  gswarm::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Transaction tx,
                   Begin(Kind::kRead, absl::StrCat("get request of job ", id)));
  ASSIGN_OR_RETURN(Statement s, db_.Prepare("SELECT request_json FROM jobs WHERE id = ?1"));
  s.BindText(1, id);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job ", id, " not found (see `gswarm jobs`)"));
  std::string request = s.Text(0);
  RETURN_IF_ERROR(tx.Commit());
  return request;
}

absl::StatusOr<std::vector<v1::Job>> Registry::QueryJobs(const std::string& sql,
                                                         const std::vector<std::string>& params,
                                                         int64_t limit) const {
  ASSIGN_OR_RETURN(Statement s, db_.Prepare(absl::StrCat(sql, " LIMIT ?", params.size() + 1)));
  for (size_t i = 0; i < params.size(); ++i) s.BindText(static_cast<int>(i + 1), params[i]);
  s.BindInt64(static_cast<int>(params.size() + 1), limit);
  std::vector<v1::Job> jobs;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return jobs;
    ASSIGN_OR_RETURN(v1::Job job, rows::ReadJob(s));
    jobs.push_back(std::move(job));
  }
}

std::vector<v1::Job> Registry::ListJobs(const JobFilter& filter) const {
  // The WHERE clause is assembled from constant fragments; values are bound as parameters.
  std::vector<std::string> conditions;
  std::vector<std::string> params;
  auto add = [&](const char* column, const std::string& value) {
    if (value.empty()) return;
    params.push_back(value);
    conditions.push_back(absl::StrCat(column, " = ?", params.size()));
  };
  add("state", filter.state);
  add("model_name", filter.model_name);
  add("node_id", filter.node_id);
  std::string sql = absl::StrCat("SELECT ", rows::kJobColumns, " FROM jobs");
  if (!conditions.empty()) absl::StrAppend(&sql, " WHERE ", absl::StrJoin(conditions, " AND "));
  // rowid breaks ties between jobs created in the same nanosecond: later inserts first.
  absl::StrAppend(&sql, " ORDER BY created_at DESC, rowid DESC");

  gswarm::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<v1::Job>> jobs =
      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::StatusOr<std::vector<v1::Job>> {
    ASSIGN_OR_RETURN(sqlite::Transaction tx, Begin(Kind::kRead, "list jobs"));
    ASSIGN_OR_RETURN(std::vector<v1::Job> out,
                     QueryJobs(sql, params, filter.limit == 0 ? -1 : filter.limit));
    RETURN_IF_ERROR(tx.Commit());
    return out;
  }();
  if (!jobs.ok()) {
    spdlog::error("{}", jobs.status().message());
    return {};
  }
  return *std::move(jobs);
}

std::vector<v1::Job> Registry::UnfinishedJobs() const {
  gswarm::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<v1::Job>> jobs =
      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::StatusOr<std::vector<v1::Job>> {
    ASSIGN_OR_RETURN(sqlite::Transaction tx, Begin(Kind::kRead, "list unfinished jobs"));
    ASSIGN_OR_RETURN(std::vector<v1::Job> out,
                     QueryJobs(absl::StrCat("SELECT ", rows::kJobColumns,
                                            " FROM jobs WHERE state IN ('pending', 'running') "
                                            "ORDER BY created_at, rowid"),
                               {}, -1));
    RETURN_IF_ERROR(tx.Commit());
    return out;
  }();
  if (!jobs.ok()) {
    spdlog::error("{}", jobs.status().message());
    return {};
  }
  return *std::move(jobs);
}

}  // namespace gswarm::host
