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

// A scratch sequence: `context` tokens computed (untimed), to which each timed forward appends
// its rows, as a decode step's or a drafted tree's rows attend a prompt.
class Scratch {
 public:
  Scratch(Executor& executor, BlockManager& block_manager, int64_t id)
      : executor_(executor), block_manager_(block_manager) {
    seq_.kv_id = id;
  }
  ~Scratch() {
    if (allocated_) block_manager_.free(seq_.kv_id);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  // Computes the context; false without pages or on a failed forward.
  bool prefill(int context) {
    append_tokens(context);
    if (!block_manager_.allocate(seq_.kv_id, seq_.tokens, seq_.kept, kScratchKey)) return false;
    allocated_ = true;
    seq_.num_prompt_tokens = context;
    return run(0, context).has_value();
  }
  // One timed forward of `rows` rows after the context; nullopt without pages or on a failure.
  std::optional<double> time_rows(int rows) {
    const int context = static_cast<int>(seq_.tokens.size());
    const std::span<const int32_t> added = append_tokens(rows);
    if (!block_manager_.append_slots(seq_.kv_id, added, std::vector<uint8_t>(added.size(), 1))) {
      seq_.truncate(context);
      return std::nullopt;
    }
    const auto start = std::chrono::steady_clock::now();
    const bool ok = run(context, rows).has_value();
    const double seconds = Seconds(std::chrono::steady_clock::now() - start).count();
    block_manager_.truncate(seq_.kv_id, context);
    seq_.truncate(context);
    return ok ? std::optional<double>(seconds) : std::nullopt;
  }

 private:
  std::span<const int32_t> append_tokens(int n) {
    const int64_t vocab = std::max<int64_t>(executor_.config().vocab_size, 1);
    const size_t first = seq_.tokens.size();
    for (int i = 0; i < n; ++i) {
      seq_.tokens.push_back(static_cast<int32_t>((7919LL * (first + i + 1)) % vocab));
      seq_.kept.push_back(1);
    }
    return std::span<const int32_t>(seq_.tokens).subspan(first);
  }
  std::optional<Tensor> run(int start, int count) {
    SchedulerStep step;
    step.seqs.push_back({nullptr, &seq_, start, count, true});
    step.num_tokens = count;
    StatusOr<Tensor> logits = executor_.execute(step, block_manager_);
    if (!logits.ok()) {
      ES_LOG(Warning) << "speculation cost calibration: " << logits.status().to_string();
      return std::nullopt;
    }
    return std::move(logits).value();
  }

  Executor& executor_;
  BlockManager& block_manager_;
  Sequence seq_;
  bool allocated_ = false;
};

}  // namespace

CalibrationResult calibrate_forwards(Executor& executor, BlockManager& block_manager, int max_rows,
                                     const CalibrationOptions& options, StepCostTable& table) {
  ES_CHECK(!executor.leads_workers()) << "calibration runs on a single rank";
  CalibrationResult result;
  const auto begin = std::chrono::steady_clock::now();
  auto elapsed = [&] { return Seconds(std::chrono::steady_clock::now() - begin).count(); };
  // Untimed: the context, first-touch allocations, thread pools, device warm-up.
  const int model_len = static_cast<int>(executor.config().max_position_embeddings);
  const int context = std::max(1, std::min(options.context_tokens, model_len - max_rows - 1));
  Scratch scratch(executor, block_manager, kScratchId);
  if (!scratch.prefill(context)) {
    result.seconds = elapsed();
    return result;
  }
  ++result.num_forwards;
  double last_seconds = 0;
  int last_rows = 0;
  for (int rows : options.rows) {
    if (rows > max_rows || context + rows >= model_len) break;
    // A forward costs at least its rows' share of the last one's time.
    const double guess = last_rows > 0 ? last_seconds * rows / last_rows : 0.0;
    if (elapsed() + guess * options.repeats > options.budget_seconds) break;
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r < options.repeats; ++r) {
      std::optional<double> s = scratch.time_rows(rows);
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
