#pragma once

// Where a model comes from: the source URLs GSwarm accepts, parsed in one place for the host
// (validation, peer lookups), the agents (downloads) and the CLI.
// Thread safety: pure functions.

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gswarm::common {

struct SourceSpec {
  enum Kind { kHub, kHttps, kLocalDir };
  Kind kind = kHub;
  std::string repo;      // kHub: "org/name"
  std::string revision;  // kHub: branch, tag, ref or commit ("main" unless given)
  std::string url;       // kHttps: the URL as given
  // kHttps: the file's name, the last segment of the URL's path (decoded).
  // kLocalDir: the absolute directory, without a trailing slash.
  std::string path;
};

// Parses a model source:
//   hf://org/name[@revision]  (`revision_override`, when not empty, replaces @revision)
//   https://host/.../file     (one file; http:// is accepted too)
//   file:///abs/dir           (a directory on the node that imports it, copied; whether it
//                             exists is the importer's to check)
// Anything else is INVALID_ARGUMENT with a sentence saying what is accepted.
absl::StatusOr<SourceSpec> ParseSource(absl::string_view source_url,
                                       absl::string_view revision_override = "");

// OK when `path` is a relative path that stays inside the directory it is joined to: no empty,
// "." or ".." components, no leading '/', no NUL or control characters, no backslashes.
absl::Status CheckRelativePath(absl::string_view path);

// Whether `revision` names a commit (40 hex digits) rather than a branch or tag.
bool IsCommitHash(absl::string_view revision);

}  // namespace gswarm::common
