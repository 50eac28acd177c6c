// The shared engine options of the CLI (api/cli/engine_args.h): --device, --weight-dtype, flags.
#include "api/cli/engine_args.h"

#include <gtest/gtest.h>

#include "core/device.h"

namespace earnserve::cli {
namespace {

StatusOr<EngineOptions> options(std::vector<std::string> extra) {
  std::vector<std::string> args = {"--model", "m"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto parsed = CliArgs::parse(args, engine_value_options(), engine_flag_options());
  if (!parsed.ok()) return parsed.status();
  return engine_options_from_args(*parsed);
}

TEST(EngineArgsDeviceTest, CpuByDefaultAndByName) {
  auto o = options({});
  ASSERT_TRUE(o.ok()) << o.status().to_string();
  EXPECT_EQ(o->device, Device::kCPU);
  o = options({"--device", "cpu"});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->device, Device::kCPU);
}

TEST(EngineArgsDeviceTest, MalformedDevicesNameTheForms) {
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1x", "CUDA"}) {
    auto o = options({"--device", bad});
    ASSERT_FALSE(o.ok()) << bad;
    EXPECT_NE(o.status().message().find("cpu, cuda or cuda:N"), std::string::npos)
        << o.status().message();
  }
}

TEST(EngineArgsDeviceTest, CudaNeedsAVisibleGpu) {
  auto o = options({"--device", "cuda:99"});
  ASSERT_FALSE(o.ok());
  const std::string m = o.status().message();
  EXPECT_NE(m.find("--device cuda:99"), std::string::npos) << m;
  EXPECT_TRUE(m.find("without CUDA") != std::string::npos ||
              m.find("does not exist") != std::string::npos)
      << m;
  o = options({"--device", "cuda"});
  if (cuda_device_count() == 0) {
    ASSERT_FALSE(o.ok());
    EXPECT_NE(o.status().message().find("--device cuda"), std::string::npos);
  } else {
    ASSERT_TRUE(o.ok()) << o.status().to_string();
    EXPECT_EQ(o->device, Device::kCUDA);
    EXPECT_EQ(o->cuda_device, 0);
  }
}

TEST(EngineArgsWeightDtypeTest, AcceptsF32Bf16AndInt8) {
  auto o = options({});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->weight_dtype, DType::kF32);
  for (const auto& [text, dtype] : std::vector<std::pair<std::string, DType>>{
           {"f32", DType::kF32}, {"bf16", DType::kBF16}, {"int8", DType::kI8}}) {
    o = options({"--weight-dtype", text});
    ASSERT_TRUE(o.ok()) << text << ": " << o.status().to_string();
    EXPECT_EQ(o->weight_dtype, dtype) << text;
    EXPECT_EQ(weight_dtype_option(dtype), text);
  }
}

TEST(EngineArgsWeightDtypeTest, AnUnknownDtypeListsTheSupportedOnes) {
  auto o = options({"--weight-dtype", "int4"});
  ASSERT_FALSE(o.ok());
  EXPECT_EQ(o.status().message(),
            "--weight-dtype must be f32, bf16 or int8 (CPU only), got 'int4'");
}

TEST(EngineArgsFlagsTest, ForcedTokensAreSkippedUnlessTurnedOff) {
  auto o = options({});
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(o->skip_forced_tokens);
  o = options({"--no-skip-forced-tokens"});
  ASSERT_TRUE(o.ok()) << o.status().to_string();
  EXPECT_FALSE(o->skip_forced_tokens);
}

}  // namespace
}  // namespace earnserve::cli
