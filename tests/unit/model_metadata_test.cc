#include "common/model_metadata.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/bounded_read.h"
#include "common/gguf.h"
#include "common/safetensors.h"

namespace gswarm::common {
namespace {

namespace fs = std::filesystem;

// Whether `message` contains `fragment`, showing both when it does not.
::testing::AssertionResult HasText(absl::string_view message, absl::string_view fragment) {
  if (absl::StrContains(message, fragment)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << message << "\" lacks \"" << fragment << "\"";
}

// ---- byte writers --------------------------------------------------------------------------

std::string Le(uint64_t value, int bytes) {
  std::string out;
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  return out;
}
std::string U32(uint32_t v) { return Le(v, 4); }
std::string U64(uint64_t v) { return Le(v, 8); }

// A safetensors file: the header's length, the header, then `data_bytes` zero bytes.
std::string Safetensors(absl::string_view header, uint64_t data_bytes) {
  return absl::StrCat(U64(header.size()), header, std::string(data_bytes, '\0'));
}

std::string TensorJson(absl::string_view name, absl::string_view dtype,
                       const std::vector<uint64_t>& shape, uint64_t begin, uint64_t end) {
  return absl::StrCat("\"", name, "\":{\"dtype\":\"", dtype, "\",\"shape\":[",
                      absl::StrJoin(shape, ","), "],\"data_offsets\":[", begin, ",", end, "]}");
}

// A header with BF16 [2, 3], F32 [3] and a F8_E4M3 scalar: 10 parameters in 25 bytes.
std::string ValidSafetensorsHeader() {
  return absl::StrCat("{\"__metadata__\":{\"format\":\"pt\"},",
                      TensorJson("b.bias", "F32", {3}, 12, 24), ",",
                      TensorJson("a.weight", "BF16", {2, 3}, 0, 12), ",",
                      TensorJson("c.scale", "F8_E4M3", {}, 24, 25), "}");
}

// GGUF encoders.
std::string Str(absl::string_view s) { return absl::StrCat(U64(s.size()), s); }
std::string KvString(absl::string_view key, absl::string_view value) {
  return absl::StrCat(Str(key), U32(8), Str(value));
}
std::string KvU32(absl::string_view key, uint32_t value) {
  return absl::StrCat(Str(key), U32(4), U32(value));
}
std::string KvU64(absl::string_view key, uint64_t value) {
  return absl::StrCat(Str(key), U32(10), U64(value));
}
std::string KvStringArray(absl::string_view key, const std::vector<std::string>& values) {
  std::string out = absl::StrCat(Str(key), U32(9), U32(8), U64(values.size()));
  for (const std::string& v : values) out += Str(v);
  return out;
}
std::string TensorInfo(absl::string_view name, const std::vector<uint64_t>& dims, uint32_t type,
                       uint64_t offset) {
  std::string out = absl::StrCat(Str(name), U32(static_cast<uint32_t>(dims.size())));
  for (uint64_t d : dims) out += U64(d);
  return absl::StrCat(out, U32(type), U64(offset));
}

struct GgufSpec {
  uint32_t version = 3;
  std::vector<std::string> kvs;      // encoded key/value pairs
  std::vector<std::string> tensors;  // encoded tensor infos
  uint64_t alignment = 32;
  uint64_t data_bytes = 0;
};

std::string BuildGguf(const GgufSpec& spec) {
  std::string out =
      absl::StrCat("GGUF", U32(spec.version), U64(spec.tensors.size()), U64(spec.kvs.size()));
  for (const std::string& kv : spec.kvs) out += kv;
  for (const std::string& t : spec.tensors) out += t;
  out.resize((out.size() + spec.alignment - 1) / spec.alignment * spec.alignment, '\0');
  return out + std::string(spec.data_bytes, '\x11');
}

// "llama", 5 tokens, Q4_K_M, two F32 tensors of 40 and 8 elements at offsets 0 and 160. The
// architecture's own keys come before general.architecture, and the KVs cover every value type.
GgufSpec ValidGgufSpec() {
  GgufSpec spec;
  spec.kvs = {
      KvU32("llama.context_length", 4096),
      KvU32("llama.block_count", 2),
      KvU64("llama.embedding_length", 8),
      KvU32("qwen2.context_length", 999),  // another architecture's: ignored
      KvString("general.architecture", "llama"),
      KvString("general.name", "Tiny Llama"),
      KvU32("general.file_type", 15),
      KvU32("general.alignment", 32),
      KvStringArray("tokenizer.ggml.tokens", {"<s>", "</s>", "a", "b", "c"}),
      absl::StrCat(Str("tokenizer.ggml.scores"), U32(9), U32(6), U64(5), std::string(20, '\0')),
      // [[1, 2, 3], []] as arrays of uint8.
      absl::StrCat(Str("test.nested"), U32(9), U32(9), U64(2), U32(0), U64(3), "\x01\x02\x03",
                   U32(0), U64(0)),
      absl::StrCat(Str("test.flag"), U32(7), "\x01"),
      absl::StrCat(Str("test.negative"), U32(5), U32(0xffffffff)),
      absl::StrCat(Str("test.u8"), U32(0), "\x07"),
      absl::StrCat(Str("test.i8"), U32(1), "\xff"),
      absl::StrCat(Str("test.u16"), U32(2), Le(7, 2)),
      absl::StrCat(Str("test.i16"), U32(3), Le(7, 2)),
      absl::StrCat(Str("test.pi"), U32(12), U64(0x400921fb54442d18)),
      absl::StrCat(Str("test.f32"), U32(6), U32(0x3f800000)),
      absl::StrCat(Str("test.i64"), U32(11), U64(5)),
  };
  spec.tensors = {TensorInfo("token_embd.weight", {8, 5}, 0, 0),
                  TensorInfo("output_norm.weight", {8}, 0, 160)};
  spec.data_bytes = 192;
  return spec;
}

std::string ValidGguf() { return BuildGguf(ValidGgufSpec()); }

// The fixed part of a GGUF header, for hand-built hostile files.
std::string GgufHeader(uint32_t version, uint64_t tensors, uint64_t kvs) {
  return absl::StrCat("GGUF", U32(version), U64(tensors), U64(kvs));
}

// ---- fixture -------------------------------------------------------------------------------

class ModelFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "model_metadata_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string Write(const std::string& relative, absl::string_view contents) {
    fs::path path = fs::path(dir_) / relative;
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary);
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    EXPECT_TRUE(out.good()) << path;
    return path.string();
  }

