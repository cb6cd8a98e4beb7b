#include "client/sha256.h"

// The low-level SHA256_CTX interface is deprecated in OpenSSL 3 in favour of EVP, whose context
// is opaque: only SHA256_CTX's state can be saved beside a partial download and restored. It runs
// the same block function (SHA-NI where the CPU has it) as EVP.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <fcntl.h>
#include <openssl/opensslv.h>
#include <openssl/sha.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t's layout, to save and restore it
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/fd.h"

namespace gswarm::client {
namespace {

constexpr char kHex[] = "0123456789abcdef";

std::string Hex(const unsigned char* bytes, size_t len) {
  std::string out;
  out.reserve(len * 2);
  for (size_t i = 0; i < len; ++i) {
    out.push_back(kHex[bytes[i] >> 4]);
    out.push_back(kHex[bytes[i] & 0xf]);
  }
  return out;
}

// A saved state: a tag naming the library and version it came from, then the raw struct.
template <typename T>
std::string Save(std::string_view tag, const T& state) {
  std::string out(tag);
  out.append(reinterpret_cast<const char*>(&state), sizeof(T));
  return out;
}

template <typename T>
bool Restore(std::string_view tag, std::string_view saved, T* state) {
  if (saved.size() != tag.size() + sizeof(T) || saved.substr(0, tag.size()) != tag) return false;
  std::memcpy(static_cast<void*>(state), saved.data() + tag.size(), sizeof(T));
  return true;
}

const std::string& Sha256Tag() {
  static const std::string* const tag =
      new std::string(absl::StrCat("sha256/openssl-", OPENSSL_VERSION_NUMBER, "/"));
  return *tag;
}

const std::string& Xxh3Tag() {
  static const std::string* const tag =
      new std::string(absl::StrCat("xxh3-128/xxhash-", XXH_versionNumber(), "/"));
  return *tag;
}

}  // namespace

Sha256::Sha256() : ctx_(std::make_unique<SHA256_CTX>()) { Reset(); }

Sha256::~Sha256() = default;

void Sha256::Reset() {
  if (SHA256_Init(ctx_.get()) != 1) std::abort();
}

void Sha256::Update(const void* data, size_t size) {
  if (size > 0 && SHA256_Update(ctx_.get(), data, size) != 1) std::abort();
}

std::string Sha256::HexDigest() {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  if (SHA256_Final(digest, ctx_.get()) != 1) std::abort();
  return Hex(digest, sizeof(digest));
}

std::string Sha256::SaveState() const { return Save(Sha256Tag(), *ctx_); }

bool Sha256::RestoreState(std::string_view state) {
  if (Restore(Sha256Tag(), state, ctx_.get())) return true;
  Reset();
  return false;
}

Xxh3::Xxh3() : state_(XXH3_createState()) {
  // Allocation failure of a few hundred bytes is not something to recover from.
  if (state_ == nullptr) std::abort();
  Reset();
}

Xxh3::~Xxh3() { XXH3_freeState(state_); }

void Xxh3::Reset() {
  if (XXH3_128bits_reset(state_) != XXH_OK) std::abort();
}

void Xxh3::Update(const void* data, size_t size) {
  if (size > 0 && XXH3_128bits_update(state_, data, size) != XXH_OK) std::abort();
}

std::string Xxh3::HexDigest() const {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state_));
  return Hex(canonical.digest, sizeof(canonical.digest));
}

// The state points at the library's default secret (static data, at another address in another
// process): saved as null, and pointed at this process's copy on restore.
const unsigned char* DefaultXxh3Secret() {
  static const unsigned char* const secret = [] {
    XXH3_state_t* fresh = XXH3_createState();
    if (fresh == nullptr || XXH3_128bits_reset(fresh) != XXH_OK) std::abort();
    const unsigned char* s = fresh->extSecret;
    XXH3_freeState(fresh);
    return s;
  }();
  return secret;
}

std::string Xxh3::SaveState() const {
  XXH3_state_t copy;
  std::memcpy(static_cast<void*>(&copy), state_, sizeof(copy));
  if (copy.extSecret == DefaultXxh3Secret()) copy.extSecret = nullptr;
  return Save(Xxh3Tag(), copy);
}

bool Xxh3::RestoreState(std::string_view state) {
  // Only the default secret is used here: anything else would point into another process.
  if (Restore(Xxh3Tag(), state, state_) && state_->extSecret == nullptr) {
    state_->extSecret = DefaultXxh3Secret();
    return true;
  }
  Reset();
  return false;
}

bool IsXxh3Digest(std::string_view digest) {
  return digest.size() == 32 && std::all_of(digest.begin(), digest.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

absl::StatusOr<uint64_t> HashFileRange(const std::string& path, Sha256* sha256, Xxh3* xxh3,
                                       uint64_t from, uint64_t limit) {
  common::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<char> buf(1 << 20);
  uint64_t total = 0;
  while (from + total < limit) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), limit - from - total));
    const ssize_t n = ::pread(fd.get(), buf.data(), want, static_cast<off_t>(from + total));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", path));
    }
    if (n == 0) break;
    if (sha256 != nullptr) sha256->Update(buf.data(), static_cast<size_t>(n));
    if (xxh3 != nullptr) xxh3->Update(buf.data(), static_cast<size_t>(n));
    total += static_cast<uint64_t>(n);
  }
  return total;
}

absl::StatusOr<std::string> Sha256OfFile(const std::string& path) {
  Sha256 hasher;
  absl::StatusOr<uint64_t> n = HashFileRange(path, &hasher, nullptr);
  if (!n.ok()) return n.status();
  return hasher.HexDigest();
}

absl::StatusOr<std::string> Xxh3OfFile(const std::string& path) {
  Xxh3 hasher;
  absl::StatusOr<uint64_t> n = HashFileRange(path, nullptr, &hasher);
  if (!n.ok()) return n.status();
  return hasher.HexDigest();
}

}  // namespace gswarm::client
