#include "host/registry_rows.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/proto_json.h"
#include "common/status.h"
#include "google/protobuf/util/time_util.h"
#include "nlohmann/json.hpp"

namespace gswarm::host::rows {
namespace {

using google::protobuf::Timestamp;
using google::protobuf::util::TimeUtil;
using sqlite::Statement;

int64_t NowNanos() { return absl::ToUnixNanos(absl::Now()); }

std::optional<int64_t> Nanos(bool has, const Timestamp& t) {
  if (!has) return std::nullopt;
  return TimeUtil::TimestampToNanoseconds(t);
}

// Calls `set` with a nullable time column's value; NULL (an unset time) calls nothing.
template <typename SetFn>
void ReadTime(const Statement& s, int column, SetFn set) {
  if (!s.IsNull(column)) set(TimeUtil::NanosecondsToTimestamp(s.Int64(column)));
}

absl::Status StoredJsonError(absl::string_view what, absl::string_view detail) {
  return absl::DataLossError(
      absl::StrCat("registry: the stored ", what, " is not valid JSON: ", detail));
}

absl::StatusOr<std::optional<std::string>> JsonOrNull(bool has,
                                                      const google::protobuf::Message& message) {
  if (!has) return std::optional<std::string>();
  ASSIGN_OR_RETURN(std::string json, common::ToJson(message));
  return std::optional<std::string>(std::move(json));
}

// Parses a JSON column into `out`. REQUIRES: the column is not NULL.
absl::Status ReadJson(const Statement& s, int column, absl::string_view what,
                      google::protobuf::Message* out) {
  absl::Status status = common::FromJson(s.Text(column), out);
  if (!status.ok()) return StoredJsonError(what, status.message());
  return absl::OkStatus();
}

// Files are stored as a JSON array of ModelFile objects.
absl::StatusOr<std::string> FilesToJson(const v1::Model& model) {
  std::vector<std::string> items;
  for (const v1::ModelFile& file : model.files()) {
    ASSIGN_OR_RETURN(std::string json, common::ToJson(file));
    items.push_back(std::move(json));
  }
  return absl::StrCat("[", absl::StrJoin(items, ","), "]");
}

absl::Status FilesFromJson(const std::string& text, const std::string& model_name,
                           v1::Model* model) {
  const std::string what = absl::StrCat("file list of model \"", model_name, "\"");
  nlohmann::json array = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (array.is_discarded() || !array.is_array()) return StoredJsonError(what, "not an array");
  for (const nlohmann::json& item : array) {
    const std::string json = item.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    absl::Status status = common::FromJson(json, model->add_files());
    if (!status.ok()) return StoredJsonError(what, status.message());
  }
  return absl::OkStatus();
}

}  // namespace

// One script per schema version, each applied in its own transaction. Released scripts never
// change: a new version appends a script (ALTER TABLE, new tables, data fixes).
const char* const kMigrations[] = {
    // Version 1: the catalog, replicas and jobs. Times are unix nanoseconds (NULL: unset);
    // messages stored as JSON use protobuf's JSON mapping.
    R"sql(
CREATE TABLE models (
  name          TEXT PRIMARY KEY NOT NULL,
  type          TEXT NOT NULL DEFAULT '',
  source_url    TEXT NOT NULL DEFAULT '',
  revision      TEXT NOT NULL DEFAULT '',
  commit_sha    TEXT NOT NULL DEFAULT '',
  size_bytes    INTEGER NOT NULL DEFAULT 0,
  metadata_json TEXT,
  files_json    TEXT,
  created_at    INTEGER,
  load_time_ms  INTEGER NOT NULL DEFAULT 0,
  last_used_at  INTEGER
);
CREATE TABLE replicas (
  model_name   TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE ON UPDATE CASCADE,
  node_id      TEXT NOT NULL,
  tier         TEXT NOT NULL,
  path         TEXT NOT NULL DEFAULT '',
  size_bytes   INTEGER NOT NULL DEFAULT 0,
  state        TEXT NOT NULL DEFAULT '',
  progress     REAL NOT NULL DEFAULT 0,
  pinned       INTEGER NOT NULL DEFAULT 0,
  commit_sha   TEXT NOT NULL DEFAULT '',
  in_place     INTEGER NOT NULL DEFAULT 0,
  last_used_at INTEGER,
  loaded_at    INTEGER,
  PRIMARY KEY (model_name, node_id, tier)
);
CREATE INDEX replicas_by_node ON replicas(node_id);
CREATE TABLE jobs (
  id            TEXT PRIMARY KEY NOT NULL,
  kind          TEXT NOT NULL DEFAULT '',
  model_name    TEXT NOT NULL DEFAULT '',
  node_id       TEXT NOT NULL DEFAULT '',
  state         TEXT NOT NULL DEFAULT '',
  message       TEXT NOT NULL DEFAULT '',
  bytes_done    INTEGER NOT NULL DEFAULT 0,
  bytes_total   INTEGER NOT NULL DEFAULT 0,
  files_done    INTEGER NOT NULL DEFAULT 0,
  files_total   INTEGER NOT NULL DEFAULT 0,
  rate          REAL NOT NULL DEFAULT 0,
  created_at    INTEGER,
  updated_at    INTEGER,
  finished_at   INTEGER,
  replica_json  TEXT,
  instance_json TEXT,
  request_json  TEXT
);
CREATE INDEX jobs_by_state ON jobs(state);
CREATE INDEX jobs_by_created_at ON jobs(created_at);
)sql",
    // Version 2: disk locations (where a model's disk copy goes, and where each copy is), and
    // where a download's bytes came from.
    R"sql(
ALTER TABLE models ADD COLUMN cache_location TEXT NOT NULL DEFAULT '';
ALTER TABLE models ADD COLUMN cache_path TEXT NOT NULL DEFAULT '';
ALTER TABLE replicas ADD COLUMN location TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN bytes_from_hub INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN bytes_from_peers INTEGER NOT NULL DEFAULT 0;
)sql",
};

