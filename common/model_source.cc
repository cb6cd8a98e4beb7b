#include "common/model_source.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace gswarm::common {
namespace {

constexpr char kSchemeHelp[] = "use hf://org/repo[@revision], https://... or file:///abs/dir";

// One part of a repo id: [A-Za-z0-9][A-Za-z0-9._-]{0,95}, without "..".
bool IsRepoPart(absl::string_view part) {
  if (part.empty() || part.size() > 96 || !absl::ascii_isalnum(part[0])) return false;
  for (char c : part) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return !absl::StrContains(part, "..");
}

bool IsRevision(absl::string_view rev) {
  if (rev.empty() || rev.size() > 256 || rev.front() == '/' || rev.back() == '/') return false;
  for (char c : rev) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-' && c != '/') return false;
  }
  return !absl::StrContains(rev, "..") && !absl::StrContains(rev, "//");
}

std::string PercentDecode(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && absl::ascii_isxdigit(s[i + 1]) &&
        absl::ascii_isxdigit(s[i + 2])) {
      auto hex = [](char c) { return absl::ascii_isdigit(c) ? c - '0' : (c | 0x20) - 'a' + 10; };
      out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

absl::StatusOr<SourceSpec> ParseHub(absl::string_view source_url, absl::string_view rest,
                                    absl::string_view revision_override) {
  SourceSpec spec;
  spec.kind = SourceSpec::kHub;
  size_t at = rest.find('@');
  absl::string_view repo = rest.substr(0, at);
  absl::string_view rev = at == absl::string_view::npos ? "" : rest.substr(at + 1);
  std::vector<absl::string_view> parts = absl::StrSplit(repo, '/');
  if (parts.size() != 2 || !IsRepoPart(parts[0]) || !IsRepoPart(parts[1])) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid Hugging Face repo \"", repo, "\" in \"", source_url,
        "\": use hf://org/name[@revision], where org and name are letters, digits, '.', '_' "
        "or '-'"));
  }
  if (at != absl::string_view::npos && rev.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("empty revision after '@' in \"", source_url, "\": use hf://", repo,
                     "@<branch, tag or commit>, or leave out '@' for main"));
  }
  if (!revision_override.empty()) rev = revision_override;
  if (rev.empty()) rev = "main";
  if (!IsRevision(rev)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid revision \"", rev, "\" for ", repo,
                     ": a branch, tag or commit of letters, digits, '.', '_', '-' and '/'"));
  }
  spec.repo = std::string(repo);
  spec.revision = std::string(rev);
  return spec;
}

absl::StatusOr<SourceSpec> ParseHttps(absl::string_view source_url, absl::string_view rest) {
  SourceSpec spec;
  spec.kind = SourceSpec::kHttps;
  spec.url = std::string(source_url);
  absl::string_view before_query = rest.substr(0, rest.find_first_of("?#"));
  size_t slash = before_query.find('/');
  absl::string_view host = before_query.substr(0, slash);
  absl::string_view path = slash == absl::string_view::npos ? "" : before_query.substr(slash);
  std::string name = PercentDecode(path.substr(path.rfind('/') + 1));
  if (host.empty() || path.empty() || !CheckRelativePath(name).ok() ||
      absl::StrContains(name, '/')) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot tell the file name from \"", source_url,
                     "\": an https:// source is one file, and its URL path must end with the "
                     "file's name"));
  }
  spec.path = std::move(name);
  return spec;
}

absl::StatusOr<SourceSpec> ParseLocal(absl::string_view source_url, absl::string_view rest) {
  SourceSpec spec;
  spec.kind = SourceSpec::kLocalDir;
  std::string dir(rest);
  if (dir.empty() || dir[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", source_url, "\" is not an absolute directory: use file:///abs/dir (three slashes)"));
  }
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  spec.path = std::move(dir);
  return spec;
}

}  // namespace

absl::StatusOr<SourceSpec> ParseSource(absl::string_view source_url,
                                       absl::string_view revision_override) {
  size_t sep = source_url.find("://");
  std::string scheme =
      sep == absl::string_view::npos ? "" : absl::AsciiStrToLower(source_url.substr(0, sep));
  absl::string_view rest = sep == absl::string_view::npos ? "" : source_url.substr(sep + 3);
  if (scheme == "hf") return ParseHub(source_url, rest, revision_override);
  if (scheme == "https" || scheme == "http") return ParseHttps(source_url, rest);
  if (scheme == "file") return ParseLocal(source_url, rest);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown source scheme in \"", source_url, "\": ", kSchemeHelp));
}

absl::Status CheckRelativePath(absl::string_view path) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("unsafe file path \"", path, "\": ", why));
  };
  if (path.empty()) return bad("empty");
  if (path.size() > 4096) return bad("too long");
  if (path.front() == '/') return bad("absolute");
  for (char c : path) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '\\') {
      return bad("control character or backslash");
    }
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") return bad("empty, '.' or '..' component");
  }
  return absl::OkStatus();
}

bool IsCommitHash(absl::string_view revision) {
  if (revision.size() != 40) return false;
  for (char c : revision) {
    if (!absl::ascii_isxdigit(c)) return false;
  }
  return true;
}

}  // namespace gswarm::common
