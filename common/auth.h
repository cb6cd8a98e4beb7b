#pragma once

// Bearer-token authentication shared by the host (checking), the agent and the CLI (presenting).

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gswarm::common {

// ~/.cache/gswarm/token: where a host that listens beyond loopback keeps the token it generated.
std::string TokenFilePath();

// 32 random bytes from OpenSSL, hex-encoded.
std::string GenerateToken();

// The token stored at `path` (surrounding whitespace removed); NOT_FOUND when there is none.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// The token at `path`, creating it (mode 0600, atomically) when missing. `created` tells which.
absl::StatusOr<std::string> LoadOrCreateTokenFile(const std::string& path, bool* created);

// True for addresses only this machine can reach: localhost, 127.0.0.0/8, ::1.
bool IsLoopbackAddress(absl::string_view host);

// The token in an `authorization` value "Bearer <token>" (scheme case-insensitive); nullopt when
// the value is not of that form.
std::optional<absl::string_view> BearerToken(absl::string_view authorization);

// Checks a presented `authorization` value against `expected`. OK when `expected` is empty
// (auth off). Otherwise UNAUTHENTICATED with a sentence saying whether the token was missing or
// wrong and how to pass one. The comparison takes constant time in the token's length.
absl::Status CheckAuthorization(absl::string_view expected,
                                std::optional<absl::string_view> authorization);

// The token a local client (CLI, agent) presents when none is configured: the host's generated
// token file in this HOME, if any; "" otherwise.
std::string LocalTokenFallback();

}  // namespace gswarm::common