absl::Span<const char* const> Migrations() { return kMigrations; }

const char kModelColumns[] =
    "name, type, source_url, revision, commit_sha, size_bytes, metadata_json, files_json, "
    "created_at, load_time_ms, last_used_at, cache_location, cache_path";
const char kReplicaColumns[] =
    "model_name, node_id, tier, path, size_bytes, state, progress, pinned, commit_sha, in_place, "
    "last_used_at, loaded_at, location";
const char kJobColumns[] =
    "id, kind, model_name, node_id, state, message, bytes_done, bytes_total, files_done, "
    "files_total, rate, created_at, updated_at, finished_at, replica_json, instance_json, "
    "bytes_from_hub, bytes_from_peers";

absl::StatusOr<v1::Model> ReadModel(const Statement& s) {
  v1::Model m;
  m.set_name(s.Text(0));
  m.set_type(s.Text(1));
  m.set_source_url(s.Text(2));
  m.set_revision(s.Text(3));
  m.set_commit(s.Text(4));
  m.set_size_bytes(static_cast<uint64_t>(s.Int64(5)));
  if (!s.IsNull(6)) {
    RETURN_IF_ERROR(
        ReadJson(s, 6, absl::StrCat("metadata of model \"", m.name(), "\""), m.mutable_metadata()));
  }
  if (!s.IsNull(7)) RETURN_IF_ERROR(FilesFromJson(s.Text(7), m.name(), &m));
  ReadTime(s, 8, [&](Timestamp t) { *m.mutable_created_at() = t; });
  m.set_load_time_ms(static_cast<uint64_t>(s.Int64(9)));
  m.set_cache_location(s.Text(11));
  m.set_cache_path(s.Text(12));
  ReadTime(s, 10, [&](Timestamp t) { *m.mutable_last_used_at() = t; });
  return m;
}

