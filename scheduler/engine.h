// Engine: the serving loop. It owns the model, the tokenizer, the KV storage, the block manager
// and the scheduler; each step() schedules a batch, runs the model once over it, then samples or
// advances beam searches and pushes outputs to the requests' streams.
//
// Two ways to drive it:
//  - offline / tests: add_request() then step() until !has_unfinished() (one thread);
//  - serving: start() runs step() on an engine thread; submit() and abort() may be called from
//    any thread: they go through a thread-safe queue that the engine thread drains each step.
// The scheduler and the cache are touched only by the engine thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cache/block_manager.h"
#include "cache/kv_cache.h"
#include "model/causal_lm.h"
#include "model/tokenizer.h"
#include "scheduler/request.h"
#include "scheduler/scheduler.h"

namespace earnserve {

struct EngineOptions {
  std::string model_dir;
  DType weight_dtype = DType::kF32;
  Device device = Device::kCPU;
  int block_size = 16;
  int64_t kv_cache_memory_bytes = 512ll << 20;
  int max_num_seqs = 256;
  int max_num_batched_tokens = 2048;
  int max_model_len = 0;  // 0: the model's max_position_embeddings
  bool enable_prefix_caching = true;
  bool enable_chunked_prefill = true;
  // EARN models: blocks of the register-only layer group per block of the all-token group. A
  // request keeps registers and generated tokens there, a small fraction of its prompt.
  double earn_marked_block_ratio = 0.25;
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
  std::vector<int> num_blocks_per_group;
};

class Engine {
 public:
  static StatusOr<std::unique_ptr<Engine>> create(const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ModelConfig& model_config() const { return model_->config(); }
  const EngineOptions& options() const { return options_; }
  int max_model_len() const { return max_model_len_; }

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
  void process_outputs(const SchedulerStep& step, const Tensor& logits);
  void process_sampling(SequenceGroup& group, Sequence& seq, std::span<float> row);
  void process_beams(SequenceGroup& group, std::vector<std::span<float>>& rows);
  void fan_out(SequenceGroup& group);
  void finish_sequence(SequenceGroup& group, Sequence& seq, FinishReason reason);
  void emit(SequenceGroup& group, bool final);
  void finish_group(SequenceGroup& group);
  void update_stats();

  EngineOptions options_;
  int max_model_len_ = 0;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<CausalLM> model_;
  std::unique_ptr<KvCache> kv_cache_;
  std::unique_ptr<BlockManager> block_manager_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<int32_t> eos_token_ids_;
  int64_t next_arrival_ = 0;
  std::vector<SequenceGroup*> finished_this_step_;

  // Serving thread and its inbox.
  std::thread thread_;
  std::atomic<bool> stop_requested_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<EngineRequest, std::shared_ptr<RequestStream>>> inbox_;  // Guarded by mu_
  std::vector<std::string> abort_inbox_;                                        // Guarded by mu_
  EngineStats stats_;                                                           // Guarded by mu_
  int64_t total_prompt_tokens_ = 0;
  int64_t total_generation_tokens_ = 0;
  int64_t total_steps_ = 0;
};

}  // namespace earnserve