  std::string dir_;
};

// ---- safetensors ---------------------------------------------------------------------------

TEST(SafetensorsTest, ParsesValidHeader) {
  std::string header = ValidSafetensorsHeader();
  std::string file = Safetensors(header, 25);
  auto parsed = ParseSafetensorsHeader(file, file.size(), "model.safetensors");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->header_bytes, header.size());
  EXPECT_EQ(parsed->parameter_count, 10u);
  ASSERT_EQ(parsed->tensors.size(), 3u);
  const SafetensorsTensor& a = parsed->tensors[0];  // sorted by name
  EXPECT_EQ(a.name, "a.weight");
  EXPECT_EQ(a.dtype, "BF16");
  EXPECT_EQ(a.shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(a.begin, 0u);
  EXPECT_EQ(a.end, 12u);
  EXPECT_EQ(a.num_elements, 6u);
  EXPECT_EQ(parsed->tensors[1].name, "b.bias");
  EXPECT_EQ(parsed->tensors[2].shape, std::vector<uint64_t>{});
  EXPECT_EQ(parsed->tensors[2].num_elements, 1u);
  EXPECT_EQ(parsed->metadata.at("format"), "pt");

  // The header alone is enough when the file size is known.
  auto prefix = ParseSafetensorsHeader(absl::string_view(file).substr(0, 8 + header.size()),
                                       file.size(), "model.safetensors");
  EXPECT_TRUE(prefix.ok()) << prefix.status();
}

TEST(SafetensorsTest, AcceptsUnknownDtypesPaddingAndUnknownKeys) {
  std::string header =
      absl::StrCat("{", TensorJson("x", "F4", {4}, 0, 2), ",\"y\":{\"dtype\":\"U8\",\"shape\":[2],",
                   "\"data_offsets\":[2,4],\"extra\":{\"a\":[1,2]}}}      ");
  std::string file = Safetensors(header, 4);
  auto parsed = ParseSafetensorsHeader(file, file.size(), "x.safetensors");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->parameter_count, 6u);
}

TEST(SafetensorsTest, DtypeNames) {
  EXPECT_EQ(SafetensorsDtypeSize("BF16"), 2u);
  EXPECT_EQ(SafetensorsDtypeSize("F64"), 8u);
  EXPECT_EQ(SafetensorsDtypeSize("BOOL"), 1u);
  EXPECT_EQ(SafetensorsDtypeSize("F4"), 0u);
  EXPECT_EQ(SafetensorsDtypeToTorch("BF16"), "bfloat16");
  EXPECT_EQ(SafetensorsDtypeToTorch("F16"), "float16");
  EXPECT_EQ(SafetensorsDtypeToTorch("F32"), "float32");
  EXPECT_EQ(SafetensorsDtypeToTorch("F8_E4M3"), "float8_e4m3fn");
  EXPECT_EQ(SafetensorsDtypeToTorch("F4"), "f4");
}

TEST_F(ModelFilesTest, SafetensorsReadsOnlyTheHeader) {
  // A 4 GiB sparse file: reading its data would be slow and show in the test time.
  constexpr uint64_t kData = uint64_t{4} << 30;
  std::string header = absl::StrCat("{", TensorJson("big", "U8", {kData}, 0, kData), "}");
  std::string path = Write("model.safetensors", Safetensors(header, 0));
  ASSERT_EQ(truncate(path.c_str(), static_cast<off_t>(8 + header.size() + kData)), 0);
  auto parsed = ReadSafetensorsHeader(path);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->parameter_count, kData);
}

// The error for `file` (its size is the file size) must contain `expected`.
void ExpectSafetensorsError(absl::string_view file, absl::string_view expected) {
  auto parsed = ParseSafetensorsHeader(file, file.size(), "bad.safetensors");
  ASSERT_FALSE(parsed.ok()) << "accepted, expected: " << expected;
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(HasText(parsed.status().message(), "bad.safetensors: "));
  EXPECT_TRUE(HasText(parsed.status().message(), expected));
}

