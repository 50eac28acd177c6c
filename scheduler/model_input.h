// Turns a scheduled step into the model's ForwardBatch: the step's tokens flattened in schedule
// order, their positions, and for each KV group the slot mapping, block tables, KV lengths and
// query offsets read from the block manager. Stateless; runs on the engine thread.
#pragma once

#include "cache/block_manager.h"
#include "model/forward_batch.h"
#include "scheduler/scheduler.h"

namespace earnserve {

struct ModelInput {
  ForwardBatch batch;
  int num_logits = 0;
};

// REQUIRES: every scheduled sequence holds slots for its tokens (Scheduler::schedule did that).
ModelInput build_model_input(const SchedulerStep& step, const BlockManager& block_manager,
                             int num_layers, Device device);

}  // namespace earnserve
