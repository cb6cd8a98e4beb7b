// The router's one-pass reading of request bodies: the fields it needs, the JSON grammar checked
// as strictly as nlohmann's parser (a differential test over mutated bodies), and rewrites that
// change only what they must.

#include "host/request_body.h"

#include <random>

#include "gtest/gtest.h"

namespace gswarm::host {
namespace {

using json = nlohmann::json;

TEST(RequestBodyTest, ReadsModelStreamAndKeepAlive) {
  absl::StatusOr<RequestBody> body = RequestBody::Parse(
      R"( {"messages": [{"role": "user", "content": "a \"quoted\" {brace}"}],
          "model" : "llama", "stream": true, "keep_alive": "5m", "n": 1} )");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(body->model(), "llama");
  EXPECT_TRUE(body->stream());
  EXPECT_EQ(body->keep_alive(), json("5m"));

  body = RequestBody::Parse(R"({"prompt": "x", "stream": false})");
  ASSERT_TRUE(body.ok());
  EXPECT_FALSE(body->model().has_value());
  EXPECT_FALSE(body->stream());
  EXPECT_FALSE(body->keep_alive().has_value());

  // Escaped keys and values are decoded; nested "model" keys are not top-level.
  body = RequestBody::Parse(R"({"extra": {"model": "inner"}, "mod\u0065l": "caf\u00e9"})");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(body->model(), "caf\xc3\xa9");
  // The last of duplicate keys counts.
  body = RequestBody::Parse(R"({"model": "a", "model": "b"})");
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(body->model(), "b");
}

TEST(RequestBodyTest, RefusesWhatIsNotOneObject) {
  for (const char* text : {"",
                           "   ",
                           "[]",
                           "\"model\"",
                           "{",
                           "{\"model\": \"a\"",
                           "{\"model\" \"a\"}",
                           "{\"a\": 1,}",
                           "{\"a\": 01}",
                           "{\"a\": 1.}",
                           "{\"a\": -}",
                           "{\"a\": tru}",
                           "{\"a\": nul}",
                           "{\"a\": \"x\ny\"}",
                           "{\"a\": \"\\q\"}",
                           "{\"a\": \"\\u12\"}",
                           "{\"a\": [1,]}",
                           "{\"a\": [1 2]}",
                           "{} {}",
                           "{}x",
                           "{'a': 1}",
                           "{a: 1}",
                           "{\"a\": 1e}"}) {
    absl::StatusOr<RequestBody> body = RequestBody::Parse(text);
    EXPECT_TRUE(absl::IsInvalidArgument(body.status())) << "accepted: " << text;
    EXPECT_NE(body.status().message().find("must be one JSON object"), absl::string_view::npos)
        << body.status();
  }
  absl::StatusOr<RequestBody> body = RequestBody::Parse(R"({"model": 7})");
  EXPECT_TRUE(absl::IsInvalidArgument(body.status()));
  EXPECT_NE(body.status().message().find("\"model\" must be a string"), absl::string_view::npos);
  // Deep nesting is refused, not a stack overflow.
  const std::string deep = "{\"a\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_TRUE(absl::IsInvalidArgument(RequestBody::Parse(deep).status()));
}