TEST(SafetensorsTest, RejectsBadHeaderLengths) {
  ExpectSafetensorsError("", "too short");
  ExpectSafetensorsError("\x01\x00\x00", "too short");
  ExpectSafetensorsError(absl::StrCat(U64(1000), "{}        "),
                         "header length 1000 exceeds the file size 18");
  ExpectSafetensorsError(absl::StrCat(U64(uint64_t{1} << 63), "{}"),
                         "header length 9223372036854775808 exceeds the file size 10");
  ExpectSafetensorsError(absl::StrCat(U64(~uint64_t{0}), "{}"), "exceeds the file size");

  // Past the 100 MiB limit, in a file large enough to hold it.
  std::string length = U64(kMaxSafetensorsHeaderBytes + 1);
  auto parsed = ParseSafetensorsHeader(length, uint64_t{1} << 40, "big.safetensors");
  ASSERT_FALSE(parsed.ok());
  EXPECT_TRUE(HasText(parsed.status().message(), "exceeds the limit"));

  // A header the caller did not pass in full.
  parsed = ParseSafetensorsHeader(absl::StrCat(U64(100), "{"), 1000, "short.safetensors");
  ASSERT_FALSE(parsed.ok());
  EXPECT_TRUE(HasText(parsed.status().message(), "needs 108 bytes"));
}

TEST(SafetensorsTest, RejectsHeadersThatAreNotAJsonObject) {
  ExpectSafetensorsError(Safetensors("", 0), "invalid JSON");
  ExpectSafetensorsError(Safetensors("not json", 0), "invalid JSON");
  ExpectSafetensorsError(Safetensors("{\"a\":", 0), "invalid JSON");
  ExpectSafetensorsError(Safetensors("{} {}", 0), "invalid JSON");
  ExpectSafetensorsError(Safetensors("{\"a\":\"\xff\"}", 0), "invalid JSON");
  ExpectSafetensorsError(Safetensors("[1,2]", 0), "is a JSON array, not an object");
  ExpectSafetensorsError(Safetensors("\"text\"", 0), "is a JSON string, not an object");
  ExpectSafetensorsError(Safetensors("null", 0), "not an object");
}

TEST(SafetensorsTest, RejectsHostileStructure) {
  // Nesting that would be gigabytes of DOM nodes without a limit.
  ExpectSafetensorsError(Safetensors(std::string(1'000'000, '['), 0), "nested deeper than 8");
  std::string zeros = "{\"a\":{\"dtype\":\"X\",\"shape\":[";
  for (int i = 0; i < 4'100'000; ++i) zeros += "0,";
  zeros += "0],\"data_offsets\":[0,0]}}";
  ExpectSafetensorsError(Safetensors(zeros, 0), "more than 4000000 values");
}

TEST(SafetensorsTest, RejectsBadTensorEntries) {
  auto one = [](absl::string_view entry, uint64_t data = 64) {
    return Safetensors(absl::StrCat("{\"t\":", entry, "}"), data);
  };
  ExpectSafetensorsError(one("[]"), "tensor \"t\": expected an object");
  ExpectSafetensorsError(one("{\"shape\":[1],\"data_offsets\":[0,1]}"), "dtype missing");
  ExpectSafetensorsError(one("{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,1]}"),
                         "dtype missing or not a string");
  ExpectSafetensorsError(one("{\"dtype\":\"U8\",\"data_offsets\":[0,1]}"), "shape missing");
  ExpectSafetensorsError(one("{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}"),
                         "non-negative integers");
  ExpectSafetensorsError(one("{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}"),
                         "non-negative integers");
  ExpectSafetensorsError(one("{\"dtype\":\"U8\",\"shape\":[1]}"), "data_offsets missing");
  ExpectSafetensorsError(one("{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}"),
                         "not a pair");
  ExpectSafetensorsError(one("{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,-1]}"),
                         "not a pair");
  ExpectSafetensorsError(
      one("{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}"),
      "not a pair");
  ExpectSafetensorsError(Safetensors("{\"__metadata__\":[]}", 0),
                         "__metadata__ must be an object (got array)");
  ExpectSafetensorsError(Safetensors("{\"__metadata__\":{\"k\":1}}", 0),
                         "__metadata__ value \"k\" must be a string (got number)");
}

TEST(SafetensorsTest, RejectsOffsetsOutsideTheData) {
  ExpectSafetensorsError(Safetensors(absl::StrCat("{", TensorJson("t", "U8", {10}, 0, 10), "}"), 5),
                         "data_offsets [0, 10] reach past the 5 bytes of tensor data");
  ExpectSafetensorsError(Safetensors(absl::StrCat("{", TensorJson("t", "U8", {0}, 8, 4), "}"), 16),
                         "data_offsets [8, 4] begin after end");
  ExpectSafetensorsError(
      Safetensors(absl::StrCat("{", TensorJson("t", "X", {0}, 0, ~uint64_t{0}), "}"), 16),
      "reach past");
}

TEST(SafetensorsTest, RejectsShapeOverflowAndSizeMismatch) {
  const uint64_t big = uint64_t{1} << 40;
  ExpectSafetensorsError(
      Safetensors(absl::StrCat("{", TensorJson("t", "F32", {big, big}, 0, 0), "}"), 0),
      "shape [1099511627776, 1099511627776] has more than 2^64 elements");
  // Unknown dtypes are not size-checked, but their shapes still must not overflow.
  ExpectSafetensorsError(
      Safetensors(absl::StrCat("{", TensorJson("t", "F4", {big, big}, 0, 0), "}"), 0),
      "more than 2^64");
  ExpectSafetensorsError(
      Safetensors(absl::StrCat("{", TensorJson("t", "F32", {2, 3}, 0, 20), "}"), 20),
      "shape [2, 3] of F32 needs 6 x 4 bytes but data_offsets [0, 20] hold 20");
  // Elements fit, bytes do not.
  ExpectSafetensorsError(
      Safetensors(absl::StrCat("{", TensorJson("t", "F64", {uint64_t{1} << 62}, 0, 8), "}"), 8),
      "needs 4611686018427387904 x 8 bytes");
  // Total over all tensors.
  const uint64_t half = uint64_t{1} << 63;
  ExpectSafetensorsError(Safetensors(absl::StrCat("{", TensorJson("a", "F4", {half}, 0, 0), ",",
                                                  TensorJson("b", "F4", {half}, 0, 0), "}"),
                                     0),
                         "more than 2^64 elements");
}

