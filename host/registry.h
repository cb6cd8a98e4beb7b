#pragma once

// The host's persistent registry (SQLite, WAL): the model catalog, where each model's replicas
// live, and jobs. The host is the truth for the catalog; each agent is the truth for what is on
// its node, so a node's replicas are replaced wholesale when its agent reports its inventory.
//
// Stored per model: the catalog fields (name, type, source_url, revision, commit, size_bytes,
// metadata, files, created_at, load_time_ms, last_used_at) and its replicas. The runtime fields
// (state, available, loaded, can_load, instances) are not stored: the orchestrator derives them.
//
// Every public method is one transaction. Storage errors come back as a Status naming the
// operation and SQLite's message ("registry: put model llama: disk I/O error"); nothing here
// crashes on a storage error. Methods that return a plain list log a storage error and return an
// empty list.
//
// Thread safety: thread-safe. One connection behind a mutex serializes all calls.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/mutex.h"
#include "common/model_name.h"
#include "gswarm/v1/common.pb.h"
#include "host/sqlite.h"

namespace gswarm::host {

class Registry {
 public:
  // Opens (creating) the database at `path` with mode 0600 (parent directories 0700), in WAL mode
  // with synchronous=NORMAL, foreign keys on and a 5 s busy timeout, and migrates the schema to
  // LatestSchemaVersion(). Errors name the path and SQLite's message; a database written by a
  // newer gswarm is FAILED_PRECONDITION. ":memory:" opens a private in-memory database.
  static absl::StatusOr<std::unique_ptr<Registry>> Open(const std::string& path);

  // The schema version this build writes.
  static int LatestSchemaVersion();
  int schema_version() const { return schema_version_; }

  // ---- Catalog ----

  // Inserts `model`, or replaces every catalog field of the registered one except created_at,
  // which keeps its first value (now, when the first insert leaves it unset): to change one field,
  // read, modify and put back. model.replicas() is ignored (see PutReplica). INVALID_ARGUMENT
  // for a name that ValidateModelName refuses.
  absl::Status PutModel(const v1::Model& model);
  // NOT_FOUND when `name` is not registered. Replicas are filled in, sorted by node and tier.
  absl::StatusOr<v1::Model> GetModel(absl::string_view name) const;
  // Whether `name` is registered, without reading the model (false on a database error, which
  // is logged).
  bool HasModel(absl::string_view name) const;
  // Every model, sorted by name, replicas filled in.
  std::vector<v1::Model> ListModels() const;
  // Removes the model and its replicas (jobs that name it stay, as history). NOT_FOUND if absent.
  absl::Status DeleteModel(absl::string_view name);

  // ---- Replicas: where copies live, keyed by (model_name, node_id, tier) ----

  // Inserts or replaces a replica. FAILED_PRECONDITION when the model is not registered;
  // INVALID_ARGUMENT without a node id or tier. Stored per replica: its key and the copy's own
  // fields; replica.source_url and replica.metadata are not (the catalog holds them). Replicas
  // read back carry model_name.
  absl::Status PutReplica(absl::string_view model_name, const v1::Replica& replica);
  // Idempotent: deleting a replica that is not recorded is not an error, since an agent's report
  // and the API may both record one deletion.
  absl::Status DeleteReplica(absl::string_view model_name, absl::string_view node_id,
                             absl::string_view tier);

  // What a reconciliation changed; each entry is "model/tier", sorted.
  struct NodeDiff {
    std::vector<std::string> added, removed, updated;
  };
  // Reconciliation: makes `node_id`'s replicas exactly `replicas` (model name -> replica; an empty
  // name means replica.model_name(); the replica's node_id is overwritten with `node_id`),
  // leaving other nodes' replicas alone. A model not yet in the catalog is registered from its
  // entry in `models_found` when there is one (its catalog fields), with what the replica reports
  // (source_url, size, commit, metadata) filling the gaps, and type "llm" when none is given.
  // Known models' catalog entries are not changed. Entries with an invalid model name or no tier
  // are skipped with a warning. INVALID_ARGUMENT for an invalid node id.
  absl::StatusOr<NodeDiff> ReplaceNodeReplicas(
      absl::string_view node_id, const std::vector<std::pair<std::string, v1::Replica>>& replicas,
      const std::vector<v1::Model>& models_found);
  // (model name, replica) for every replica on `node_id`, sorted by model and tier.
  std::vector<std::pair<std::string, v1::Replica>> ReplicasOnNode(absl::string_view node_id) const;

  // ---- Jobs: persisted so that they survive a host restart ----

  // Inserts or updates a job. created_at keeps its first value (now, when the first insert leaves
  // it unset). `request_json` is what to re-send to resume the job (opaque text); an empty one
  // keeps the stored request, so progress updates need not repeat it. INVALID_ARGUMENT without id.
  absl::Status PutJob(const v1::Job& job, absl::string_view request_json = "");
  // NOT_FOUND when no job has `id`.
  absl::StatusOr<v1::Job> GetJob(absl::string_view id) const;
  // The job's stored request ("" when none was given); NOT_FOUND when no job has `id`.
  absl::StatusOr<std::string> GetJobRequest(absl::string_view id) const;

  // Empty strings match anything; limit 0 means no limit.
  struct JobFilter {
    std::string state;
    std::string model_name;
    std::string node_id;
    uint32_t limit = 100;
  };
  // Matching jobs, newest (created_at) first.
  std::vector<v1::Job> ListJobs(const JobFilter& filter) const;
  // Jobs a previous run left "pending" or "running", oldest first, for the orchestrator to resume
  // or fail when the host starts.
  std::vector<v1::Job> UnfinishedJobs() const;

 private:
  Registry(sqlite::Db db, int schema_version);

  // Begins a transaction whose storage errors read "registry: <what>: <SQLite's message>".
  absl::StatusOr<sqlite::Transaction> Begin(sqlite::Transaction::Kind kind, std::string what) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs a job query (a SELECT of the job columns) with `params` bound to ?1, ?2, ...
  absl::StatusOr<std::vector<v1::Job>> QueryJobs(const std::string& sql,
                                                 const std::vector<std::string>& params,
                                                 int64_t limit) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int schema_version_;
  mutable gswarm::Mutex mu_;
  // Mutable: reads prepare statements and take transactions on the connection.
  mutable sqlite::Db db_ ABSL_GUARDED_BY(mu_);
};

// Model names (common/model_name.h): always one safe path component.
using common::ValidateModelName;

}  // namespace gswarm::host
