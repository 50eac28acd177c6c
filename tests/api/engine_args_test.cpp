// The shared engine options of the CLI (api/cli/engine_args.h): --device.
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

}  // namespace
}  // namespace earnserve::cli
