// Engine: the serving loop. It owns the executor (the model and its KV storage,
// scheduler/executor/executor.h), the tokenizer, the block manager, the scheduler and the output
// side; each step() schedules a batch (Scheduler), runs the model once over it through the
// executor, then turns the logits into tokens (TokenSelector, scheduler/token_selector.h) and the
// tokens into text, stop decisions and stream outputs (OutputProcessor,
// scheduler/output_processor.h). With a draft model (EngineOptions::draft_model_dir) beam
// requests may ask for speculative beam search (SamplingParams::speculative): see
// scheduler/speculative/speculative_round.h and scheduler/speculative/beam_drafter.h.
//
// Two ways to drive it:
//  - offline / tests: add_request() then step() until !has_unfinished() (one thread);
//  - serving: start() runs step() on an engine thread; submit() and abort() may be called from
//    any thread: they go through a thread-safe queue that the engine thread drains each step.
// The scheduler and the cache are touched only by the engine thread.
//
// Tensor parallelism (EngineOptions::tensor_parallel, size > 1): this engine is rank 0. It holds
// its own shard of the model and its executor sends each step's inputs to the worker ranks
// (scheduler/parallel/tp_leader.h, scheduler/parallel/tp_worker.h), which run the same forward;
// only rank 0 samples. A worker that dies or stops answering fails the engine for good:
// in-flight and later requests end with UNAVAILABLE, health() reports it and the failure
// callback runs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cache/block_manager.h"
#include "model/tokenizer/tokenizer.h"
#include "scheduler/executor/executor.h"
#include "scheduler/executor/executor_options.h"
#include "scheduler/output_processor.h"
#include "scheduler/parallel/tp_options.h"
#include "scheduler/request.h"
#include "scheduler/scheduler.h"
#include "scheduler/speculative/beam_drafter.h"
#include "scheduler/speculative/speculative_round.h"
#include "scheduler/token_selector.h"

