#pragma once

// Registry internals: the schema, and how models, replicas and jobs map to rows of its tables.
// Times are stored as unix nanoseconds, NULL when unset; messages kept as JSON use protobuf's JSON
// mapping, NULL when unset.
//
// Every function runs inside the caller's transaction; errors carry the connection's error
// context. Thread safety: as sqlite::Db (the caller serializes).

#include <optional>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "gswarm/v1/common.pb.h"
#include "host/sqlite.h"

namespace gswarm::host::rows {

// The schema's migrations: entry i upgrades version i to version i + 1 (one SQL script, run in one
// transaction). Released scripts never change; a new schema version appends one.
absl::Span<const char* const> Migrations();

// Column lists, in the order the Read* functions expect them.
extern const char kModelColumns[];
extern const char kReplicaColumns[];
extern const char kJobColumns[];

// A row selected with kModelColumns. DATA_LOSS when its stored JSON does not parse.
absl::StatusOr<v1::Model> ReadModel(const sqlite::Statement& s);
// Inserts or updates `m`'s catalog fields; created_at keeps its first value (now when unset).
absl::Status UpsertModel(sqlite::Db& db, const v1::Model& m);
absl::StatusOr<bool> ModelExists(sqlite::Db& db, absl::string_view name);

// A row selected with kReplicaColumns.
v1::Replica ReadReplica(const sqlite::Statement& s);
// Inserts or replaces the replica keyed (model_name, r.node_id, r.tier). r.model_name,
// r.source_url and r.metadata are not stored: the catalog holds a model's source and metadata.
absl::Status UpsertReplica(sqlite::Db& db, absl::string_view model_name, const v1::Replica& r);
// Calls `fn(model_name, replica)` for each replica row selected by `where`, a constant clause
// ("WHERE node_id = ?1 ORDER BY ...") with ?1 bound to `param` when there is one.
absl::Status SelectReplicas(sqlite::Db& db, absl::string_view where,
                            std::optional<absl::string_view> param,
                            absl::FunctionRef<void(std::string, v1::Replica)> fn);

// A row selected with kJobColumns. DATA_LOSS when its stored JSON does not parse.
absl::StatusOr<v1::Job> ReadJob(const sqlite::Statement& s);
// Inserts or updates a job; created_at keeps its first value (now when unset) and an empty
// `request_json` keeps the stored request.
absl::Status UpsertJob(sqlite::Db& db, const v1::Job& job, absl::string_view request_json);

}  // namespace gswarm::host::rows
