#include "model/safetensors.h"

#include <gtest/gtest.h>

#include <limits>

#include "core/half.h"
#include "core/logging.h"
#include "model/weights.h"
#include "tests/model/model_test_util.h"

namespace earnserve {
namespace {

using ::earnserve::testing::RawTensor;
using ::earnserve::testing::TempDir;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(SafetensorsTest, ReadsTheTinyStoriesCheckpoint) {
  auto file = SafetensorsFile::open(testing::tinystories_dir() + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  const auto& tensors = (*file)->tensors();
  // Tied embeddings: the shared matrix is stored once, as lm_head.weight.
  ASSERT_TRUE(tensors.count("lm_head.weight"));
  EXPECT_EQ(tensors.count("model.embed_tokens.weight"), 0u);
  const Tensor& embed = tensors.at("lm_head.weight");
  EXPECT_EQ(embed.shape(), (Shape{2048, 128}));
  EXPECT_EQ(embed.dtype(), DType::kF32);
  EXPECT_EQ(tensors.at("model.layers.1.self_attn.k_proj.weight").shape(), (Shape{64, 128}));
  EXPECT_EQ(tensors.count("__metadata__"), 0u);
}

TEST(SafetensorsTest, ViewsHoldTheDataAfterTheFileIsDropped) {
  TempDir dir;
  std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -8.5f};
  std::string bf16(4, '\0');
  uint16_t h0 = float_to_bf16(0.5f), h1 = float_to_bf16(-3.0f);
  std::memcpy(bf16.data(), &h0, 2);
  std::memcpy(bf16.data() + 2, &h1, 2);
  testing::write_file(dir.file("model.safetensors"),
                      testing::safetensors_bytes({{"a", "F32", {2, 3}, testing::f32_bytes(a)},
                                                  {"b", "BF16", {2}, bf16},
                                                  {"empty", "F16", {0, 4}, ""}}));
  Tensor ta, tb;
  {
    auto file = SafetensorsFile::open(dir.file("model.safetensors"));
    ASSERT_TRUE(file.ok()) << file.status().to_string();
    ta = (*file)->tensors().at("a");
    tb = (*file)->tensors().at("b");
    EXPECT_EQ((*file)->tensors().at("empty").shape(), (Shape{0, 4}));
  }
  EXPECT_EQ(ta.shape(), (Shape{2, 3}));
  EXPECT_EQ(ta.to_float_vector(), a);
  EXPECT_EQ(tb.dtype(), DType::kBF16);
  EXPECT_EQ(tb.to_float_vector(), (std::vector<float>{0.5f, -3.0f}));
}

// A file whose bytes are `bytes`: opening it fails with a message naming the file and `problem`.
void expect_open_error(const std::string& bytes, const std::string& problem) {
  TempDir dir;
  std::string path = dir.file("model.safetensors");
  testing::write_file(path, bytes);
  auto file = SafetensorsFile::open(path);
  ASSERT_FALSE(file.ok()) << "expected: " << problem;
  const std::string& message = file.status().message();
  EXPECT_TRUE(contains(message, path)) << message;
  EXPECT_TRUE(contains(message, problem)) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(SafetensorsTest, RejectsTruncatedAndCorruptFiles) {
  std::string good =
      testing::safetensors_bytes({{"w", "F32", {4}, testing::f32_bytes({1, 2, 3, 4})}});
  expect_open_error("", "truncated");
  expect_open_error(good.substr(0, 5), "truncated");
  // The header claims more bytes than the file has.
  expect_open_error(good.substr(0, 20), "exceeds the file");
  // Data section cut short: the tensor's offsets now run past it.
  expect_open_error(good.substr(0, good.size() - 4), "outside the data section");

  std::string bad_json = "{\"w\": {\"dtype\": ";
  std::string len(8, '\0');
  len[0] = static_cast<char>(bad_json.size());
  expect_open_error(len + bad_json, "not valid JSON");
}

TEST(SafetensorsTest, RejectsInconsistentHeaders) {
  std::string four = testing::f32_bytes({1, 2, 3, 4});
  expect_open_error(testing::safetensors_bytes({{"w", "F64", {2}, four}}),
                    "unsupported dtype 'F64'");
  expect_open_error(testing::safetensors_bytes({{"w", "F32", {3}, four}}), "tensor 'w': shape [3]");
  expect_open_error(testing::safetensors_bytes({{"w", "F32", {-4}, four}}), "tensor 'w'");

  // Offsets beyond the data section.
  nlohmann::json header = {{"w", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {16, 32}}}}};
  std::string text = header.dump();
  std::string len(8, '\0');
  len[0] = static_cast<char>(text.size());
  expect_open_error(len + text + four, "outside the data section");
}

// The format does not require aligned data; a misaligned tensor is copied rather than viewed.
TEST(SafetensorsTest, ReadsMisalignedData) {
  TempDir dir;
  nlohmann::json header = {{"w", {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {0, 12}}}}};
  std::string text = header.dump();
  while ((8 + text.size()) % 4 != 2) text += ' ';
  std::string len(8, '\0');
  len[0] = static_cast<char>(text.size());
  testing::write_file(dir.file("model.safetensors"),
                      len + text + testing::f32_bytes({0.25f, -1.0f, 42.0f}));
  auto file = SafetensorsFile::open(dir.file("model.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  const Tensor& w = (*file)->tensors().at("w");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.raw_data()) % alignof(float), 0u);
  EXPECT_EQ(w.to_float_vector(), (std::vector<float>{0.25f, -1.0f, 42.0f}));
}

TEST(SafetensorsTest, MissingFileNamesThePath) {
  auto file = SafetensorsFile::open("/nonexistent/earnserve/model.safetensors");
  ASSERT_FALSE(file.ok());
  EXPECT_TRUE(contains(file.status().message(), "/nonexistent/earnserve/model.safetensors"));
}

TEST(SafetensorsTest, ReadsShardedCheckpointsThroughTheIndex) {
  TempDir dir;
  testing::write_file(dir.file("part-1.safetensors"),
                      testing::safetensors_bytes({{"x", "F32", {2}, testing::f32_bytes({1, 2})}}));
  testing::write_file(
      dir.file("part-2.safetensors"),
      testing::safetensors_bytes({{"y", "F32", {1}, testing::f32_bytes({5})},
                                  {"unlisted", "F32", {1}, testing::f32_bytes({9})}}));
  nlohmann::json index = {
      {"metadata", {{"total_size", 12}}},
      {"weight_map", {{"x", "part-1.safetensors"}, {"y", "part-2.safetensors"}}}};
  testing::write_file(dir.file("model.safetensors.index.json"), index.dump());
  auto tensors = load_safetensors_dir(dir.path());
  ASSERT_TRUE(tensors.ok()) << tensors.status().to_string();
  ASSERT_EQ(tensors->size(), 2u);
  EXPECT_EQ(tensors->at("x").tensor.to_float_vector(), (std::vector<float>{1, 2}));
  EXPECT_EQ(tensors->at("y").tensor.to_float_vector(), (std::vector<float>{5}));
  EXPECT_EQ(tensors->at("y").file, dir.file("part-2.safetensors"));

  // The index names a shard that lacks the tensor.
  index["weight_map"]["z"] = "part-1.safetensors";
  testing::write_file(dir.file("model.safetensors.index.json"), index.dump());
  auto missing = load_safetensors_dir(dir.path());
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(contains(missing.status().message(), "model.safetensors.index.json"));
  EXPECT_TRUE(contains(missing.status().message(), "'z'"));
}

TEST(SafetensorsTest, DirectoryWithoutWeightsIsAnError) {
  TempDir dir;
  auto tensors = load_safetensors_dir(dir.path());
  ASSERT_FALSE(tensors.ok());
  EXPECT_TRUE(contains(tensors.status().message(), dir.path()));
  EXPECT_TRUE(contains(tensors.status().message(), "no model.safetensors"));
}

TEST(WeightsTest, ConvertsAndChecksShapes) {
  TempDir dir;
  testing::write_file(dir.file("model.safetensors"),
                      testing::safetensors_bytes(
                          {{"m", "F32", {2, 2}, testing::f32_bytes({1.0f, 0.1f, -2.5f, 3.0f})}}));
  LoadOptions options;
  options.weight_dtype = DType::kBF16;
  auto weights = Weights::load(dir.path(), options);
  ASSERT_TRUE(weights.ok()) << weights.status().to_string();
  auto bf16 = weights->get_matrix("m", {2, 2});
  ASSERT_TRUE(bf16.ok());
  EXPECT_EQ(bf16->dtype(), DType::kBF16);
  EXPECT_EQ(bf16->item_as_float(1), bf16_to_float(float_to_bf16(0.1f)));
  auto f32 = weights->get_f32("m", {2, 2});
  ASSERT_TRUE(f32.ok());
  EXPECT_EQ(f32->to_float_vector(), (std::vector<float>{1.0f, 0.1f, -2.5f, 3.0f}));

  auto wrong = weights->get_f32("m", {4});
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().message(),
            dir.file("model.safetensors") + ": tensor 'm' has shape [2, 2], expected [4]");
  auto absent = weights->get_f32("n", {4});
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.status().message(), dir.path() + ": checkpoint has no tensor 'n'");
}