namespace earnserve {

// The executor's options (the model, its device and KV pages, tensor parallelism across processes
// with this engine as rank 0: scheduler/executor/executor_options.h; every tensor-parallel rank
// runs with the same ones) and the engine's own.
struct EngineOptions : ExecutorOptions {
  int max_num_seqs = 256;
  int max_num_batched_tokens = 2048;
  int max_model_len = 0;  // 0: the model's max_position_embeddings
  bool enable_prefix_caching = true;
  bool enable_chunked_prefill = true;
  // Beams scoring over the catalogue whose remaining tokens are all forced (one allowed token at
  // each step to the end of their item) take them without a forward (scheduler/token_selector.h).
  // Off: every beam runs every step (the same results; for measuring what it saves).
  bool skip_forced_tokens = true;
  // Speculative beam search: the draft model's checkpoint (its tokenizer vocabulary must equal
  // the target's) and the memory of its own KV cache (0 = kv_cache_memory_bytes / 4).
  std::string draft_model_dir;
  int64_t draft_kv_cache_memory_bytes = 0;
};

// Counters and gauges for metrics; a consistent snapshot taken on the engine thread.
struct EngineStats {
  int num_running = 0;
  int num_waiting = 0;
  double kv_usage = 0.0;
  double draft_kv_usage = 0.0;  // the draft model's KV (speculative beam search), 0 without
  int64_t num_preemptions = 0;
  int64_t prefix_cache_queries = 0;  // tokens looked up
  int64_t prefix_cache_hits = 0;     // tokens found
  int64_t num_prompt_tokens = 0;
  int64_t num_generation_tokens = 0;
  int64_t num_forced_tokens = 0;  // beam tokens taken without a forward (forced to an item's end)
  int64_t num_steps = 0;
  int64_t num_spec_rounds = 0;          // speculative draft-then-verify rounds
  int64_t num_spec_accepted_steps = 0;  // beam steps the draft proposed and the target kept
  int64_t num_target_calls = 0;         // target model forward passes
  int64_t num_draft_calls = 0;          // draft model forward passes
  // Policy auto: speculative requests' beam steps without a tree, by reason (the cost model
  // predicted the plain step faster; no tree fitted).
  int64_t num_spec_plain_steps_cost = 0;
  int64_t num_spec_plain_steps_no_room = 0;
  std::vector<int> num_blocks_per_group;
  std::vector<int> block_size_per_group;  // tokens per block in each group's pages
};

class Engine {
 public:
  static StatusOr<std::unique_ptr<Engine>> create(const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ModelConfig& model_config() const { return executor_->config(); }
  const EngineOptions& options() const { return options_; }
  int max_model_len() const { return max_model_len_; }
  // The draft model of speculative beam search, or null when none is loaded.
  const BeamDrafter* drafter() const { return drafter_.get(); }
  // Speculative rounds and the speculation policy's measurements, or null without a draft model.
  const SpeculativeRounds* speculative() const { return speculative_.get(); }
  // What the start-up calibration of the speculation cost model did (zeros without a draft).
  const CalibrationResult& speculation_calibration() const { return calibration_; }

  // Checks a request against the engine's limits (prompt length, params, catalogue).
  Status validate(const EngineRequest& request) const;

  // --- Offline use (the calling thread is the engine thread). ---
  StatusOr<std::shared_ptr<RequestStream>> add_request(EngineRequest request);
  void abort_request(const std::string& request_id);
  // Runs one model step; returns false when there was nothing to do.
  StatusOr<bool> step();
  bool has_unfinished() const { return scheduler_->has_work(); }
  // Runs the given requests to completion and returns their final outputs in order.
  // `on_progress`, when set, is called after each step with how many of them have finished.
  StatusOr<std::vector<RequestOutput>> generate(
      std::vector<EngineRequest> requests,
      const std::function<void(size_t num_finished)>& on_progress = nullptr);

  // --- Serving (thread-safe). ---
  void start();
  // Stops the engine thread after the current step; waiting requests are aborted.
  void stop();
  StatusOr<std::shared_ptr<RequestStream>> submit(EngineRequest request);
  void abort(const std::string& request_id);
  EngineStats stats() const;
  // OK while the engine can serve; after a tensor-parallel failure, the UNAVAILABLE status that
  // failed it (permanent). Thread-safe.
  Status health() const;
  // Runs once, on the engine thread, when the engine fails for good. Set before start().
  void set_failure_callback(std::function<void(const Status&)> callback) {
    failure_callback_ = std::move(callback);
  }

 private:
  Engine() = default;
  void loop();
  void drain_inbox();
  Status enqueue(EngineRequest request, std::shared_ptr<RequestStream> stream);
  // Ends every request with `status` (engine failure or shutdown).
  void fail_all(const Status& status);
  Status run_model(const SchedulerStep& step);
  // Ends every request with `status` and refuses new ones from now on.
  void fail_permanently(const Status& status);
  // The output side (OutputProcessor, SpeculativeRounds, TokenSelector), once the model, the
  // scheduler and the drafter exist.
  void create_output_side();
  // Frees a speculative request's draft pages (finish, abort, preemption).
  void release_draft(SequenceGroup& group);
  void update_stats();

  EngineOptions options_;
  int max_model_len_ = 0;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<BlockManager> block_manager_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<int32_t> eos_token_ids_;
  int64_t next_arrival_ = 0;
  std::unique_ptr<BeamDrafter> drafter_;
  std::unique_ptr<OutputProcessor> output_;
  std::unique_ptr<SpeculativeRounds> speculative_;  // null without a draft model
  std::unique_ptr<TokenSelector> selector_;
  CalibrationResult calibration_;

  // Serving thread and its inbox.
  std::thread thread_;
  std::atomic<bool> stop_requested_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<EngineRequest, std::shared_ptr<RequestStream>>> inbox_;  // Guarded by mu_
  std::vector<std::string> abort_inbox_;                                         // Guarded by mu_
  EngineStats stats_;                                                            // Guarded by mu_
  Status failure_;                                                               // Guarded by mu_
  std::atomic<bool> failed_{false};
  std::function<void(const Status&)> failure_callback_;
  int64_t total_prompt_tokens_ = 0;
  int64_t total_steps_ = 0;
};

}  // namespace earnserve