// Inserts or updates the catalog fields of `m`. Never INSERT OR REPLACE here: replacing a model
// row would cascade-delete its replicas.
absl::Status UpsertModel(sqlite::Db& db, const v1::Model& m) {
  auto annotate = [&](const absl::Status& s) { return common::Annotate(s, db.error_context()); };
  absl::StatusOr<std::optional<std::string>> metadata = JsonOrNull(m.has_metadata(), m.metadata());
  if (!metadata.ok()) return annotate(metadata.status());
  absl::StatusOr<std::string> files = FilesToJson(m);
  if (!files.ok()) return annotate(files.status());
  ASSIGN_OR_RETURN(
      Statement s,
      db.Prepare(absl::StrCat(
          "INSERT INTO models (", kModelColumns,
          ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) "
          "ON CONFLICT (name) DO UPDATE SET type = excluded.type, "
          "source_url = excluded.source_url, revision = excluded.revision, "
          "commit_sha = excluded.commit_sha, size_bytes = excluded.size_bytes, "
          "metadata_json = excluded.metadata_json, files_json = excluded.files_json, "
          "load_time_ms = excluded.load_time_ms, last_used_at = excluded.last_used_at, "
          "cache_location = excluded.cache_location, cache_path = excluded.cache_path")));
  s.BindText(1, m.name())
      .BindText(2, m.type())
      .BindText(3, m.source_url())
      .BindText(4, m.revision())
      .BindText(5, m.commit())
      .BindInt64(6, static_cast<int64_t>(m.size_bytes()))
      .BindTextOrNull(7, *std::move(metadata))
      .BindText(8, *files)
      .BindInt64(9,
                 m.has_created_at() ? TimeUtil::TimestampToNanoseconds(m.created_at()) : NowNanos())
      .BindInt64(10, static_cast<int64_t>(m.load_time_ms()))
      .BindInt64OrNull(11, Nanos(m.has_last_used_at(), m.last_used_at()))
      .BindText(12, m.cache_location())
      .BindText(13, m.cache_path());
  return s.Run();
}

absl::StatusOr<bool> ModelExists(sqlite::Db& db, absl::string_view name) {
  ASSIGN_OR_RETURN(Statement s, db.Prepare("SELECT 1 FROM models WHERE name = ?1"));
  s.BindText(1, name);
  return s.Step();
}

v1::Replica ReadReplica(const Statement& s) {
  v1::Replica r;
  r.set_model_name(s.Text(0));
  r.set_node_id(s.Text(1));
  r.set_tier(s.Text(2));
  r.set_path(s.Text(3));
  r.set_size_bytes(static_cast<uint64_t>(s.Int64(4)));
  r.set_state(s.Text(5));
  r.set_progress(s.Double(6));
  r.set_pinned(s.Int64(7) != 0);
  r.set_commit(s.Text(8));
  r.set_in_place(s.Int64(9) != 0);
  ReadTime(s, 10, [&](Timestamp t) { *r.mutable_last_used_at() = t; });
  ReadTime(s, 11, [&](Timestamp t) { *r.mutable_loaded_at() = t; });
  r.set_location(s.Text(12));
  return r;
}

absl::Status UpsertReplica(sqlite::Db& db, absl::string_view model_name, const v1::Replica& r) {
  // INSERT OR REPLACE is safe here: nothing references a replica row.
  ASSIGN_OR_RETURN(Statement s, db.Prepare(absl::StrCat(
                                    "INSERT OR REPLACE INTO replicas (", kReplicaColumns,
                                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
                                    "?13)")));
  s.BindText(1, model_name)
      .BindText(2, r.node_id())
      .BindText(3, r.tier())
      .BindText(4, r.path())
      .BindInt64(5, static_cast<int64_t>(r.size_bytes()))
      .BindText(6, r.state())
      .BindDouble(7, r.progress())
      .BindInt64(8, r.pinned() ? 1 : 0)
      .BindText(9, r.commit())
      .BindInt64(10, r.in_place() ? 1 : 0)
      .BindInt64OrNull(11, Nanos(r.has_last_used_at(), r.last_used_at()))
      .BindInt64OrNull(12, Nanos(r.has_loaded_at(), r.loaded_at()))
      .BindText(13, r.location());
  return s.Run();
}

absl::Status SelectReplicas(sqlite::Db& db, absl::string_view where,
                            std::optional<absl::string_view> param,
                            absl::FunctionRef<void(std::string, v1::Replica)> fn) {
  ASSIGN_OR_RETURN(Statement s,
                   db.Prepare(absl::StrCat("SELECT ", kReplicaColumns, " FROM replicas ", where)));
  if (param.has_value()) s.BindText(1, *param);
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return absl::OkStatus();
    fn(s.Text(0), ReadReplica(s));
  }
}

