#include "model/config.h"

#include <gtest/gtest.h>

#include <cmath>

#include "model/rope.h"
#include "tests/model/model_test_util.h"

namespace earnserve {
namespace {

using ::earnserve::testing::TempDir;
using Json = nlohmann::json;

Json base_config() {
  return Json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 1000,
    "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
    "num_attention_heads": 8, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5
  })");
}

TEST(ModelConfigTest, ReadsTinyStoriesConfig) {
  StatusOr<ModelConfig> c = load_model_config(testing::tinystories_dir());
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->vocab_size, 2048);
  EXPECT_EQ(c->hidden_size, 128);
  EXPECT_EQ(c->intermediate_size, 384);
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->num_attention_heads, 8);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->rope.type, RopeType::kDefault);
  EXPECT_EQ(c->rope.theta, 10000.0);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(c->torch_dtype, "float32");
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
}

TEST(ModelConfigTest, ReadsTransformers5RopeParametersAndEosList) {
  StatusOr<ModelConfig> c = load_model_config(testing::fixture_model_dir("tiny-llama3-bf16"));
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->head_dim, 32);  // explicit, not hidden / heads = 16
  EXPECT_EQ(c->rope.type, RopeType::kLlama3);
  EXPECT_EQ(c->rope.theta, 500000.0);
  EXPECT_EQ(c->rope.factor, 8.0);
  EXPECT_EQ(c->rope.low_freq_factor, 1.0);
  EXPECT_EQ(c->rope.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope.original_max_position_embeddings, 64);
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_TRUE(c->o_proj_bias);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(c->torch_dtype, "bfloat16");
}

TEST(ModelConfigTest, Qwen2AlwaysHasQkvBiasButNoOutputBias) {
  StatusOr<ModelConfig> c = load_model_config(testing::fixture_model_dir("tiny-qwen2"));
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_FALSE(c->o_proj_bias);
  EXPECT_FALSE(c->tie_word_embeddings);
}

