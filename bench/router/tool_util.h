// Small pieces shared by the router benchmark's tools (sse_engine, stream_load): flags, the
// descriptor limit, JSON string escaping. Header-only; not thread-safe (used from main).
#pragma once

#include <sys/resource.h>

#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

namespace gswarm::bench {

// The characters of `s` as a JSON string body: quotes and backslashes escaped, control
// characters dropped (names and messages here are ASCII).
inline std::string JsonEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out;
}

// Raises RLIMIT_NOFILE's soft limit to the hard limit (every connection is a descriptor and the
// soft limit is often 1024); returns the soft limit now in force.
inline rlim_t RaiseNofileLimit() {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

// "--name value" and "--name=value" flags into variables that hold their defaults; numbers must
// be at least `min`. Parse prints what is wrong to stderr and returns false.
class Flags {
 public:
  explicit Flags(std::string program) : program_(std::move(program)) {}
  void Add(const std::string& name, std::string* out) { flags_[name] = {out, 0}; }
  void Add(const std::string& name, int* out, double min) { flags_[name] = {out, min}; }
  void Add(const std::string& name, long* out, double min) { flags_[name] = {out, min}; }
  void Add(const std::string& name, double* out, double min) { flags_[name] = {out, min}; }

  bool Parse(int argc, char** argv) const {
    for (int i = 1; i < argc; ++i) {
      std::string name = argv[i], value;
      if (size_t eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name.resize(eq);
      } else if (i + 1 < argc) {
        value = argv[++i];
      }
      auto it = flags_.find(name);
      if (it == flags_.end()) return Error("unknown flag " + name);
      if (auto* s = std::get_if<std::string*>(&it->second.out)) {
        **s = value;
        continue;
      }
      char* end = nullptr;
      const double v = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || v < it->second.min || v > 1e12) {
        return Error("bad value for " + name + ": '" + value + "'");
      }
      std::visit(
          [v](auto* p) {
            if constexpr (!std::is_same_v<decltype(p), std::string*>) {
              *p = static_cast<std::remove_pointer_t<decltype(p)>>(v);
            }
          },
          it->second.out);
    }
    return true;
  }

 private:
  struct Flag {
    std::variant<std::string*, int*, long*, double*> out;
    double min;
  };
  bool Error(const std::string& what) const {
    std::cerr << program_ << ": " << what << "\n";
    return false;
  }

  std::string program_;
  std::map<std::string, Flag> flags_;
};

}  // namespace gswarm::bench
