#include "host/request_body.h"

#include <cctype>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/proto_json.h"

namespace gswarm::host {
namespace {

using json = nlohmann::json;

constexpr int kMaxDepth = 512;

// A cursor over the body that checks JSON's grammar while skipping values.
class Scanner {
 public:
  explicit Scanner(std::string_view text) : text_(text) {}

  size_t pos() const { return pos_; }
  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }

  void SkipSpace() {
    while (!at_end()) {
      const char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
      ++pos_;
    }
  }

  bool Consume(char c) {
    if (peek() != c) return false;
    ++pos_;
    return true;
  }

  // A string starting at the quote; `has_escape` tells whether it needs decoding.
  absl::Status SkipString(bool* has_escape) {
    *has_escape = false;
    if (!Consume('"')) return Error("expected a string");
    while (!at_end()) {
      const unsigned char c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return absl::OkStatus();
      }
      if (c < 0x20) return Error("control character in a string");
      if (c == '\\') {
        *has_escape = true;
        ++pos_;
        const char e = peek();
        if (e == 'u') {
          for (int i = 1; i <= 4; ++i) {
            if (pos_ + i >= text_.size() ||
                !std::isxdigit(static_cast<unsigned char>(text_[pos_ + i]))) {
              return Error("bad \\u escape");
            }
          }
          pos_ += 5;
          continue;
        }
        if (e == '\0' || std::strchr("\"\\/bfnrt", e) == nullptr) return Error("bad escape");
      }
      ++pos_;
    }
    return Error("unterminated string");
  }

  absl::Status SkipNumber() {
    Consume('-');
    if (Consume('0')) {
      // no leading zeros
    } else if (!SkipDigits()) {
      return Error("expected a value");
    }
    if (Consume('.') && !SkipDigits()) return Error("expected digits after '.'");
    if (Consume('e') || Consume('E')) {
      if (!Consume('+')) Consume('-');
      if (!SkipDigits()) return Error("expected digits in the exponent");
    }
    return absl::OkStatus();
  }

  absl::Status SkipValue(int depth) {
    if (depth > kMaxDepth) return Error("nested deeper than 512");
    const char c = peek();
    if (c == '"') {
      bool escaped = false;
      return SkipString(&escaped);
    }
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++pos_;
      SkipSpace();
      if (Consume(close)) return absl::OkStatus();
      for (;;) {
        if (c == '{') {
          bool escaped = false;
          if (absl::Status s = SkipString(&escaped); !s.ok()) return s;
          SkipSpace();
          if (!Consume(':')) return Error("expected ':'");
          SkipSpace();
        }
        if (absl::Status s = SkipValue(depth + 1); !s.ok()) return s;
        SkipSpace();
        if (Consume(close)) return absl::OkStatus();
        if (!Consume(',')) return Error(c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
        SkipSpace();
      }
    }
    for (const char* literal : {"true", "false", "null"}) {
      const size_t n = std::strlen(literal);
      if (text_.compare(pos_, n, literal) == 0) {
        pos_ += n;
        return absl::OkStatus();
      }
    }
    return SkipNumber();
  }

  absl::Status Error(const char* what) const {
    return absl::InvalidArgumentError(absl::StrCat(what, " at byte ", pos_));
  }

 private:
  bool SkipDigits() {
    const size_t start = pos_;
    while (!at_end() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
    return pos_ > start;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

// A short JSON text (a key, the model's value) as nlohmann reads it.
json ParseSmall(std::string_view text) { return json::parse(text, nullptr, false); }

}  // namespace

absl::StatusOr<RequestBody> RequestBody::Parse(std::string_view body) {
  RequestBody out;
  Scanner scan(body);
  auto not_an_object = [&](const absl::Status& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body must be one JSON object (", body.size(),
                     " bytes received are not: ", why.message(), ")"));
  };
  scan.SkipSpace();
  out.open_brace_ = scan.pos();
  if (!scan.Consume('{')) return not_an_object(scan.Error("expected '{'"));
  scan.SkipSpace();
  if (!scan.Consume('}')) {
    for (;;) {
      Member member;
      member.begin = scan.pos();
      bool escaped = false;
      if (absl::Status s = scan.SkipString(&escaped); !s.ok()) return not_an_object(s);
      const std::string_view key_text = body.substr(member.begin, scan.pos() - member.begin);
      if (escaped) {
        const json key = ParseSmall(key_text);
        if (key.is_string()) member.key = key.get<std::string>();
      } else {
        member.key = std::string(key_text.substr(1, key_text.size() - 2));
      }
      scan.SkipSpace();
      if (!scan.Consume(':')) return not_an_object(scan.Error("expected ':'"));
      scan.SkipSpace();
      member.value_begin = scan.pos();
      if (absl::Status s = scan.SkipValue(1); !s.ok()) return not_an_object(s);
      member.end = scan.pos();
      out.members_.push_back(std::move(member));
      scan.SkipSpace();
      if (scan.Consume('}')) break;
      if (!scan.Consume(',')) return not_an_object(scan.Error("expected ',' or '}'"));
      scan.SkipSpace();
    }
  }
  scan.SkipSpace();
  if (!scan.at_end()) return not_an_object(scan.Error("trailing characters after the object"));

  // The fields read; with duplicate keys the last one counts, as most JSON readers do.
  for (const Member& member : out.members_) {
    const std::string_view value = body.substr(member.value_begin, member.end - member.value_begin);
    if (member.key == "model") {
      const json parsed = ParseSmall(value);
      if (!parsed.is_string()) {
        return absl::InvalidArgumentError(
            "\"model\" must be a string: a registered model's name, or \"default\"");
      }
      out.model_ = parsed.get<std::string>();
    } else if (member.key == "stream") {
      out.stream_ = value == "true";
    } else if (member.key == "keep_alive") {
      out.keep_alive_ = ParseSmall(value);
    }
  }
  return out;
}

std::string RequestBody::Rewrite(std::string_view body, const std::string& model,
                                 bool drop_keep_alive) const {
  const std::string model_json = common::DumpJson(json(model));
  std::string out;
  out.reserve(body.size() + model_json.size() + 16);
  // '{', then each kept member after the separator that preceded it in the body (exactly one
  // comma and the spacing around it), then what followed the last member ('}' and spacing).
  out.append(body.substr(0, open_brace_ + 1));
  bool first = true;
  if (!model_.has_value()) {
    absl::StrAppend(&out, "\"model\":", model_json);
    first = false;
  }
  const size_t inside = open_brace_ + 1;
  for (size_t i = 0; i < members_.size(); ++i) {
    const Member& member = members_[i];
    if (drop_keep_alive && member.key == "keep_alive") continue;
    if (first) {
      out.append(body.substr(inside, members_[0].begin - inside));  // leading spacing
    } else if (i > 0) {
      out.append(body.substr(members_[i - 1].end, member.begin - members_[i - 1].end));
    } else {
      out += ',';
      out.append(body.substr(inside, member.begin - inside));
    }
    first = false;
    if (member.key == "model") {
      out.append(body.substr(member.begin, member.value_begin - member.begin));
      out.append(model_json);
    } else {
      out.append(body.substr(member.begin, member.end - member.begin));
    }
  }
  out.append(body.substr(members_.empty() ? inside : members_.back().end));
  return out;
}

}  // namespace gswarm::host