TEST(SafetensorsTest, EveryTruncationFails) {
  std::string file = Safetensors(ValidSafetensorsHeader(), 25);
  ASSERT_TRUE(ParseSafetensorsHeader(file, file.size(), "ok").ok());
  for (size_t len = 0; len < file.size(); ++len) {
    std::string prefix = file.substr(0, len);  // its own buffer, so ASan sees overreads
    auto parsed = ParseSafetensorsHeader(prefix, prefix.size(), "cut.safetensors");
    EXPECT_FALSE(parsed.ok()) << "prefix of " << len << " bytes accepted";
  }
}

TEST(SafetensorsTest, SurvivesRandomMutations) {
  std::string file = Safetensors(ValidSafetensorsHeader(), 25);
  std::mt19937 rng(42);
  for (int round = 0; round < 20000; ++round) {
    std::string mutated = file;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) mutated[rng() % mutated.size()] = static_cast<char>(rng());
    (void)ParseSafetensorsHeader(mutated, mutated.size(), "fuzz");  // must not crash
  }
}

// ---- GGUF ----------------------------------------------------------------------------------

TEST(GgufTest, ParsesValidFile) {
  std::string file = ValidGguf();
  auto info = ParseGguf(file, file.size(), "tiny.gguf");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->version, 3u);
  EXPECT_EQ(info->tensor_count, 2u);
  EXPECT_EQ(info->kv_count, ValidGgufSpec().kvs.size());
  EXPECT_EQ(info->architecture, "llama");
  EXPECT_EQ(info->name, "Tiny Llama");
  EXPECT_EQ(info->context_length, 4096u);
  EXPECT_EQ(info->block_count, 2u);
  EXPECT_EQ(info->embedding_length, 8u);
  ASSERT_TRUE(info->file_type.has_value());
  EXPECT_EQ(*info->file_type, 15u);
  EXPECT_EQ(GgufFileTypeName(*info->file_type), "Q4_K_M");
  EXPECT_EQ(info->vocab_size, 5u);
  EXPECT_EQ(info->parameter_count, 48u);
  EXPECT_EQ(info->data_offset, file.size() - 192);
  EXPECT_EQ(info->data_offset % 32, 0u);
  EXPECT_EQ(info->split_count, 0u);
}

TEST(GgufTest, AcceptsVersion2AndNoTensors) {
  GgufSpec spec;
  spec.version = 2;
  spec.kvs = {KvString("general.architecture", "gpt2")};
  std::string file = BuildGguf(spec);
  auto info = ParseGguf(file, file.size(), "v2.gguf");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->architecture, "gpt2");
  EXPECT_EQ(info->parameter_count, 0u);
  EXPECT_FALSE(info->file_type.has_value());
}

TEST(GgufTest, FileTypeNames) {
  EXPECT_EQ(GgufFileTypeName(0), "F32");
  EXPECT_EQ(GgufFileTypeName(1), "F16");
  EXPECT_EQ(GgufFileTypeName(2), "Q4_0");
  EXPECT_EQ(GgufFileTypeName(7), "Q8_0");
  EXPECT_EQ(GgufFileTypeName(10), "Q2_K");
  EXPECT_EQ(GgufFileTypeName(18), "Q6_K");
  EXPECT_EQ(GgufFileTypeName(30), "IQ4_XS");
  EXPECT_EQ(GgufFileTypeName(32), "BF16");
  EXPECT_EQ(GgufFileTypeName(4), "file_type 4");
  EXPECT_EQ(GgufFileTypeName(34), "file_type 34");
  EXPECT_EQ(GgufFileTypeName(1000), "file_type 1000");
}

TEST_F(ModelFilesTest, GgufReadsALargeTokenizerInChunks) {
  // ~5 MB of tokens: the file reader refills its 1 MiB buffer many times, mid-string included.
  std::vector<std::string> tokens;
  for (int i = 0; i < 300000; ++i) tokens.push_back(absl::StrCat("tok", i));
  GgufSpec spec;
  spec.kvs = {KvStringArray("tokenizer.ggml.tokens", tokens),
              absl::StrCat(Str("tokenizer.ggml.token_type"), U32(9), U32(5), U64(300000),
                           std::string(1200000, '\0')),
              KvString("general.architecture", "qwen2"), KvU32("qwen2.block_count", 28)};
  spec.tensors = {TensorInfo("t", {1000, 1000}, 1, 0)};
  spec.data_bytes = 2'000'000;
  std::string file = BuildGguf(spec);
  std::string path = Write("big.gguf", file);

  auto info = ReadGgufHeader(path);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->vocab_size, 300000u);
  EXPECT_EQ(info->architecture, "qwen2");
  EXPECT_EQ(info->block_count, 28u);
  EXPECT_EQ(info->parameter_count, 1'000'000u);

  auto in_memory = ParseGguf(file, file.size(), "big.gguf");
  ASSERT_TRUE(in_memory.ok()) << in_memory.status();
  EXPECT_EQ(in_memory->data_offset, info->data_offset);
}