// --weight-dtype int8: linear matrices quantised per row (scale = max|row| / 127), slices of
// columns keeping their whole rows' scales; other matrices keep the checkpoint's float dtype.
TEST(WeightsTest, QuantisesLinearMatricesPerRowToInt8) {
  TempDir dir;
  const std::vector<float> m = {1.0f, -2.1f, 0.5f, 4.0f, 0.1f, 0.2f, -0.3f, 0.0f};
  testing::write_file(
      dir.file("model.safetensors"),
      testing::safetensors_bytes({{"m", "F32", {2, 4}, testing::f32_bytes(m)},
                                  {"u", "F32", {1, 4}, testing::f32_bytes({0, 0, 0, 0})}}));
  LoadOptions options;
  options.weight_dtype = DType::kI8;
  auto weights = Weights::load(dir.path(), options);
  ASSERT_TRUE(weights.ok()) << weights.status().to_string();
  auto whole = weights->get_linear("m", {2, 4});
  ASSERT_TRUE(whole.ok()) << whole.status().to_string();
  EXPECT_EQ(whole->weight.dtype(), DType::kI8);
  EXPECT_EQ(whole->scale.to_float_vector(), (std::vector<float>{4.0f / 127, 0.3f / 127}));
  EXPECT_EQ(whole->weight.to_float_vector(),
            (std::vector<float>{32, -67, 16, 127, 42, 85, -127, 0}));
  // Columns 1..2 (a row-parallel shard): the whole rows' scales.
  auto columns = weights->get_linear_columns("m", {2, 4}, 1, 3);
  ASSERT_TRUE(columns.ok()) << columns.status().to_string();
  EXPECT_EQ(columns->scale.to_float_vector(), whole->scale.to_float_vector());
  EXPECT_EQ(columns->weight.to_float_vector(), (std::vector<float>{-67, 16, 85, -127}));
  auto row = weights->get_linear_rows("m", {2, 4}, 1, 2);
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->weight.to_float_vector(), (std::vector<float>{42, 85, -127, 0}));
  auto stacked = weights->get_linear_stacked({"u", "m"}, {{1, 4}, {2, 4}});
  ASSERT_TRUE(stacked.ok()) << stacked.status().to_string();
  EXPECT_EQ(stacked->scale.to_float_vector(), (std::vector<float>{0, 4.0f / 127, 0.3f / 127}));
  EXPECT_EQ(stacked->weight.dim(0), 3);
  // An embedding table stays as stored.
  auto table = weights->get_matrix("m", {2, 4});
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->dtype(), DType::kF32);
  EXPECT_EQ(table->to_float_vector(), m);
}

