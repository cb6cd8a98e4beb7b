#include "common/grpc_util.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/paths.h"
#include "common/proto_json.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace gswarm::common {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kFailedPrecondition:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

absl::Status CheckGrpcAuthorization(absl::string_view expected,
                                    const grpc::ServerContextBase& context) {
  if (expected.empty()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return CheckAuthorization(expected, std::nullopt);
  return CheckAuthorization(expected, absl::string_view(it->second.data(), it->second.size()));
}

bool ClientUsesTls(const Config& config) {
  return absl::StartsWith(config.client.host_url, "https://") || !config.host.tls.cert_file.empty();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> HostCredentials(const HostConfig& host) {
  const TlsConfig& tls = host.tls;
  if (tls.cert_file.empty()) {
    if (!tls.key_file.empty()) {
      return absl::InvalidArgumentError("host.tls.key_file is set but host.tls.cert_file is not");
    }
    return grpc::InsecureServerCredentials();
  }
  if (tls.key_file.empty()) {
    return absl::InvalidArgumentError("host.tls.cert_file is set but host.tls.key_file is not");
  }
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadFile(ExpandUser(tls.cert_file)));
  ASSIGN_OR_RETURN(pair.private_key, ReadFile(ExpandUser(tls.key_file)));
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back(std::move(pair));
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(const Config& config) {
  if (!ClientUsesTls(config)) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  const TlsConfig& tls = config.host.tls;
  const std::string& roots = !tls.ca_file.empty() ? tls.ca_file : tls.cert_file;
  if (!roots.empty()) {
    absl::StatusOr<std::string> pem = ReadFile(ExpandUser(roots));
    if (!pem.ok()) return Annotate(pem.status(), "TLS trust roots");
    options.pem_root_certs = *std::move(pem);
  }
  return grpc::SslCredentials(options);
}

std::string ErrorJson(const absl::Status& status) {
  nlohmann::json body = {{"error",
                          {{"code", HttpStatusFor(status.code())},
                           {"status", absl::StatusCodeToString(status.code())},
                           {"message", std::string(status.message())}}}};
  return DumpJson(body);
}

}  // namespace gswarm::common