TEST_F(ModelFilesTest, GgufRejectsAHeaderPastTheCap) {
  // A skipped string of 65 MiB in a sparse file: every byte exists, but the header is too big.
  std::string head =
      absl::StrCat(GgufHeader(3, 0, 1), Str("x"), U32(8), U64(kMaxGgufHeaderBytes + (1 << 20)));
  std::string path = Write("huge.gguf", head);
  ASSERT_EQ(truncate(path.c_str(), static_cast<off_t>(kMaxGgufHeaderBytes * 2)), 0);
  auto info = ReadGgufHeader(path);
  ASSERT_FALSE(info.ok());
  EXPECT_TRUE(HasText(info.status().message(), "the header would exceed"));
  EXPECT_TRUE(HasText(info.status().message(), path));
}

void ExpectGgufError(absl::string_view file, absl::string_view expected) {
  auto info = ParseGguf(file, file.size(), "bad.gguf");
  ASSERT_FALSE(info.ok()) << "accepted, expected: " << expected;
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(HasText(info.status().message(), "bad.gguf: "));
  EXPECT_TRUE(HasText(info.status().message(), expected));
}

TEST(GgufTest, RejectsWrongMagicAndVersions) {
  ExpectGgufError("", "needs 4 bytes at offset 0 but the file ends at byte 0");
  ExpectGgufError(absl::StrCat("GGML", U32(3), U64(0), U64(0)), "not a GGUF file");
  ExpectGgufError(absl::StrCat(U64(8), "{}"), "not a GGUF file");
  ExpectGgufError(GgufHeader(1, 0, 0), "GGUF version 1 is unsupported");
  ExpectGgufError(GgufHeader(4, 0, 0), "GGUF version 4 is unsupported");
  ExpectGgufError(absl::StrCat("GGUF", std::string("\0\0\0\3", 4), U64(0), U64(0)), "big-endian");
}

TEST(GgufTest, RejectsHugeCounts) {
  ExpectGgufError(GgufHeader(3, uint64_t{1} << 40, 0), "exceed the limit of 1000000");
  ExpectGgufError(GgufHeader(3, 0, ~uint64_t{0}), "exceed the limit");
  // Within the limits, but the file ends long before.
  ExpectGgufError(GgufHeader(3, 1000, 1000), "key/value pair 0: needs 8 bytes at offset 24");
}

TEST(GgufTest, RejectsHugeStrings) {
  const uint64_t huge = uint64_t{1} << 60;
  // A key, which would be read into memory.
  ExpectGgufError(absl::StrCat(GgufHeader(3, 0, 1), U64(huge), "x"),
                  "string of 1152921504606846976 bytes at offset 24 exceeds the limit");
  // A kept value.
  ExpectGgufError(absl::StrCat(GgufHeader(3, 0, 1), Str("general.name"), U32(8), U64(huge)),
                  "key \"general.name\": string of 1152921504606846976 bytes");
  // A skipped value: it only has to fit in the file.
  ExpectGgufError(absl::StrCat(GgufHeader(3, 0, 1), Str("x"), U32(8), U64(huge), "abc"),
                  "needs 1152921504606846976 bytes at offset 45 but the file ends");
  // A tensor name.
  ExpectGgufError(absl::StrCat(GgufHeader(3, 1, 0), U64(huge)), "tensor info 0: needs");
}

TEST(GgufTest, RejectsHugeArrays) {
  const uint64_t huge = uint64_t{1} << 60;
  ExpectGgufError(
      absl::StrCat(GgufHeader(3, 0, 1), Str("tokenizer.ggml.tokens"), U32(9), U32(8), U64(huge)),
      "array of 1152921504606846976 elements exceeds");
  ExpectGgufError(absl::StrCat(GgufHeader(3, 0, 1), Str("a"), U32(9), U32(12), U64(1 << 20)),
                  "needs 8388608 bytes");
  ExpectGgufError(absl::StrCat(GgufHeader(3, 0, 1), Str("a"), U32(9), U32(8), U64(3), Str("x")),
                  "the file ends");
  ExpectGgufError(absl::StrCat(GgufHeader(3, 0, 1), Str("a"), U32(9), U32(13), U64(0)),
                  "array of unknown value type 13");
}

TEST(GgufTest, BoundsArrayNesting) {
  auto nested = [](int depth) {
    std::string value;
    for (int i = 1; i < depth; ++i) value += absl::StrCat(U32(9), U64(1));
    value += absl::StrCat(U32(0), U64(0));  // the innermost: an empty array of uint8
    return absl::StrCat(GgufHeader(3, 0, 1), Str("deep"), U32(9), value);
  };
  std::string ok = nested(kMaxGgufArrayDepth);
  EXPECT_TRUE(ParseGguf(ok, ok.size(), "ok.gguf").ok());
  ExpectGgufError(nested(kMaxGgufArrayDepth + 1), "arrays nested deeper than 4 levels");
  ExpectGgufError(nested(100000), "arrays nested deeper");
}

