// Start-up calibration of the speculation cost model: times a few forwards of a model at a few
// row counts, appended to a prompt-like context, on a scratch sequence (its own KV pages, freed
// afterwards, never entered in the prefix cache) and records them in a StepCostTable
// (speculation_cost_model.h). It stops before a forward that would take it past its time budget, so
// that start-up stays short whatever the model. Runs on the engine thread (it drives the executor);
// not thread-safe.
#pragma once

#include <vector>

#include "cache/block_manager.h"
#include "scheduler/executor/executor.h"
#include "scheduler/speculative/speculation_cost_model.h"

namespace earnserve {

struct CalibrationOptions {
  std::vector<int> rows = {1, 8, 32, 128, 512};  // ascending; larger than max_rows are skipped
  int repeats = 2;                               // the fastest of these is recorded
  int context_tokens = 128;     // computed first: the timed rows attend it, as decode rows do
  double budget_seconds = 0.6;  // target and draft together
};

struct CalibrationResult {
  double seconds = 0;  // wall time spent, the untimed warm-up forward included
  int num_forwards = 0;
  int max_rows = 0;  // the largest row count measured (0: none)
};

// Times forwards of `executor` over 1 .. `max_rows` rows into `table`. A row count the block
// manager has no pages for ends the calibration. REQUIRES: the executor does not lead
// tensor-parallel workers (they would have to run the same forwards).
CalibrationResult calibrate_forwards(Executor& executor, BlockManager& block_manager, int max_rows,
                                     const CalibrationOptions& options, StepCostTable& table);

}  // namespace earnserve
