#pragma once

// Conversions at the transport edge: absl::Status <-> grpc::Status <-> HTTP.

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"

namespace gswarm::common {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// The HTTP status REST answers with for a status code (NOT_FOUND -> 404, ...).
int HttpStatusFor(absl::StatusCode code);

// Checks the call's `authorization` metadata against `expected` (see CheckAuthorization).
absl::Status CheckGrpcAuthorization(absl::string_view expected,
                                    const grpc::ServerContextBase& context);

// {"error": {"code": <http status>, "status": "NOT_FOUND", "message": "..."}}
std::string ErrorJson(const absl::Status& status);

}  // namespace gswarm::common
