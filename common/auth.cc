#include "common/auth.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/paths.h"
#include "common/status.h"

namespace gswarm::common {

std::string TokenFilePath() { return StateDir() + "/token"; }

std::string GenerateToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    // OpenSSL's CSPRNG failing means the system has no entropy source; nothing safe to fall
    // back to, and a predictable token would be worse than none.
    std::abort();
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string contents, ReadFile(path));
  std::string token(absl::StripAsciiWhitespace(contents));
  if (token.empty()) return absl::NotFoundError(absl::StrCat("token file ", path, " is empty"));
  return token;
}

absl::StatusOr<std::string> LoadOrCreateTokenFile(const std::string& path, bool* created) {
  *created = false;
  absl::StatusOr<std::string> existing = ReadTokenFile(path);
  if (existing.ok() || !absl::IsNotFound(existing.status())) return existing;
  std::string token = GenerateToken();
  auto slash = path.rfind('/');
  if (slash != std::string::npos) RETURN_IF_ERROR(MakeDirs(path.substr(0, slash), 0700));
  RETURN_IF_ERROR(WriteFileAtomically(path, token + "\n", 0600));
  *created = true;
  return token;
}

bool IsLoopbackAddress(absl::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

std::optional<absl::string_view> BearerToken(absl::string_view authorization) {
  constexpr absl::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()), kScheme)) {
    return std::nullopt;
  }
  absl::string_view token = absl::StripAsciiWhitespace(authorization.substr(kScheme.size()));
  if (token.empty()) return std::nullopt;
  return token;
}

absl::Status CheckAuthorization(absl::string_view expected,
                                std::optional<absl::string_view> authorization) {
  if (expected.empty()) return absl::OkStatus();
  constexpr absl::string_view kHow =
      "pass --token, set GSWARM_TOKEN, or send the header 'authorization: Bearer <token>' "
      "(the host's token is host.auth_token or ~/.cache/gswarm/token on the host)";
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError(
        absl::StrCat("missing token: this host requires one; ", kHow));
  }
  std::optional<absl::string_view> token = BearerToken(*authorization);
  if (!token.has_value()) {
    return absl::UnauthenticatedError(
        absl::StrCat("malformed authorization header: expected 'Bearer <token>'; ", kHow));
  }
  if (token->size() != expected.size() ||
      CRYPTO_memcmp(token->data(), expected.data(), expected.size()) != 0) {
    return absl::UnauthenticatedError(absl::StrCat("wrong token: the host rejected it; ", kHow));
  }
  return absl::OkStatus();
}

std::string LocalTokenFallback() {
  absl::StatusOr<std::string> token = ReadTokenFile(TokenFilePath());
  return token.ok() ? *token : std::string();
}

}  // namespace gswarm::common
