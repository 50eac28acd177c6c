#include "scheduler/speculative/calibration.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "core/logging.h"
#include "scheduler/sequence.h"

namespace earnserve {
namespace {

using Seconds = std::chrono::duration<double>;

// Sequence ids far above any the scheduler or the drafter hands out.
constexpr int64_t kScratchId = int64_t{1} << 62;
// Keeps the scratch prompt's blocks apart from every real prompt's in the prefix cache.
constexpr uint64_t kScratchKey = 0x5eca11b7a7e5ull;

// One timed forward of `rows` prompt rows; nullopt without pages.
std::optional<double> time_forward(Executor& executor, BlockManager& block_manager, int rows,
                                   int64_t id) {
  const int64_t vocab = executor.config().vocab_size;
  Sequence seq;
  seq.kv_id = id;
  for (int i = 0; i < rows; ++i) {
    seq.tokens.push_back(static_cast<int32_t>((7919LL * (i + 1)) % std::max<int64_t>(vocab, 1)));
  }
  seq.kept.assign(seq.tokens.size(), 1);
  seq.num_prompt_tokens = rows;
  if (!block_manager.allocate(id, seq.tokens, seq.kept, kScratchKey)) return std::nullopt;
  SchedulerStep step;
  step.seqs.push_back({nullptr, &seq, 0, rows, true});
  step.num_tokens = rows;
  const auto start = std::chrono::steady_clock::now();
  StatusOr<Tensor> logits = executor.execute(step, block_manager);
  const double seconds = Seconds(std::chrono::steady_clock::now() - start).count();
  block_manager.free(id);
  if (!logits.ok()) {
    ES_LOG(Warning) << "speculation cost calibration: " << logits.status().to_string();
    return std::nullopt;
  }
  return seconds;
}

}  // namespace

CalibrationResult calibrate_forwards(Executor& executor, BlockManager& block_manager, int max_rows,
                                     const CalibrationOptions& options, StepCostTable& table) {
  ES_CHECK(!executor.leads_workers()) << "calibration runs on a single rank";
  CalibrationResult result;
  const auto begin = std::chrono::steady_clock::now();
  auto elapsed = [&] { return Seconds(std::chrono::steady_clock::now() - begin).count(); };
  int64_t id = kScratchId;
  // Untimed: first-touch allocations, thread pools, device warm-up.
  if (!time_forward(executor, block_manager, 1, id++)) {
    result.seconds = elapsed();
    return result;
  }
  ++result.num_forwards;
  double last_seconds = 0;
  int last_rows = 0;
  for (int rows : options.rows) {
    if (rows > max_rows) break;
    // A forward costs at least its rows' share of the last one's time.
    const double guess = last_rows > 0 ? last_seconds * rows / last_rows : 0.0;
    if (elapsed() + guess * options.repeats > options.budget_seconds) break;
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r < options.repeats; ++r) {
      std::optional<double> s = time_forward(executor, block_manager, rows, id++);
      if (!s) break;
      ++result.num_forwards;
      best = std::min(best, *s);
    }
    if (best == std::numeric_limits<double>::infinity()) break;
    table.calibrate(rows, best);
    result.max_rows = rows;
    last_seconds = best;
    last_rows = rows;
  }
  result.seconds = elapsed();
  return result;
}

}  // namespace earnserve
