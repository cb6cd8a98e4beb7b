#pragma once

// Where GSwarm keeps its files. Every path helper honours $HOME so that tests can run each
// process in its own temporary home.

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace gswarm::common {

// $HOME, or the passwd entry's home when HOME is unset.
std::string HomeDir();

// "~" and "~/x" become HomeDir() and HomeDir()/x; anything else is returned unchanged.
std::string ExpandUser(std::string_view path);

// ~/.cache/gswarm: the host database, the generated token, instance logs.
std::string StateDir();

// ~/.gswarm.conf
std::string DefaultConfigPath();

// Creates `path` and its parents (like mkdir -p) with `mode` for the directories it creates.
absl::Status MakeDirs(const std::string& path, unsigned mode = 0755);

// Writes `contents` to `path` atomically: a temporary file in the same directory is written,
// fsync'd, given `mode`, renamed over `path`, and the directory is fsync'd. Readers see the old
// file or the new one, never a part.
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents,
                                 unsigned mode = 0644);

// The whole file, or NOT_FOUND / a status naming the path and errno.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// This machine's host name.
std::string Hostname();

// Removes the folder `dir` so that nothing ever sees it half-deleted: it is renamed into
// `hidden_dir` (on the same filesystem, a folder tier scans skip) as <name>.removing.<random>
// first, then deleted. OK when `dir` does not exist.
absl::Status RemoveOutOfSight(const std::string& dir, const std::string& hidden_dir);

// Deletes what RemoveOutOfSight left in `hidden_dir` when the process died mid-way.
void RemoveLeftoverTrash(const std::string& hidden_dir);

// The folder a model's files may resolve into, resolved (realpath): the model folder itself or,
// for a snapshot in a Hugging Face cache (.../models--org--name/snapshots/<commit>), the repo's
// folder, whose blobs/ the snapshot's files link to. "" when the folder does not exist.
std::string ModelFilesRoot(const std::string& model_dir);

// Whether `path` (symlinks followed; "/proc/self/fd/N" for an open file) resolves to a place
// beneath `root`, a resolved folder as ModelFilesRoot gives. A link planted in a model's folder
// that leads out of it does not.
bool ResolvesBeneath(const std::string& path, const std::string& root);

}  // namespace gswarm::common
