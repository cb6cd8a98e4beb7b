#pragma once

namespace gswarm::cli {

// The `gswarm` command: parses flags, loads config and runs one subcommand. Returns the exit
// code: 0 on success, 1 on a failure (one line on stderr says what to do), CLI11's codes for
// usage errors.
int RunCli(int argc, char** argv);

}  // namespace gswarm::cli