absl::StatusOr<v1::Job> ReadJob(const Statement& s) {
  v1::Job j;
  j.set_id(s.Text(0));
  j.set_kind(s.Text(1));
  j.set_model_name(s.Text(2));
  j.set_node_id(s.Text(3));
  j.set_state(s.Text(4));
  j.set_message(s.Text(5));
  j.set_bytes_done(static_cast<uint64_t>(s.Int64(6)));
  j.set_bytes_total(static_cast<uint64_t>(s.Int64(7)));
  j.set_files_done(static_cast<uint32_t>(s.Int64(8)));
  j.set_files_total(static_cast<uint32_t>(s.Int64(9)));
  j.set_rate_bytes_per_s(s.Double(10));
  ReadTime(s, 11, [&](Timestamp t) { *j.mutable_created_at() = t; });
  ReadTime(s, 12, [&](Timestamp t) { *j.mutable_updated_at() = t; });
  ReadTime(s, 13, [&](Timestamp t) { *j.mutable_finished_at() = t; });
  if (!s.IsNull(14)) {
    RETURN_IF_ERROR(ReadJson(s, 14, absl::StrCat("replica of job ", j.id()), j.mutable_replica()));
  }
  if (!s.IsNull(15)) {
    RETURN_IF_ERROR(
        ReadJson(s, 15, absl::StrCat("instance of job ", j.id()), j.mutable_instance()));
  }
  j.set_bytes_from_hub(static_cast<uint64_t>(s.Int64(16)));
  j.set_bytes_from_peers(static_cast<uint64_t>(s.Int64(17)));
  return j;
}

absl::Status UpsertJob(sqlite::Db& db, const v1::Job& job, absl::string_view request_json) {
  auto annotate = [&](const absl::Status& s) { return common::Annotate(s, db.error_context()); };
  absl::StatusOr<std::optional<std::string>> replica = JsonOrNull(job.has_replica(), job.replica());
  if (!replica.ok()) return annotate(replica.status());
  absl::StatusOr<std::optional<std::string>> instance =
      JsonOrNull(job.has_instance(), job.instance());
  if (!instance.ok()) return annotate(instance.status());
  ASSIGN_OR_RETURN(
      Statement s,
      db.Prepare(absl::StrCat(
          "INSERT INTO jobs (", kJobColumns,
          ", request_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
          "?15, ?16, ?17, ?18, ?19) ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, "
          "model_name = excluded.model_name, node_id = excluded.node_id, state = excluded.state, "
          "message = excluded.message, bytes_done = excluded.bytes_done, "
          "bytes_total = excluded.bytes_total, files_done = excluded.files_done, "
          "files_total = excluded.files_total, rate = excluded.rate, "
          "updated_at = excluded.updated_at, finished_at = excluded.finished_at, "
          "replica_json = excluded.replica_json, instance_json = excluded.instance_json, "
          "bytes_from_hub = excluded.bytes_from_hub, bytes_from_peers = excluded.bytes_from_peers, "
          "request_json = COALESCE(excluded.request_json, jobs.request_json)")));
  s.BindText(1, job.id())
      .BindText(2, job.kind())
      .BindText(3, job.model_name())
      .BindText(4, job.node_id())
      .BindText(5, job.state())
      .BindText(6, job.message())
      .BindInt64(7, static_cast<int64_t>(job.bytes_done()))
      .BindInt64(8, static_cast<int64_t>(job.bytes_total()))
      .BindInt64(9, job.files_done())
      .BindInt64(10, job.files_total())
      .BindDouble(11, job.rate_bytes_per_s())
      .BindInt64(12, job.has_created_at() ? TimeUtil::TimestampToNanoseconds(job.created_at())
                                          : NowNanos())
      .BindInt64OrNull(13, Nanos(job.has_updated_at(), job.updated_at()))
      .BindInt64OrNull(14, Nanos(job.has_finished_at(), job.finished_at()))
      .BindTextOrNull(15, *std::move(replica))
      .BindTextOrNull(16, *std::move(instance))
      .BindInt64(17, static_cast<int64_t>(job.bytes_from_hub()))
      .BindInt64(18, static_cast<int64_t>(job.bytes_from_peers()));
  if (request_json.empty()) {
    s.BindNull(19);
  } else {
    s.BindText(19, request_json);
  }
  return s.Run();
}

}  // namespace gswarm::host::rows
