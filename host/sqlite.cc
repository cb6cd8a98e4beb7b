#include "host/sqlite.h"

#include <sqlite3.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::host::sqlite {

absl::StatusCode CodeFor(int rc) {
  switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
      return absl::StatusCode::kOk;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::StatusCode::kUnavailable;
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return absl::StatusCode::kResourceExhausted;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::StatusCode::kDataLoss;
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return absl::StatusCode::kPermissionDenied;
    case SQLITE_CONSTRAINT:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
      return absl::StatusCode::kFailedPrecondition;
    case SQLITE_RANGE:
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG:
      return absl::StatusCode::kInvalidArgument;
    default:
      return absl::StatusCode::kInternal;
  }
}

namespace {

absl::Status MakeError(int rc, absl::string_view context, absl::string_view message) {
  std::string text = absl::StrCat(context, context.empty() ? "" : ": ", message);
  const int primary = rc & 0xff;
  if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) {
    absl::StrAppend(&text, " (move the file aside to start with an empty one)");
  }
  return absl::Status(CodeFor(rc), text);
}

}  // namespace

// ---- Db ----

absl::StatusOr<Db> Db::Open(const std::string& path, std::string error_context) {
  sqlite3* handle = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &handle,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    // SQLite allocates a handle (for its message) even when opening fails.
    absl::Status status = MakeError(
        rc, error_context, handle != nullptr ? sqlite3_errmsg(handle) : sqlite3_errstr(rc));
    sqlite3_close_v2(handle);  // the open already failed; its result adds nothing
    return status;
  }
  // Extended codes tell a full disk from a failed fsync, which the messages then name.
  if (int ext = sqlite3_extended_result_codes(handle, 1); ext != SQLITE_OK) {
    absl::Status status = MakeError(ext, error_context, sqlite3_errstr(ext));
    sqlite3_close_v2(handle);
    return status;
  }
  return Db(handle, std::move(error_context));
}

Db::Db(Db&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), error_context_(std::move(other.error_context_)) {}

Db& Db::operator=(Db&& other) noexcept {
  if (this != &other) {
    Close();
    db_ = std::exchange(other.db_, nullptr);
    error_context_ = std::move(other.error_context_);
  }
  return *this;
}

Db::~Db() { Close(); }

void Db::Close() {
  if (db_ == nullptr) return;
  // Every Statement is finalized by its destructor, so close_v2 releases everything now.
  if (int rc = sqlite3_close_v2(db_); rc != SQLITE_OK) {
    spdlog::error("sqlite: closing the database: {}", sqlite3_errstr(rc));
  }
  db_ = nullptr;
}

absl::Status Db::Error(int rc) const {
  return MakeError(rc, error_context_, db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
}

absl::Status Db::Exec(const char* sql) {
  char* message = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &message);
  if (rc == SQLITE_OK) return absl::OkStatus();
  absl::Status status =
      MakeError(rc, error_context_, message != nullptr ? message : sqlite3_errstr(rc));
  sqlite3_free(message);
  return status;
}

absl::StatusOr<Statement> Db::Prepare(absl::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = Error(rc);
    sqlite3_finalize(stmt);  // null after a failed prepare; harmless
    return status;
  }
  return Statement(this, stmt);
}

int Db::Changes() const { return sqlite3_changes(db_); }

// ---- Statement ----

Statement::Statement(Statement&& other) noexcept
    : db_(other.db_),
      stmt_(std::exchange(other.stmt_, nullptr)),
      bind_status_(std::move(other.bind_status_)),
      step_failed_(other.step_failed_) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    // finalize returns the last step's error, which Step already reported.
    sqlite3_finalize(stmt_);
    db_ = other.db_;
    stmt_ = std::exchange(other.stmt_, nullptr);
    bind_status_ = std::move(other.bind_status_);
    step_failed_ = other.step_failed_;
  }
  return *this;
}

Statement::~Statement() {
  // finalize returns the last step's error, which Step already reported.
  sqlite3_finalize(stmt_);
}

Statement& Statement::Check(int rc) {
  if (rc != SQLITE_OK && bind_status_.ok()) bind_status_ = db_->Error(rc);
  return *this;
}

Statement& Statement::BindInt64(int index, int64_t value) {
  return Check(sqlite3_bind_int64(stmt_, index, value));
}

Statement& Statement::BindDouble(int index, double value) {
  return Check(sqlite3_bind_double(stmt_, index, value));
}

Statement& Statement::BindText(int index, absl::string_view value) {
  return Check(
      sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
}

Statement& Statement::BindNull(int index) { return Check(sqlite3_bind_null(stmt_, index)); }

Statement& Statement::BindInt64OrNull(int index, std::optional<int64_t> value) {
  return value.has_value() ? BindInt64(index, *value) : BindNull(index);
}

Statement& Statement::BindTextOrNull(int index, std::optional<std::string> value) {
  return value.has_value() ? BindText(index, *value) : BindNull(index);
}

absl::StatusOr<bool> Statement::Step() {
  if (!bind_status_.ok()) return bind_status_;
  const int rc = sqlite3_step(stmt_);
  step_failed_ = rc != SQLITE_ROW && rc != SQLITE_DONE;
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return db_->Error(rc);
}

absl::Status Statement::Run() {
  while (true) {
    ASSIGN_OR_RETURN(bool row, Step());
    if (!row) return absl::OkStatus();
  }
}

absl::Status Statement::Reset() {
  bind_status_ = absl::OkStatus();
  // reset repeats the last step's error, which Step already returned.
  const bool step_failed = std::exchange(step_failed_, false);
  if (int rc = sqlite3_reset(stmt_); rc != SQLITE_OK && !step_failed) return db_->Error(rc);
  if (int rc = sqlite3_clear_bindings(stmt_); rc != SQLITE_OK) return db_->Error(rc);
  return absl::OkStatus();
}

bool Statement::IsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

int64_t Statement::Int64(int column) const { return sqlite3_column_int64(stmt_, column); }

double Statement::Double(int column) const { return sqlite3_column_double(stmt_, column); }

std::string Statement::Text(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  if (text == nullptr) return "";
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

// ---- Transaction ----

absl::StatusOr<Transaction> Transaction::Begin(Db& db, Kind kind) {
  RETURN_IF_ERROR(db.Exec(kind == Kind::kWrite ? "BEGIN IMMEDIATE" : "BEGIN"));
  return Transaction(&db);
}

Transaction::Transaction(Transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}

Transaction::~Transaction() {
  if (db_ == nullptr) return;
  if (absl::Status status = db_->Exec("ROLLBACK"); !status.ok()) {
    // SQLite may already have rolled back on its own (e.g. after SQLITE_FULL); nothing is lost.
    spdlog::warn("{} (rolling back)", status.message());
  }
}

absl::Status Transaction::Commit() {
  absl::Status status = db_->Exec("COMMIT");
  // A failed COMMIT (e.g. BUSY) leaves the transaction open: the destructor rolls it back.
  if (status.ok()) db_ = nullptr;
  return status;
}

}  // namespace gswarm::host::sqlite
