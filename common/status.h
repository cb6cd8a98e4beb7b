#pragma once

// Status helpers used everywhere: RETURN_IF_ERROR and ASSIGN_OR_RETURN, defined once.

#include <exception>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define GSWARM_CONCAT_INNER_(a, b) a##b
#define GSWARM_CONCAT_(a, b) GSWARM_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)               \
  do {                                      \
    ::absl::Status gswarm_status_ = (expr); \
    if (!gswarm_status_.ok()) {             \
      return gswarm_status_;                \
    }                                       \
  } while (false)

#define GSWARM_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                  \
  if (!tmp.ok()) {                                     \
    return std::move(tmp).status();                    \
  }                                                    \
  lhs = *std::move(tmp)

// ASSIGN_OR_RETURN(auto x, MakeX()); declares/assigns x, or returns MakeX()'s error.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  GSWARM_ASSIGN_OR_RETURN_IMPL_(GSWARM_CONCAT_(gswarm_statusor_, __LINE__), lhs, rexpr)

namespace gswarm::common {

// Prefixes a status message with context, keeping the code: "config /x: <message>".
inline absl::Status Annotate(const absl::Status& status, std::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), std::string(context) + ": " + std::string(status.message()));
}

// What an exception caught as std::exception_ptr says ("unknown error" for a non-std one), for
// servers whose handlers must turn any throw into an error answer.
inline std::string ExceptionMessage(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
  }
  return "unknown error";
}

}  // namespace gswarm::common

// Debian's abseil has its own string_view type (not std::string_view), which fmt does not know:
// teach fmt (and so spdlog) to print it, e.g. a Status message.
#include "absl/strings/string_view.h"
#include "spdlog/fmt/fmt.h"
#if !defined(ABSL_USES_STD_STRING_VIEW) || !ABSL_USES_STD_STRING_VIEW
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <typename FormatContext>
  auto format(absl::string_view s, FormatContext& ctx) const {
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(s.data(), s.size()), ctx);
  }
};
#endif
