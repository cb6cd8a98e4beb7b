#include "cli/cli.h"

int main(int argc, char** argv) { return gswarm::cli::RunCli(argc, argv); }