TEST(RequestBodyTest, RewriteChangesOnlyTheModelAndKeepAlive) {
  const std::string text =
      R"({"model":"default",  "messages": [{"content": "keep   spacing"}], "keep_alive": 0})";
  absl::StatusOr<RequestBody> body = RequestBody::Parse(text);
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(body->Rewrite(text, "llama", false),
            R"({"model":"llama",  "messages": [{"content": "keep   spacing"}], "keep_alive": 0})");
  EXPECT_EQ(body->Rewrite(text, "llama", true),
            R"({"model":"llama",  "messages": [{"content": "keep   spacing"}]})");

  struct Case {
    std::string in;
    std::string out;  // with model "m", keep_alive dropped
  };
  for (const Case& c : std::vector<Case>{
           {R"({})", R"({"model":"m"})"},
           {R"({"keep_alive": 1})", R"({"model":"m"})"},
           {R"({ "keep_alive": 1, "a": 2 })", R"({"model":"m", "a": 2 })"},
           {R"({"a": 2, "keep_alive": 1})", R"({"model":"m","a": 2})"},
           {R"({"a": 2, "keep_alive": 1, "b": 3})", R"({"model":"m","a": 2, "b": 3})"},
           {R"({"model": "x", "keep_alive": 1})", R"({"model": "m"})"},
           {R"({"keep_alive": 1, "model": "x"})", R"({"model": "m"})"},
           {R"({"keep_alive": 1, "keep_alive": 2})", R"({"model":"m"})"},
           {R"({"a":1,"keep_alive":1,"keep_alive":2})", R"({"model":"m","a":1})"},
           {R"({"keep_alive":1, "a":1, "keep_alive":2, "b":2})", R"({"model":"m", "a":1, "b":2})"},
           {R"({"model":"x","keep_alive":1,"keep_alive":2})", R"({"model":"m"})"},
           {R"({"model": "x", "model": "y"})", R"({"model": "m", "model": "m"})"},
           {R"({"a": "quote\"s"})", R"({"model":"m","a": "quote\"s"})"},
       }) {
    absl::StatusOr<RequestBody> parsed = RequestBody::Parse(c.in);
    ASSERT_TRUE(parsed.ok()) << c.in;
    const std::string out = parsed->Rewrite(c.in, "m", true);
    EXPECT_EQ(out, c.out) << c.in;
    // Always valid JSON with the same content as a DOM edit would give.
    json expected = json::parse(c.in);
    expected.erase("keep_alive");
    expected["model"] = "m";
    EXPECT_EQ(json::parse(out), expected) << out;
  }
  // A model name that needs escaping is escaped.
  absl::StatusOr<RequestBody> plain = RequestBody::Parse(R"({"a": 1})");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(json::parse(plain->Rewrite(R"({"a": 1})", "we\"ird", false))["model"], "we\"ird");
}

// Random edits of realistic bodies: the scanner accepts exactly what nlohmann accepts (as long
// as the bytes are ASCII), and reads the same fields.
TEST(RequestBodyTest, AgreesWithAFullParserOnMutatedBodies) {
  const std::vector<std::string> seeds = {
      R"({"model": "llama", "messages": [{"role": "user", "content": "hi \"there\" \\ \u00e9"}], "stream": true, "temperature": 0.7, "stop": ["\n", "}"], "logit_bias": {"50256": -100}, "keep_alive": -1})",
      R"({"prompt": ["a", "b"], "max_tokens": 16, "n": 1, "echo": false, "seed": null, "top_p": 1e-3})",
      R"( { "input" : [ [1, 2, 3], [-4.5E+2] ] , "model":"e" } )",
      R"({"keep_alive": 1, "model": "a", "keep_alive": "5m", "x": {}, "keep_alive": null})",
  };
  const std::string alphabet = "{}[]:,\"\\ 0123456789.-+eEtrufalsn\n\tabc";
  std::mt19937 rng(1234);
  int accepted = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string text = seeds[round % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % (text.size() + 1);
      switch (rng() % 3) {
        case 0:
          text.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
        case 1:
          if (at < text.size()) text.erase(at, 1);
          break;
        default:
          if (at < text.size()) text[at] = alphabet[rng() % alphabet.size()];
          break;
      }
    }
    const json full = json::parse(text, nullptr, /*allow_exceptions=*/false);
    absl::StatusOr<RequestBody> ours = RequestBody::Parse(text);
    const bool full_ok = full.is_object() && (!full.contains("model") || full["model"].is_string());
    ASSERT_EQ(ours.ok(), full_ok) << text << "\n" << ours.status();
    if (!ours.ok()) continue;
    ++accepted;
    EXPECT_EQ(ours->model().has_value(), full.contains("model")) << text;
    if (ours->model().has_value()) {
      EXPECT_EQ(*ours->model(), full["model"]) << text;
    }
    EXPECT_EQ(ours->stream(), full.contains("stream") && full["stream"] == true) << text;
    if (full.contains("keep_alive")) {
      EXPECT_EQ(ours->keep_alive(), full["keep_alive"]) << text;
    }
    json expected = full;
    expected.erase("keep_alive");
    expected["model"] = "m";
    EXPECT_EQ(json::parse(ours->Rewrite(text, "m", true), nullptr, false), expected) << text;
  }
  EXPECT_GT(accepted, 1000);  // the mutations keep enough bodies valid to test the rewrite
}

}  // namespace
}  // namespace gswarm::host