TEST(GgufTest, RejectsBadValues) {
  ExpectGgufError(absl::StrCat(GgufHeader(3, 0, 1), Str("x"), U32(13)), "unknown value type 13");
  ExpectGgufError(absl::StrCat(GgufHeader(3, 0, 1), KvU32("general.alignment", 3)),
                  "key \"general.alignment\": must be a power of two");
  ExpectGgufError(absl::StrCat(GgufHeader(3, 0, 1), KvU32("general.alignment", 0)), "power of two");
  ExpectGgufError(absl::StrCat(GgufHeader(3, 0, 1), KvString("general.alignment", "32")),
                  "power of two");
  ExpectGgufError(absl::StrCat(GgufHeader(3, 0, 1), KvString("general.architecture", "ll\xff")),
                  "not valid UTF-8");
}

TEST(GgufTest, RejectsBadTensorInfos) {
  ExpectGgufError(absl::StrCat(GgufHeader(3, 1, 0), Str("t"), U32(1000)),
                  "tensor info 0: 1000 dimensions exceed the limit of 8");
  const uint64_t big = uint64_t{1} << 32;
  std::string overflow = absl::StrCat(GgufHeader(3, 1, 0), TensorInfo("t", {big, big}, 0, 0));
  ExpectGgufError(overflow, "more than 2^64 elements");
  const uint64_t half = uint64_t{1} << 63;
  ExpectGgufError(absl::StrCat(GgufHeader(3, 2, 0), TensorInfo("a", {half}, 0, 0),
                               TensorInfo("b", {half}, 0, 0)),
                  "tensor info 1: the tensors hold more than 2^64 elements");
  // The header is whole, the tensor data is not.
  GgufSpec spec = ValidGgufSpec();
  spec.kvs.clear();
  spec.data_bytes = 100;
  ExpectGgufError(BuildGguf(spec), "tensor data at offset");
}

TEST(GgufTest, EveryTruncationOfTheHeaderFails) {
  std::string file = ValidGguf();
  auto full = ParseGguf(file, file.size(), "ok");
  ASSERT_TRUE(full.ok()) << full.status();
  // Up to the last tensor's first byte, every prefix must fail; past it the data may be cut
  // short without the header knowing (tensor byte sizes depend on ggml types).
  const size_t must_fail = full->data_offset + 160;
  for (size_t len = 0; len <= file.size(); ++len) {
    std::string prefix = file.substr(0, len);  // its own buffer, so ASan sees overreads
    auto info = ParseGguf(prefix, prefix.size(), "cut.gguf");
    if (len <= must_fail) {
      EXPECT_FALSE(info.ok()) << "prefix of " << len << " bytes accepted";
    } else {
      EXPECT_TRUE(info.ok()) << len << ": " << info.status();
    }
  }
}

TEST(GgufTest, SurvivesRandomMutations) {
  std::string file = ValidGguf();
  std::mt19937 rng(7);
  for (int round = 0; round < 20000; ++round) {
    std::string mutated = file;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) mutated[rng() % mutated.size()] = static_cast<char>(rng());
    (void)ParseGguf(mutated, mutated.size(), "fuzz");  // must not crash
  }
}

// ---- bounded JSON --------------------------------------------------------------------------

TEST(ModelMetadataJsonTest, ParsesWithinLimitsAndStopsPastThem) {
  auto ok = ParseJsonBounded(R"({"a": [1, {"b": null}], "a": "last wins"})", "x.json");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)["a"], "last wins");
  auto deep = ParseJsonBounded("[[[]]]", "x.json", {.max_depth = 2});
  ASSERT_FALSE(deep.ok());
  EXPECT_TRUE(HasText(deep.status().message(), "x.json: invalid JSON: nested"));
  auto many = ParseJsonBounded("[1,2,3]", "x.json", {.max_values = 3});
  EXPECT_FALSE(many.ok());
  auto bad = ParseJsonBounded("{", "x.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(HasText(bad.status().message(), "x.json: invalid JSON: parse error"));
}

// ---- ReadModelMetadata ---------------------------------------------------------------------

class ModelMetadataTest : public ModelFilesTest {
 protected:
  v1::ModelMetadata Read(const std::string& relative = "") {
    auto metadata = ReadModelMetadata(relative.empty() ? dir_ : dir_ + "/" + relative);
    EXPECT_TRUE(metadata.ok()) << metadata.status();
    return metadata.ok() ? *metadata : v1::ModelMetadata();
  }
  absl::Status ReadError() {
    auto metadata = ReadModelMetadata(dir_);
    EXPECT_FALSE(metadata.ok()) << metadata->DebugString();
    return metadata.status();
  }
};

constexpr char kLlamaConfig[] = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
  "max_position_embeddings": 4096, "num_hidden_layers": 22, "hidden_size": 2048,
  "torch_dtype": "bfloat16"})";

TEST_F(ModelMetadataTest, SafetensorsWithConfig) {
  Write("config.json", kLlamaConfig);
  Write("model.safetensors", Safetensors(ValidSafetensorsHeader(), 25));
  v1::ModelMetadata m = Read();
  EXPECT_EQ(m.format(), "safetensors");
  EXPECT_EQ(m.architecture(), "LlamaForCausalLM");
  EXPECT_EQ(m.parameter_count(), 10u);
  EXPECT_EQ(m.dtype(), "bfloat16");
  EXPECT_EQ(m.vocab_size(), 32000u);
  EXPECT_EQ(m.context_length(), 4096u);
  EXPECT_EQ(m.num_layers(), 22u);
  EXPECT_EQ(m.hidden_size(), 2048u);
}

