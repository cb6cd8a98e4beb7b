#pragma once

// Conversions at the transport edge: absl::Status <-> grpc::Status <-> HTTP.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/config.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
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

// TLS (host.tls). The host serves TLS when cert_file is set. Agents and the CLI use TLS when the
// host's certificate is configured locally or client.host_url is https://, trusting ca_file, else
// the host's own cert_file (a self-signed host on this machine), else the system's roots.
bool ClientUsesTls(const Config& config);
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> HostCredentials(const HostConfig& host);
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(const Config& config);

// {"error": {"code": <http status>, "status": "NOT_FOUND", "message": "..."}}
std::string ErrorJson(const absl::Status& status);

}  // namespace gswarm::common
