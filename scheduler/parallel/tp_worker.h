// A tensor-parallel worker: rank r >= 1 of the group that an Engine (rank 0) leads
// (scheduler/parallel/tp_leader.h). It connects to rank 0's control channel, then builds its
// Executor (scheduler/executor/executor.h) as rank r: it joins the communicator, loads its shard
// of the model (model/tensor_parallel.h) and sizes its KV pages with the same options as rank 0
// (scheduler/executor/kv_layout.h, so block ids mean the same pages). It reports what it loaded,
// then runs the forward of every step rank 0 sends, discarding the logits (rank 0 samples).
//
// It returns OK when rank 0 says shutdown and an error when anything fails: rank 0 going away
// (its connection closes, or TCP keepalive gives up on its host), a collective failing or timing
// out, a malformed message. Failures are also sent to rank 0 when the connection still works.
// Runs on the calling thread; one worker per process.
#pragma once

#include "core/status.h"
#include "scheduler/executor/executor_options.h"

namespace earnserve {

// `options`: rank 0's executor options (the ExecutorOptions part of its EngineOptions).
// REQUIRES: 1 <= rank < options.tensor_parallel.size.
Status run_tp_worker(const ExecutorOptions& options, int rank);

}  // namespace earnserve