TEST_F(ModelMetadataTest, DtypeFromTheWeightsWhenConfigHasNone) {
  Write("config.json", R"({"model_type": "mistral"})");
  // 6 F16 parameters against 3 F32 ones, over two files.
  Write("a.safetensors",
        Safetensors(absl::StrCat("{", TensorJson("w", "F16", {2, 3}, 0, 12), "}"), 12));
  Write("b.safetensors",
        Safetensors(absl::StrCat("{", TensorJson("n", "F32", {3}, 0, 12), "}"), 12));
  v1::ModelMetadata m = Read();
  EXPECT_EQ(m.architecture(), "mistral");
  EXPECT_EQ(m.parameter_count(), 9u);
  EXPECT_EQ(m.dtype(), "float16");
}

TEST_F(ModelMetadataTest, ShardedIndex) {
  Write("config.json", kLlamaConfig);
  Write("model-00001-of-00002.safetensors",
        Safetensors(absl::StrCat("{", TensorJson("a", "BF16", {4, 4}, 0, 32), "}"), 32));
  Write("model-00002-of-00002.safetensors",
        Safetensors(absl::StrCat("{", TensorJson("b", "BF16", {4}, 0, 8), ",",
                                 TensorJson("c", "BF16", {2}, 8, 12), "}"),
                    12));
  // Mistral repositories ship the same weights again in one file; the index leaves it out.
  Write("consolidated.safetensors",
        Safetensors(absl::StrCat("{", TensorJson("a", "BF16", {4, 4}, 0, 32), "}"), 32));
  Write("model.safetensors.index.json", R"({"metadata": {"total_size": 44}, "weight_map": {
      "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors"}})");
  v1::ModelMetadata m = Read();
  EXPECT_EQ(m.format(), "safetensors");
  EXPECT_EQ(m.parameter_count(), 22u);
}

TEST_F(ModelMetadataTest, IndexErrors) {
  Write("model.safetensors.index.json",
        R"({"weight_map": {"a": "model-00001-of-00002.safetensors"}})");
  absl::Status missing = ReadError();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(
      HasText(missing.message(), "names shard model-00001-of-00002.safetensors, which is missing"));

  Write("model.safetensors.index.json", R"({"weight_map": {"a": "../outside.safetensors"}})");
  EXPECT_TRUE(HasText(ReadError().message(), "is not a file name"));
  Write("model.safetensors.index.json", R"({"weight_map": {}})");
  EXPECT_TRUE(HasText(ReadError().message(), "no weight_map"));
  Write("model.safetensors.index.json", R"([])");
  EXPECT_TRUE(HasText(ReadError().message(), "no weight_map"));
}

TEST_F(ModelMetadataTest, ConfigVariants) {
  Write("gpt2/config.json", R"({"architectures": ["GPT2LMHeadModel"], "vocab_size": 50257,
      "n_positions": 1024, "n_layer": 12, "n_embd": 768})");
  v1::ModelMetadata gpt2 = Read("gpt2");
  EXPECT_EQ(gpt2.format(), "");
  EXPECT_EQ(gpt2.architecture(), "GPT2LMHeadModel");
  EXPECT_EQ(gpt2.vocab_size(), 50257u);
  EXPECT_EQ(gpt2.context_length(), 1024u);
  EXPECT_EQ(gpt2.num_layers(), 12u);
  EXPECT_EQ(gpt2.hidden_size(), 768u);

  Write("llava/config.json", R"({"architectures": ["LlavaForConditionalGeneration"],
      "vocab_size": 32064, "text_config": {"model_type": "llama", "vocab_size": 1,
      "max_position_embeddings": 4096, "num_hidden_layers": 32, "hidden_size": 4096,
      "torch_dtype": "float16"}, "vision_config": {"hidden_size": 1024}})");
  v1::ModelMetadata llava = Read("llava");
  EXPECT_EQ(llava.architecture(), "LlavaForConditionalGeneration");
  EXPECT_EQ(llava.vocab_size(), 32064u);  // the top level wins
  EXPECT_EQ(llava.context_length(), 4096u);
  EXPECT_EQ(llava.num_layers(), 32u);
  EXPECT_EQ(llava.hidden_size(), 4096u);
  EXPECT_EQ(llava.dtype(), "float16");

  Write("mpt/config.json", R"({"architectures": null, "model_type": "mpt", "max_seq_len": 2048,
      "n_layers": 24, "d_model": 2048, "dtype": "bfloat16", "num_hidden_layers": -1})");
  v1::ModelMetadata mpt = Read("mpt");
  EXPECT_EQ(mpt.architecture(), "mpt");
  EXPECT_EQ(mpt.context_length(), 2048u);
  EXPECT_EQ(mpt.num_layers(), 24u);
  EXPECT_EQ(mpt.hidden_size(), 2048u);
  EXPECT_EQ(mpt.dtype(), "bfloat16");

  Write("chatglm/config.json", R"({"model_type": "chatglm", "seq_length": 8192,
      "num_layers": 28, "hidden_size": 4096.0})");
  v1::ModelMetadata glm = Read("chatglm");
  EXPECT_EQ(glm.context_length(), 8192u);
  EXPECT_EQ(glm.num_layers(), 28u);
  EXPECT_EQ(glm.hidden_size(), 0u);  // not an integer: ignored
}

