// Engine: the serving loop. It owns the executor (the model and its KV storage,
// scheduler/executor/executor.h), the tokenizer, the block manager and the scheduler; each
// step() schedules a batch, runs the model once over it through the executor, then samples or
// advances beam searches and pushes outputs to the requests' streams. With a draft model
// (EngineOptions::draft_model_dir) beam requests may ask for speculative beam search
// (SamplingParams::speculative): see engine_speculative.cpp and scheduler/speculative/beam_drafter.h.
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
#include "scheduler/executor/executor.h"
#include "model/tokenizer/tokenizer.h"
#include "scheduler/speculative/beam_drafter.h"
#include "scheduler/request.h"
#include "scheduler/scheduler.h"
#include "scheduler/executor/executor_options.h"

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
  int64_t num_preemptions = 0;
  int64_t prefix_cache_queries = 0;  // tokens looked up
  int64_t prefix_cache_hits = 0;     // tokens found
  int64_t num_prompt_tokens = 0;
  int64_t num_generation_tokens = 0;
  int64_t num_steps = 0;
  int64_t num_spec_rounds = 0;          // speculative draft-then-verify rounds
  int64_t num_spec_accepted_steps = 0;  // beam steps the draft proposed and the target kept
  int64_t num_target_calls = 0;         // target model forward passes
  int64_t num_draft_calls = 0;          // draft model forward passes
  std::vector<int> num_blocks_per_group;
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

  // Checks a request against the engine's limits (prompt length, params, catalogue).
  Status validate(const EngineRequest& request) const;

  // --- Offline use (the calling thread is the engine thread). ---
  StatusOr<std::shared_ptr<RequestStream>> add_request(EngineRequest request);
  void abort_request(const std::string& request_id);
  // Runs one model step; returns false when there was nothing to do.
  StatusOr<bool> step();
  bool has_unfinished() const { return scheduler_->has_work(); }
  // Runs the given requests to completion and returns their final outputs in order.
  StatusOr<std::vector<RequestOutput>> generate(std::vector<EngineRequest> requests);

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
  // The tokens the model sees for a prompt and their kept flags (EARN adds register tokens).
  void wrap_prompt(const std::vector<int32_t>& prompt, std::vector<int32_t>& tokens,
                   std::vector<uint8_t>& kept) const;
  // Ends every request with `status` (engine failure or shutdown).
  void fail_all(const Status& status);
  Status run_model(const SchedulerStep& step);
  // Ends every request with `status` and refuses new ones from now on.
  void fail_permanently(const Status& status);
  // Speculative beam search (engine_speculative.cpp). Drafts a tree for every speculative request
  // whose live beams all run to their end in `step`, gives its nodes target KV slots after the
  // beams' tokens and attaches them to the step.
  Status prepare_speculative(SchedulerStep& step);
  // Verifies a round: `rows[b]` holds live beam b's logits at its last token, then at its tree
  // nodes ([1 + subtree, vocab]). Applies the target's accepted beam steps. `count_round` false:
  // an ordinary step of a relaxed search (empty tree), sampled but not counted as a round.
  void process_speculative(SequenceGroup& group, std::vector<std::span<float>>& rows,
                           bool count_round = true);
  // Frees a speculative request's draft pages (finish, abort, preemption).
  void release_draft(SequenceGroup& group);
  void process_outputs(const SchedulerStep& step, const Tensor& logits);
  void process_sampling(SequenceGroup& group, Sequence& seq, std::span<float> row);
  void process_beams(SequenceGroup& group, std::vector<std::span<float>>& rows);
  // New live beams: beam i continues old beam parents[i]. A parent's first child takes over its
  // sequence (and pages), later children fork it, parents without a child are freed. REQUIRES:
  // every old beam holds exactly its computed tokens.
  std::vector<std::unique_ptr<Sequence>> regroup_beams(std::vector<std::unique_ptr<Sequence>> old,
                                                       const std::vector<int>& parents);
  void fan_out(SequenceGroup& group);
  void finish_sequence(SequenceGroup& group, Sequence& seq, FinishReason reason);
  void emit(SequenceGroup& group, bool final);
  void finish_group(SequenceGroup& group);
  void update_stats();

  EngineOptions options_;
  int max_model_len_ = 0;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<BlockManager> block_manager_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<int32_t> eos_token_ids_;
  int64_t next_arrival_ = 0;
  std::vector<SequenceGroup*> finished_this_step_;
  std::unique_ptr<BeamDrafter> drafter_;
  // One speculative request's round in the current step.
  struct SpeculativeRound {
    std::vector<DraftTreeNode> nodes;  // drafted nodes: tree node num_live + i
    std::vector<DraftExpansion> expansions;  // relaxed verification: the draft's q
    // Per live beam: its subtree (ScheduledSeq::tree_tokens / tree_parents) and their tree nodes.
    std::vector<std::vector<int32_t>> tokens, parents, node_ids;
  };
  std::unordered_map<SequenceGroup*, SpeculativeRound> rounds_;

  // Serving thread and its inbox.
  std::thread thread_;
  std::atomic<bool> stop_requested_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<EngineRequest, std::shared_ptr<RequestStream>>> inbox_;  // Guarded by mu_
  std::vector<std::string> abort_inbox_;                                        // Guarded by mu_
  EngineStats stats_;                                                           // Guarded by mu_
  Status failure_;                                                              // Guarded by mu_
  std::atomic<bool> failed_{false};
  std::function<void(const Status&)> failure_callback_;
  int64_t total_prompt_tokens_ = 0;
  int64_t total_generation_tokens_ = 0;
  int64_t total_steps_ = 0;
  int64_t total_spec_rounds_ = 0;
  int64_t total_spec_accepted_steps_ = 0;
};

}  // namespace earnserve