TEST(ModelConfigTest, DefaultsKvHeadsHeadDimAndRope) {
  StatusOr<ModelConfig> c = parse_model_config(base_config(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->rope.type, RopeType::kDefault);
  EXPECT_EQ(c->rope.theta, 10000.0);
  EXPECT_EQ(c->bos_token_id, -1);
  EXPECT_TRUE(c->eos_token_ids.empty());
}

TEST(ModelConfigTest, ReadsLegacyRopeScalingWithTypeKey) {
  Json j = base_config();
  j["rope_theta"] = 500000.0;
  j["rope_scaling"] = {{"type", "llama3"},
                       {"factor", 32.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  StatusOr<ModelConfig> c = parse_model_config(j, "config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->rope.type, RopeType::kLlama3);
  EXPECT_EQ(c->rope.factor, 32.0);
  EXPECT_EQ(c->rope.theta, 500000.0);
  EXPECT_EQ(c->rope.original_max_position_embeddings, 8192);
}

TEST(ModelConfigTest, KeepsRawJsonForLaterFeatures) {
  Json j = base_config();
  j["speculative"] = {{"num_draft_beams", 40}};
  StatusOr<ModelConfig> c = parse_model_config(j, "config.json");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->raw.at("speculative").at("num_draft_beams").get<int>(), 40);
  EXPECT_FALSE(c->earn.has_value());
}

TEST(ModelConfigTest, ReadsTheEarnObject) {
  Json j = base_config();
  const int layers = j["num_hidden_layers"].get<int>();
  j["earn"] = {{"split_layer", 1}, {"prefix_register_ids", {5, 6}}, {"suffix_register_ids", {7}}};
  StatusOr<ModelConfig> c = parse_model_config(j, "config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  ASSERT_TRUE(c->earn.has_value());
  EXPECT_EQ(c->earn->split_layer, 1);
  EXPECT_EQ(c->earn->prefix_register_ids, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(c->earn->suffix_register_ids, (std::vector<int32_t>{7}));

  for (Json bad :
       {Json{{"split_layer", 0}, {"prefix_register_ids", {5}}, {"suffix_register_ids", {7}}},
        Json{{"split_layer", layers}, {"prefix_register_ids", {5}}, {"suffix_register_ids", {7}}},
        Json{{"split_layer", 1}, {"prefix_register_ids", {-1}}, {"suffix_register_ids", {7}}},
        Json{{"split_layer", 1},
             {"prefix_register_ids", Json::array()},
             {"suffix_register_ids", Json::array()}},
        Json{{"split_layer", 1}, {"suffix_register_ids", {7}}},
        Json{{"split_layer", 1}, {"prefix_register_ids", {5, 5}}, {"suffix_register_ids", {7}}},
        Json{{"split_layer", 1}, {"prefix_register_ids", {5, 6}}, {"suffix_register_ids", {6}}},
        Json{{"split_layer", 1},
             {"prefix_register_ids", {5}},
             {"suffix_register_ids", {j["vocab_size"].get<int>()}}}}) {
    j["earn"] = bad;
    StatusOr<ModelConfig> e = parse_model_config(j, "config.json");
    ASSERT_FALSE(e.ok()) << bad.dump();
    EXPECT_NE(e.status().message().find("config.json: field 'earn."), std::string::npos)
        << e.status().message();
  }
}

// Each broken field gives an error naming the source and the field.
TEST(ModelConfigTest, BadFieldsNameTheFileAndTheField) {
  struct Case {
    const char* field;
    Json value;  // null: remove the field
  };
  const Case cases[] = {
      {"hidden_size", nullptr},
      {"vocab_size", "big"},
      {"num_hidden_layers", 0},
      {"num_key_value_heads", 3},
      {"rms_norm_eps", "small"},
      {"tie_word_embeddings", 1},
      {"architectures", Json::array()},
      {"hidden_act", "gelu"},
      {"eos_token_id", Json::array({1, "x"})},
  };
  for (const Case& test_case : cases) {
    Json j = base_config();
    if (test_case.value.is_null()) {
      j.erase(test_case.field);
    } else {
      j[test_case.field] = test_case.value;
    }
    StatusOr<ModelConfig> c = parse_model_config(j, "/m/config.json");
    ASSERT_FALSE(c.ok()) << test_case.field;
    EXPECT_NE(c.status().message().find("/m/config.json"), std::string::npos)
        << c.status().message();
    EXPECT_NE(c.status().message().find(test_case.field), std::string::npos)
        << c.status().message();
  }
}

// Found by tests/fuzz/config_fuzzer: a float too large for int64_t was converted (undefined).
TEST(ModelConfigTest, RejectsIntegerFieldsOutsideInt64AsFloats) {
  for (double value : {1e300, -1e300, 9223372036854775808.0}) {
    Json j = base_config();
    j["vocab_size"] = value;
    StatusOr<ModelConfig> c = parse_model_config(j, "/m/config.json");
    ASSERT_FALSE(c.ok()) << value;
    EXPECT_NE(c.status().message().find("/m/config.json: field 'vocab_size'"), std::string::npos)
        << c.status().message();
  }
  Json j = base_config();
  j["vocab_size"] = 1000.0;
  StatusOr<ModelConfig> c = parse_model_config(j, "config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->vocab_size, 1000);
}

TEST(ModelConfigTest, RejectsUnsupportedRopeType) {
  Json j = base_config();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  StatusOr<ModelConfig> c = parse_model_config(j, "config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("rope_scaling.rope_type"), std::string::npos);
  EXPECT_NE(c.status().message().find("yarn"), std::string::npos);
}

TEST(ModelConfigTest, Llama3RopeNeedsItsFactors) {
  Json j = base_config();
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}};
  StatusOr<ModelConfig> c = parse_model_config(j, "config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("original_max_position_embeddings"), std::string::npos);
}

TEST(ModelConfigTest, MissingDirectoryAndBadJsonAreClearErrors) {
  StatusOr<ModelConfig> missing = load_model_config("/nonexistent/earnserve/model");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/earnserve/model"), std::string::npos);

  TempDir dir;
  testing::write_file(dir.file("config.json"), "{\"architectures\": [");
  StatusOr<ModelConfig> bad = load_model_config(dir.path());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), dir.file("config.json") + ": not valid JSON");
}

TEST(RopeTest, DefaultInvFreqFollowsTheta) {
  RopeConfig rope;
  rope.theta = 10000.0;
  std::vector<float> f = rope_inv_freq(rope, 16);
  ASSERT_EQ(f.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(f[i], std::pow(10000.0, -2.0 * i / 16), 1e-6 * std::pow(10000.0, -2.0 * i / 16));
  }
}

// The llama3 fixture's frequencies hit all three branches (kept, smoothed, divided by factor).
TEST(RopeTest, Llama3InvFreqMatchesTransformers) {
  testing::LogitsFixture fixture = testing::load_logits_fixture("tiny-llama3-bf16");
  ASSERT_FALSE(fixture.doc.is_null());
  StatusOr<ModelConfig> c = load_model_config(fixture.model_dir);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  std::vector<float> expected = fixture.doc.at("inv_freq").get<std::vector<float>>();
  std::vector<float> actual = rope_inv_freq(c->rope, c->head_dim);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_NEAR(actual[i], expected[i], 1e-6 * expected[i]) << "inv_freq[" << i << "]";
  }
  RopeConfig unscaled = c->rope;
  unscaled.type = RopeType::kDefault;
  std::vector<float> plain = rope_inv_freq(unscaled, c->head_dim);
  EXPECT_EQ(actual[0], plain[0]);                       // short wavelength: kept
  EXPECT_NEAR(actual.back(), plain.back() / 8, 1e-12);  // long wavelength: divided by factor
  EXPECT_LT(actual[2], plain[2]);                       // medium: smoothed in between
  EXPECT_GT(actual[2], plain[2] / 8);
}

}  // namespace
}  // namespace earnserve