TEST_F(ModelMetadataTest, Gguf) {
  Write("tiny-Q4_K_M.gguf", ValidGguf());
  // A vision projector, first by name: not the model.
  GgufSpec projector;
  projector.kvs = {KvString("general.architecture", "clip")};
  Write("mmproj-model-f16.gguf", BuildGguf(projector));
  v1::ModelMetadata m = Read();
  EXPECT_EQ(m.format(), "gguf");
  EXPECT_EQ(m.architecture(), "llama");
  EXPECT_EQ(m.parameter_count(), 48u);
  EXPECT_EQ(m.dtype(), "Q4_K_M");
  EXPECT_EQ(m.vocab_size(), 5u);
  EXPECT_EQ(m.context_length(), 4096u);
  EXPECT_EQ(m.num_layers(), 2u);
  EXPECT_EQ(m.hidden_size(), 8u);
}

TEST_F(ModelMetadataTest, SplitGgufAddsTheParts) {
  auto part = [](uint32_t index, uint64_t elements) {
    GgufSpec spec;
    spec.kvs = {KvString("general.architecture", "llama"), KvU32("split.count", 2),
                KvU32("split.no", index), KvU32("general.file_type", 7)};
    spec.tensors = {TensorInfo(absl::StrCat("t", index), {elements}, 0, 0)};
    spec.data_bytes = elements * 4;
    return BuildGguf(spec);
  };
  Write("big-00001-of-00002.gguf", part(0, 100));
  Write("big-00002-of-00002.gguf", part(1, 50));
  Write("other-00002-of-00002.gguf", part(1, 1000));  // another set: not added
  v1::ModelMetadata m = Read();
  EXPECT_EQ(m.format(), "gguf");
  EXPECT_EQ(m.parameter_count(), 150u);
  EXPECT_EQ(m.dtype(), "Q8_0");
}

TEST_F(ModelMetadataTest, PyTorchWeightsAreNotParsed) {
  Write("config.json", kLlamaConfig);
  Write("pytorch_model.bin", "not a pickle");
  v1::ModelMetadata m = Read();
  EXPECT_EQ(m.format(), "pytorch");
  EXPECT_EQ(m.parameter_count(), 0u);
  EXPECT_EQ(m.architecture(), "LlamaForCausalLM");
  EXPECT_EQ(m.dtype(), "bfloat16");
}

TEST_F(ModelMetadataTest, NoWeightsIsNotAnError) {
  v1::ModelMetadata empty = Read();
  EXPECT_EQ(empty.format(), "");
  EXPECT_EQ(empty.architecture(), "");

  Write("config.json", kLlamaConfig);
  Write("README.md", "# model");
  // Hidden files and partial downloads are ignored, however broken.
  Write(".hidden.safetensors", "garbage");
  Write(".cache/huggingface/x.gguf", "garbage");
  Write("model.safetensors.part", "garbage");
  Write("model.gguf.incomplete", "garbage");
  v1::ModelMetadata m = Read();
  EXPECT_EQ(m.format(), "");
  EXPECT_EQ(m.architecture(), "LlamaForCausalLM");
  EXPECT_EQ(m.num_layers(), 22u);
}

TEST_F(ModelMetadataTest, MalformedFilesAreErrorsNamingThem) {
  std::string weights = Write("model.safetensors", absl::StrCat(U64(uint64_t{1} << 40), "{}"));
  absl::Status st = ReadError();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(HasText(st.message(), weights + ": header length"));
  fs::remove(weights);

  std::string gguf = Write("model.gguf", "GGUF\x01");
  EXPECT_TRUE(HasText(ReadError().message(), gguf + ": needs 4 bytes"));
  fs::remove(gguf);

  std::string config = Write("config.json", "{\"vocab_size\": ");
  EXPECT_TRUE(HasText(ReadError().message(), config + ": invalid JSON"));
  Write("config.json", "[1]");
  EXPECT_TRUE(HasText(ReadError().message(), config + ": a JSON array"));
}

TEST_F(ModelMetadataTest, FollowsSymlinksLikeAHuggingFaceCache) {
  Write("blobs/0a1b", Safetensors(ValidSafetensorsHeader(), 25));
  Write("blobs/2c3d", kLlamaConfig);
  fs::create_directories(fs::path(dir_) / "snapshots/abc");
  fs::create_symlink("../../blobs/0a1b", fs::path(dir_) / "snapshots/abc/model.safetensors");
  fs::create_symlink("../../blobs/2c3d", fs::path(dir_) / "snapshots/abc/config.json");
  fs::create_symlink("snapshots/abc", fs::path(dir_) / "latest");
  v1::ModelMetadata m = Read("latest");
  EXPECT_EQ(m.format(), "safetensors");
  EXPECT_EQ(m.parameter_count(), 10u);
  EXPECT_EQ(m.architecture(), "LlamaForCausalLM");

  // A link whose blob is not there yet is an error, not an empty model.
  fs::create_symlink("../../blobs/missing", fs::path(dir_) / "snapshots/abc/extra.safetensors");
  auto broken = ReadModelMetadata(dir_ + "/latest");
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(HasText(broken.status().message(), "extra.safetensors"));
}

TEST_F(ModelMetadataTest, SpecialFilesAreRefusedWithoutBlocking) {
  // Opening a FIFO for reading would wait for a writer forever.
  ASSERT_EQ(mkfifo((dir_ + "/model.safetensors").c_str(), 0600), 0);
  absl::Status st = ReadError();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(HasText(st.message(), "model.safetensors: not a regular file"));
}

TEST_F(ModelMetadataTest, MissingDirectory) {
  auto missing = ReadModelMetadata(dir_ + "/nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  std::string file = Write("file", "x");
  auto not_dir = ReadModelMetadata(file);
  ASSERT_FALSE(not_dir.ok());
  EXPECT_EQ(not_dir.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace gswarm::common
