#pragma once

// A thin RAII layer over SQLite's C API: a connection, prepared statements and transactions,
// with every return code turned into an absl::Status.
//
// Errors carry the connection's error context (set by the caller before each operation, e.g.
// "registry: put model llama") followed by SQLite's message: "registry: put model llama: disk I/O
// error". SQL text is always constant; values travel only as bound parameters.
//
// Thread safety: not thread-safe. A Db and its statements must be used by one thread at a time;
// the owner serializes access (Registry holds a mutex).

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct sqlite3;
struct sqlite3_stmt;

namespace gswarm::host::sqlite {

class Db;

// A prepared statement. Bind errors are remembered and returned by the next Step or Run, so a
// chain of binds needs a single check. Parameters are 1-based and columns 0-based, as in SQLite.
class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  Statement& BindInt64(int index, int64_t value);
  Statement& BindDouble(int index, double value);
  Statement& BindText(int index, absl::string_view value);
  Statement& BindNull(int index);
  // NULL when `value` is empty.
  Statement& BindInt64OrNull(int index, std::optional<int64_t> value);
  Statement& BindTextOrNull(int index, std::optional<std::string> value);

  // Runs to the next row: true when a row is available, false when the statement is done.
  absl::StatusOr<bool> Step();
  // Runs to completion, discarding any rows.
  absl::Status Run();
  // Makes the statement ready to run again with new bindings.
  absl::Status Reset();

  // Column accessors for the current row. A NULL reads as 0 or "".
  bool IsNull(int column) const;
  int64_t Int64(int column) const;
  double Double(int column) const;
  std::string Text(int column) const;

 private:
  friend class Db;
  Statement(Db* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Statement& Check(int rc);

  Db* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  absl::Status bind_status_;
  bool step_failed_ = false;  // the last Step returned an error
};

// An open connection, closed on destruction.
class Db {
 public:
  // Opens (creating) the database at `path`; `error_context` prefixes errors until changed.
  static absl::StatusOr<Db> Open(const std::string& path, std::string error_context);

  Db() = default;
  Db(Db&& other) noexcept;
  Db& operator=(Db&& other) noexcept;
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;
  ~Db();

  // Runs SQL without parameters: pragmas, schema scripts (several statements), BEGIN/COMMIT.
  absl::Status Exec(const char* sql);
  absl::StatusOr<Statement> Prepare(absl::string_view sql);
  // Rows changed by the last INSERT, UPDATE or DELETE.
  int Changes() const;

  void set_error_context(std::string context) { error_context_ = std::move(context); }
  const std::string& error_context() const { return error_context_; }

  // The status for SQLite result code `rc`, with the connection's latest message.
  absl::Status Error(int rc) const;

 private:
  explicit Db(sqlite3* db, std::string error_context)
      : db_(db), error_context_(std::move(error_context)) {}
  void Close();

  sqlite3* db_ = nullptr;
  std::string error_context_;
};

// A transaction that rolls back on destruction unless committed.
class Transaction {
 public:
  enum class Kind {
    kRead,   // BEGIN: takes the read lock at the first read
    kWrite,  // BEGIN IMMEDIATE: takes the write lock at once, so it never fails half-way on BUSY
  };
  static absl::StatusOr<Transaction> Begin(Db& db, Kind kind);

  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  absl::Status Commit();

 private:
  explicit Transaction(Db* db) : db_(db) {}
  Db* db_;  // null once committed or rolled back
};

// The absl status code that best describes SQLite result code `rc`.
absl::StatusCode CodeFor(int rc);

}  // namespace gswarm::host::sqlite
