#include "bench/proc_stats.h"

#include <sys/resource.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace gswarm::bench {

absl::StatusOr<uint64_t> ReadCpuTicks(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (!std::getline(in, line)) {
    return absl::NotFoundError(absl::StrCat("/proc/", pid, "/stat: not readable (host exited?)"));
  }
  // The command name may hold spaces and parentheses; fields are counted after its last ')'.
  size_t close = line.rfind(')');
  if (close == std::string::npos) {
    return absl::DataLossError(absl::StrCat("/proc/", pid, "/stat: no ')' in \"", line, "\""));
  }
  std::istringstream fields(line.substr(close + 1));
  std::string field;
  uint64_t utime = 0, stime = 0;
  // After ')' the first field is #3 (state); utime is #14 and stime #15.
  for (int index = 3; index <= 15 && fields >> field; ++index) {
    if ((index == 14 && !absl::SimpleAtoi(field, &utime)) ||
        (index == 15 && !absl::SimpleAtoi(field, &stime))) {
      return absl::DataLossError(
          absl::StrCat("/proc/", pid, "/stat: field ", index, " is \"", field, "\", not a number"));
    }
  }
  return utime + stime;
}

absl::StatusOr<uint64_t> ReadRssKib(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    uint64_t kib = 0;
    if (line.rfind("VmRSS:", 0) == 0 && std::istringstream(line.substr(6)) >> kib) return kib;
  }
  return absl::NotFoundError(absl::StrCat("/proc/", pid, "/status: no VmRSS (host exited?)"));
}

double SelfCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

}  // namespace gswarm::bench
