// attention_bench: one decode step of beam search through ops::paged_attention. W beams share a
// 500-token prompt and hold 4 private tokens each (the last is this step's query); 16 query heads
// over 4 KV heads of dim 64, block size 16. The prompt's 31 full blocks are the shared prefix
// (496 entries); its last 4 tokens sit in each beam's own, copied block with the private ones.
//
// Each width is timed twice in the same run on the same inputs: with the shared prefix (pages
// read once per KV head for all beams) and plain (every beam reads the prompt itself), the
// baseline. Each figure is the best of --repeats calls after one untimed warm-up, the device
// synchronised inside the timed region; best-of because other processes share the cores. The
// two outputs are compared and their largest difference printed.
//
// One JSON line per width:
//   {"bench":"beam_attention","width":W,"shared_ms":..,"plain_ms":..,"speedup":..,
//    "shared_ms_per_beam_ratio_to_w1":..,"max_abs_diff":..}
// shared_ms_per_beam_ratio_to_w1 = (shared_ms / W) / shared_ms(W = 1): below 1 when widening
// costs less per beam than a lone beam does.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/cli_args.h"
#include "core/device.h"
#include "core/threading.h"
#include "kernels/ops.h"

namespace earnserve {
namespace {

constexpr const char* kHelp =
    "usage: attention_bench [options]\n"
    "  --widths W1,W2,..   beam widths (default 1,8,64,256,512)\n"
    "  --device D          cpu | cuda (default cpu)\n"
    "  --threads T         worker threads on the CPU (default: all cores)\n"
    "  --repeats R         timed calls per case; the best is reported (default 5)\n";

constexpr int64_t kPromptLen = 500;
constexpr int64_t kPrivateLen = 4;
constexpr int64_t kNumHeads = 16;
constexpr int64_t kNumKvHeads = 4;
constexpr int64_t kHeadDim = 64;
constexpr int64_t kBlockSize = 16;

using Clock = std::chrono::steady_clock;

std::vector<float> random_floats(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(gen);
  return v;
}

Tensor on(Device device, const Tensor& t) {
  StatusOr<Tensor> moved = t.to(device);
  ES_CHECK(moved.ok()) << moved.status().to_string();
  return std::move(moved).value();
}

// The step's inputs for W beams: shared blocks [0, 31), beam b's own block 31 + b.
struct BeamStep {
  ops::PagedAttentionArgs shared;  // with seq_prefix / prefix_lens
  ops::PagedAttentionArgs plain;   // the same without them
  Tensor out_shared;               // [W, kNumHeads, kHeadDim]
  Tensor out_plain;
};

BeamStep make_step(int64_t width, Device device) {
  const int64_t shared_blocks = kPromptLen / kBlockSize;
  const int64_t seq_len = kPromptLen + kPrivateLen;
  const int64_t blocks_per_seq = (seq_len + kBlockSize - 1) / kBlockSize;
  ES_CHECK(blocks_per_seq == shared_blocks + 1) << "attention_bench: layout assumes one own block";
  const int64_t num_blocks = shared_blocks + width;
  const Shape cache_shape = {num_blocks, kBlockSize, kNumKvHeads, kHeadDim};
  const int64_t cache_numel = shape_numel(cache_shape);
  std::vector<int32_t> tables, qsl = {0};
  for (int64_t b = 0; b < width; ++b) {
    for (int64_t j = 0; j < shared_blocks; ++j) tables.push_back(static_cast<int32_t>(j));
    tables.push_back(static_cast<int32_t>(shared_blocks + b));
    qsl.push_back(static_cast<int32_t>(b + 1));
  }
  BeamStep step;
  ops::PagedAttentionArgs& a = step.plain;
  a.query = on(device, Tensor::from_vector(random_floats(width * kNumHeads * kHeadDim, 1),
                                           {width, kNumHeads, kHeadDim}));
  a.key_cache = on(device, Tensor::from_vector(random_floats(cache_numel, 2), cache_shape));
  a.value_cache = on(device, Tensor::from_vector(random_floats(cache_numel, 3), cache_shape));
  a.block_tables = on(device, Tensor::from_vector(tables, {width, blocks_per_seq}));
  a.seq_lens =
      on(device, Tensor::from_vector(std::vector<int32_t>(static_cast<size_t>(width), seq_len)));
  a.query_start_loc = on(device, Tensor::from_vector(qsl));
  a.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  step.shared = a;
  step.shared.seq_prefix =
      on(device, Tensor::from_vector(std::vector<int32_t>(static_cast<size_t>(width), 0)));
  step.shared.prefix_lens = on(
      device,
      Tensor::from_vector(std::vector<int32_t>{static_cast<int32_t>(shared_blocks * kBlockSize)}));
  step.out_shared = Tensor::zeros(a.query.shape(), DType::kF32, device).value();
  step.out_plain = Tensor::zeros(a.query.shape(), DType::kF32, device).value();
  return step;
}

// Best wall time of `repeats` calls, in milliseconds, after one warm-up call.
double best_ms(const ops::PagedAttentionArgs& args, Tensor& out, Device device, int64_t repeats) {
  ops::paged_attention(args, out);
  ES_CHECK(device_synchronize(device).ok());
  double best = std::numeric_limits<double>::infinity();
  for (int64_t r = 0; r < repeats; ++r) {
    const Clock::time_point start = Clock::now();
    ops::paged_attention(args, out);
    ES_CHECK(device_synchronize(device).ok());
    best = std::min(best, std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  return best;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = on(Device::kCPU, a).to_float_vector();
  const std::vector<float> y = on(Device::kCPU, b).to_float_vector();
  double diff = 0.0;
  for (size_t i = 0; i < x.size(); ++i) diff = std::max(diff, std::fabs(double(x[i]) - y[i]));
  return diff;
}

int run(int argc, char** argv) {
  std::vector<std::string> raw(argv + 1, argv + argc);
  StatusOr<cli::CliArgs> parsed =
      cli::CliArgs::parse(raw, {"--widths", "--device", "--threads", "--repeats"}, {"--help"});
  if (!parsed.ok() || parsed.value().flag("--help")) {
    if (!parsed.ok())
      std::fprintf(stderr, "attention_bench: %s\n", parsed.status().to_string().c_str());
    std::fputs(kHelp, stderr);
    return parsed.ok() ? 0 : 2;
  }
  const cli::CliArgs& cli_args = parsed.value();
  const std::string device_name = cli_args.get_or("--device", "cpu");
  if (device_name != "cpu" && device_name != "cuda") {
    std::fprintf(stderr, "attention_bench: --device must be cpu or cuda, got %s\n",
                 device_name.c_str());
    return 2;
  }
  const Device device = device_name == "cuda" ? Device::kCUDA : Device::kCPU;
  if (device == Device::kCUDA && !cuda_available()) {
    std::fprintf(stderr, "attention_bench: --device cuda but no CUDA device in this build\n");
    return 2;
  }
  StatusOr<int64_t> threads = cli_args.get_int("--threads", 0);
  StatusOr<int64_t> repeats = cli_args.get_int("--repeats", 5);
  if (!threads.ok() || !repeats.ok() || repeats.value() < 1 || threads.value() < 0) {
    std::fprintf(stderr, "attention_bench: --threads and --repeats take positive integers\n");
    return 2;
  }
  if (threads.value() > 0) set_num_threads(static_cast<int>(threads.value()));
  std::vector<int64_t> widths;
  const std::string list = cli_args.get_or("--widths", "1,8,64,256,512");
  for (size_t pos = 0; pos <= list.size();) {
    const size_t comma = std::min(list.find(',', pos), list.size());
    const std::string item = list.substr(pos, comma - pos);
    char* end = nullptr;
    const long long w = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || w < 1) {
      std::fprintf(stderr, "attention_bench: --widths: '%s' is not a positive integer\n",
                   item.c_str());
      return 2;
    }
    widths.push_back(w);
    pos = comma + 1;
  }

  double shared_ms_w1 = 0.0;
  for (int64_t width : widths) {
    BeamStep step = make_step(width, device);
    const double shared_ms = best_ms(step.shared, step.out_shared, device, repeats.value());
    const double plain_ms = best_ms(step.plain, step.out_plain, device, repeats.value());
    // The ratio needs the lone beam's time; measure it when W = 1 was not asked first.
    if (shared_ms_w1 == 0.0) {
      BeamStep one = width == 1 ? BeamStep() : make_step(1, device);
      shared_ms_w1 =
          width == 1 ? shared_ms : best_ms(one.shared, one.out_shared, device, repeats.value());
    }
    std::printf(
        "{\"bench\":\"beam_attention\",\"device\":\"%s\",\"width\":%lld,\"shared_ms\":%.4f,"
        "\"plain_ms\":%.4f,\"speedup\":%.3f,\"shared_ms_per_beam_ratio_to_w1\":%.4f,"
        "\"max_abs_diff\":%.3g}\n",
        device_name.c_str(), static_cast<long long>(width), shared_ms, plain_ms,
        plain_ms / shared_ms, shared_ms / static_cast<double>(width) / shared_ms_w1,
        max_abs_diff(step.out_shared, step.out_plain));
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace earnserve

int main(int argc, char** argv) { return earnserve::run(argc, argv); }