TEST(WeightsTest, Int8IsCpuOnlyAndNeedsFiniteWeights) {
  TempDir dir;
  const float inf = std::numeric_limits<float>::infinity();
  testing::write_file(dir.file("model.safetensors"),
                      testing::safetensors_bytes(
                          {{"m", "F32", {2, 2}, testing::f32_bytes({1.0f, 2.0f, inf, 3.0f})}}));
  LoadOptions options;
  options.weight_dtype = DType::kI8;
  options.device = Device::kCUDA;
  auto on_gpu = Weights::load(dir.path(), options);
  ASSERT_FALSE(on_gpu.ok());
  EXPECT_TRUE(contains(on_gpu.status().message(), "--weight-dtype int8 is CPU-only"))
      << on_gpu.status().message();
  options.device = Device::kCPU;
  auto weights = Weights::load(dir.path(), options);
  ASSERT_TRUE(weights.ok());
  auto bad = weights->get_linear("m", {2, 2});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), dir.file("model.safetensors") +
                                        ": tensor 'm' has a non-finite value in row 1; it "
                                        "cannot be quantised to int8");
}

TEST(WeightsTest, StacksRowsOfSeveralTensors) {
  TempDir dir;
  testing::write_file(
      dir.file("model.safetensors"),
      testing::safetensors_bytes({{"g", "F32", {1, 2}, testing::f32_bytes({1, 2})},
                                  {"u", "F32", {2, 2}, testing::f32_bytes({3, 4, 5, 6})}}));
  auto weights = Weights::load(dir.path(), LoadOptions());
  ASSERT_TRUE(weights.ok());
  auto stacked = weights->get_stacked({"g", "u"}, {{1, 2}, {2, 2}}, DType::kF32);
  ASSERT_TRUE(stacked.ok()) << stacked.status().to_string();
  EXPECT_EQ(stacked->shape(), (Shape{3, 2}));
  EXPECT_EQ(stacked->to_float_vector(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
}

TEST(WeightsTest, LargeCheckpointsLogLoadingProgress) {
  TempDir dir;
  testing::write_file(
      dir.file("model.safetensors"),
      testing::safetensors_bytes({{"a", "F32", {2, 2}, testing::f32_bytes({1, 2, 3, 4})},
                                  {"b", "F32", {1, 2}, testing::f32_bytes({5, 6})}}));
  const LogLevel level = log_level();
  set_log_level(LogLevel::kInfo);
  LoadOptions options;
  options.progress_min_bytes = 24;  // the checkpoint's 24 bytes of tensors
  auto weights = Weights::load(dir.path(), options);
  ASSERT_TRUE(weights.ok());
  ::testing::internal::CaptureStderr();
  ASSERT_TRUE(weights->get_f32("a", {2, 2}).ok());
  ASSERT_TRUE(weights->get_f32("b", {1, 2}).ok());
  const std::string logged = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(contains(logged, "loading " + dir.path() + ": 0.0 of 0.0 GiB of weights (100%)"))
      << logged;

  options.progress_min_bytes = 25;  // one byte more than the checkpoint: nothing to report
  auto small = Weights::load(dir.path(), options);
  ASSERT_TRUE(small.ok());
  ::testing::internal::CaptureStderr();
  ASSERT_TRUE(small->get_f32("a", {2, 2}).ok());
  ASSERT_TRUE(small->get_f32("b", {1, 2}).ok());
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  set_log_level(level);
}

}  // namespace
}  // namespace earnserve
