#include "scheduler/engine.h"

#include <algorithm>

#include "core/logging.h"
#include "scheduler/executor/model_input.h"
#include "scheduler/sampler.h"

namespace earnserve {
namespace {

// How often an idle tensor-parallel engine looks for workers that went away.
constexpr std::chrono::milliseconds kWorkerCheckInterval{500};

}  // namespace

StatusOr<std::unique_ptr<Engine>> Engine::create(const EngineOptions& options) {
  std::unique_ptr<Engine> e(new Engine());
  e->options_ = options;
  ES_ASSIGN_OR_RETURN(e->executor_, Executor::create(options));
  ES_ASSIGN_OR_RETURN(e->tokenizer_, Tokenizer::from_dir(options.model_dir));
  const ModelConfig& cfg = e->executor_->config();
  const int context = static_cast<int>(cfg.max_position_embeddings);
  e->max_model_len_ =
      options.max_model_len > 0 ? std::min(options.max_model_len, context) : context;
  e->block_manager_ = std::make_unique<BlockManager>(
      e->executor_->kv_groups(), e->executor_->num_blocks_per_group(), options.block_size,
      options.enable_prefix_caching);
  SchedulerOptions sched;
  sched.max_num_seqs = options.max_num_seqs;
  sched.max_num_batched_tokens = options.max_num_batched_tokens;
  sched.enable_chunked_prefill = options.enable_chunked_prefill;
  e->scheduler_ = std::make_unique<Scheduler>(sched, *e->block_manager_);
  if (!options.draft_model_dir.empty()) {
    DrafterOptions d;
    d.executor = options;
    d.executor.model_dir = options.draft_model_dir;
    d.executor.cuda_device = -1;  // the target's GPU
    d.executor.kv_cache_memory_bytes = options.draft_kv_cache_memory_bytes > 0
                                           ? options.draft_kv_cache_memory_bytes
                                           : options.kv_cache_memory_bytes / 4;
    d.executor.tensor_parallel = TensorParallelOptions{};  // rank 0 alone runs the draft
    d.enable_prefix_caching = options.enable_prefix_caching;
    ES_ASSIGN_OR_RETURN(e->drafter_, BeamDrafter::create(d, *e->tokenizer_, cfg));
  }
  for (int64_t id : cfg.eos_token_ids) e->eos_token_ids_.push_back(static_cast<int32_t>(id));
  if (e->eos_token_ids_.empty() && e->tokenizer_->eos_token_id()) {
    e->eos_token_ids_.push_back(*e->tokenizer_->eos_token_id());
  }
  e->create_output_side();
  if (e->speculative_) {
    e->calibration_ = e->speculative_->calibrate(*e->executor_, *e->block_manager_, {});
    ES_LOG(Info) << "speculation cost model: " << e->calibration_.num_forwards
                 << " calibration forwards of up to " << e->calibration_.max_rows << " rows in "
                 << static_cast<int>(e->calibration_.seconds * 1000) << " ms";
  }
  e->update_stats();
  return e;
}

void Engine::create_output_side() {
  output_ = std::make_unique<OutputProcessor>(*tokenizer_, eos_token_ids_, max_model_len_);
  const int64_t vocab_size = model_config().vocab_size;
  if (drafter_) {
    speculative_ = std::make_unique<SpeculativeRounds>(*drafter_, *block_manager_, *scheduler_,
                                                       options_.max_num_batched_tokens, vocab_size);
  }
  selector_ =
      std::make_unique<TokenSelector>(*scheduler_, *output_, speculative_.get(), eos_token_ids_,
                                      max_model_len_, vocab_size, options_.skip_forced_tokens);
}

void Engine::release_draft(SequenceGroup& group) {
  if (speculative_) speculative_->release(group);
}

Engine::~Engine() { stop(); }

Status Engine::validate(const EngineRequest& r) const {
  ES_RETURN_IF_ERROR(r.params.validate());
  if (r.prompt_token_ids.empty()) return invalid_argument("the prompt is empty");
  if (const std::optional<SpeculativeParams>& spec = r.params.speculative) {
    if (!drafter_) {
      return invalid_argument("speculative decoding needs a draft model; the engine has none");
    }
    if (!spec->draft_model.empty() && !drafter_->matches(spec->draft_model)) {
      return invalid_argument("draft model '" + spec->draft_model +
                              "' is not loaded; the engine's draft model is '" +
                              drafter_->model_dir() + "'");
    }
  }
  const int64_t vocab = model_config().vocab_size;
  for (int32_t t : r.prompt_token_ids) {
    if (t < 0 || t >= vocab) {
      return invalid_argument("prompt token id " + std::to_string(t) +
                              " is outside the vocabulary");
    }
  }
  int num_registers = 0;
  if (const auto& earn = model_config().earn) {
    num_registers =
        static_cast<int>(earn->prefix_register_ids.size() + earn->suffix_register_ids.size());
  }
  const int prompt = static_cast<int>(r.prompt_token_ids.size()) + num_registers;
  if (prompt >= max_model_len_) {
    return invalid_argument("the prompt has " + std::to_string(prompt) +
                            " tokens; the model's context is " + std::to_string(max_model_len_));
  }
  if (r.score_over == ScoreOver::kCatalogue) {
    if (!r.catalogue || !r.params.use_beam_search) {
      return invalid_argument("score_over \"catalogue\" needs catalogue-constrained beam search");
    }
    if (r.params.speculative) {
      return invalid_argument(
          "score_over \"catalogue\" is not available with speculative decoding");
    }
    if (options_.tensor_parallel.size > 1) {
      return invalid_argument("score_over \"catalogue\" is not available with tensor parallelism");
    }
  }
  if (r.catalogue && eos_token_ids_.empty()) {
    return invalid_argument(
        "catalogue-constrained decoding needs the model's end-of-sequence token");
  }
  if (r.catalogue && r.exclude_items.size() >= r.catalogue->num_items()) {
    std::vector<int64_t> distinct(r.exclude_items);
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    if (distinct.size() >= r.catalogue->num_items()) {
      return invalid_argument("every catalogue item is excluded");
    }
  }
  // The request must fit in the KV pool on its own, or it would wait forever.
  const int total = std::min(prompt + r.params.max_tokens, max_model_len_);
  const int width = r.params.use_beam_search ? r.params.beam_width : r.params.n;
  for (int g = 0; g < block_manager_->num_groups(); ++g) {
    const int bs = block_manager_->block_size(g);
    int gen_blocks = (total - prompt + bs - 1) / bs + 1;
    if (r.params.speculative) {
      // A round's drafted tree takes slots after the beams' tokens until it is verified.
      const int nodes =
          r.params.speculative->num_draft_beams * r.params.speculative->num_speculative_steps;
      gen_blocks += (nodes + bs - 1) / bs / width + 1;
    }
    const bool marked = block_manager_->group_spec(g).rule == TokenRule::kMarkedTokens;
    const int kept_prompt = marked ? num_registers : prompt;
    const int64_t needed = (kept_prompt + bs - 1) / bs + static_cast<int64_t>(width) * gen_blocks;
    if (needed > block_manager_->num_total_blocks(g)) {
      return resource_exhausted("the request needs about " + std::to_string(needed) +
                                " KV blocks; the cache holds " +
                                std::to_string(block_manager_->num_total_blocks(g)));
    }
  }
  return Status::Ok();
}

StatusOr<std::shared_ptr<RequestStream>> Engine::add_request(EngineRequest request) {
  auto stream = std::make_shared<RequestStream>();
  ES_RETURN_IF_ERROR(enqueue(std::move(request), stream));
  return stream;
}

Status Engine::enqueue(EngineRequest request, std::shared_ptr<RequestStream> stream) {
  ES_RETURN_IF_ERROR(validate(request));
  auto group = std::make_unique<SequenceGroup>();
  group->stream = stream;
  group->arrival_order = next_arrival_++;
  group->metrics.arrival = Clock::now();
  group->metrics.num_prompt_tokens = static_cast<int>(request.prompt_token_ids.size());
  if (request.params.speculative) group->spec = std::make_unique<SpeculativeState>();
  if (request.catalogue) {
    group->constraint = std::make_unique<CatalogueConstraint>(
        request.catalogue, request.exclude_items, eos_token_ids_.front());
  }
  auto seq = std::make_unique<Sequence>();
  wrap_prompt(model_config(), request.prompt_token_ids, seq->tokens, seq->kept);
  seq->num_prompt_tokens = static_cast<int>(seq->tokens.size());
  uint64_t seed = request.params.seed
                      ? *request.params.seed
                      : (static_cast<uint64_t>(Clock::now().time_since_epoch().count()) ^
                         static_cast<uint64_t>(group->arrival_order) << 32);
  seq->seed = mix_seed(seed, 0);
  if (group->spec) group->spec->seed = mix_seed(seed, 1);
  group->request = std::move(request);
  group->seqs.push_back(std::move(seq));
  scheduler_->add(std::move(group));
  return Status::Ok();
}

void Engine::abort_request(const std::string& request_id) {
  std::unique_ptr<SequenceGroup> g = scheduler_->abort(request_id);
  if (!g) return;
  release_draft(*g);
  output_->abort(*g);
  update_stats();
}

StatusOr<bool> Engine::step() {
  SchedulerStep step = scheduler_->schedule();
  for (SequenceGroup* g : step.preempted) release_draft(*g);
  if (step.empty()) {
    update_stats();
    return false;
  }
  if (speculative_) ES_RETURN_IF_ERROR(speculative_->prepare(step));
  ES_RETURN_IF_ERROR(run_model(step));
  update_stats();
  return true;
}

Status Engine::run_model(const SchedulerStep& step) {
  // A step whose logits rows all score over the catalogue computes only the allowed tokens'.
  const std::vector<int32_t> logits_tokens = selector_->logits_tokens(step);
  const auto start = Clock::now();
  ES_ASSIGN_OR_RETURN(Tensor logits, executor_->execute(step, *block_manager_, logits_tokens));
  scheduler_->mark_computed(step);
  ++total_steps_;
  SequenceGroup* last = nullptr;
  for (const ScheduledSeq& s : step.seqs) {
    // A request's sequences are consecutive in the step: count its call once.
    if (s.group != last && s.group->spec) ++s.group->spec->stats.num_target_calls;
    last = s.group;
  }
  for (const ScheduledSeq& s : step.seqs) {
    if (s.start < s.seq->num_prompt_tokens) {
      total_prompt_tokens_ += std::min(s.start + s.count, s.seq->num_prompt_tokens) - s.start;
    }
  }
  selector_->process(step, logits, logits_tokens);  // the executor returns them on the host
  if (speculative_) {
    // The speculation policy's target cost: the forward and the selection after it, for steps
    // of generated tokens and trees only (prompt rows cost far less per row than rows that
    // attend a whole context; a step with prompt chunks would teach the table the wrong slope).
    const bool prompt_rows = std::any_of(step.seqs.begin(), step.seqs.end(), [](const auto& s) {
      return s.start < s.seq->num_prompt_tokens;
    });
    speculative_->record_target_step(
        step.num_tokens, std::chrono::duration<double>(Clock::now() - start).count(), prompt_rows);
  }
  return Status::Ok();
}

StatusOr<std::vector<RequestOutput>> Engine::generate(
    std::vector<EngineRequest> requests, const std::function<void(size_t)>& on_progress) {
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (EngineRequest& r : requests) {
    ES_ASSIGN_OR_RETURN(auto s, add_request(std::move(r)));
    streams.push_back(std::move(s));
  }
  while (has_unfinished()) {
    ES_ASSIGN_OR_RETURN(bool ran, step());
    if (!ran && has_unfinished()) return internal_error("the scheduler made no progress");
    if (on_progress) {
      const size_t unfinished =
          static_cast<size_t>(scheduler_->num_waiting() + scheduler_->num_running());
      on_progress(streams.size() - std::min(unfinished, streams.size()));
    }
  }
  std::vector<RequestOutput> outs;
  for (auto& s : streams) {
    std::optional<RequestOutput> last;
    while (auto o = s->next(std::chrono::milliseconds(0))) last = std::move(o);
    if (!last) return internal_error("a request produced no output");
    outs.push_back(std::move(*last));
  }
  return outs;
}

// ---------------------------------------------------------------------------------------------
// Serving thread.

void Engine::start() {
  if (thread_.joinable()) return;
  stop_requested_ = false;
  thread_ = std::thread([this] { loop(); });
}

void Engine::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_requested_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

StatusOr<std::shared_ptr<RequestStream>> Engine::submit(EngineRequest request) {
  ES_RETURN_IF_ERROR(validate(request));
  auto stream = std::make_shared<RequestStream>();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_) return failure_;
    if (stop_requested_) return unavailable("the engine is shutting down");
    inbox_.emplace_back(std::move(request), stream);
  }
  cv_.notify_all();
  return stream;
}

void Engine::abort(const std::string& request_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    abort_inbox_.push_back(request_id);
  }
  cv_.notify_all();
}

void Engine::drain_inbox() {
  std::vector<std::pair<EngineRequest, std::shared_ptr<RequestStream>>> incoming;
  std::vector<std::string> aborts;
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming.swap(inbox_);
    aborts.swap(abort_inbox_);
  }
  for (auto& [req, stream] : incoming) {
    std::string id = req.request_id;
    Status s = enqueue(std::move(req), stream);
    if (!s.ok()) OutputProcessor::reject(*stream, id, s);
  }
  for (const std::string& id : aborts) abort_request(id);
}

void Engine::loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto has_work = [&] {
        return stop_requested_ || !inbox_.empty() || !abort_inbox_.empty() ||
               (!failed_ && scheduler_->has_work());
      };
      if (!executor_->leads_workers() || failed_) {
        cv_.wait(lock, has_work);
      } else if (!cv_.wait_for(lock, kWorkerCheckInterval, has_work)) {
        lock.unlock();
        // Idle: a worker that died shows as a closed control connection.
        if (Status s = executor_->check_workers(); !s.ok()) fail_permanently(s);
        continue;
      }
      if (stop_requested_) break;
    }
    if (failed_) {
      // Requests that raced with the failure; aborts have nothing left to abort.
      {
        std::lock_guard<std::mutex> lock(mu_);
        abort_inbox_.clear();
      }
      fail_all(health());
      continue;
    }
    drain_inbox();
    StatusOr<bool> ran = step();
    if (!ran.ok()) {
      ES_LOG(Error) << "engine step failed: " << ran.status().to_string();
      if (executor_->leads_workers()) {
        // Some ranks may have run the step and others not: the group cannot go on.
        fail_permanently(ran.status());
      } else {
        fail_all(ran.status());
      }
    }
  }
  fail_all(failed_ ? health() : unavailable("the engine stopped"));
}

void Engine::fail_permanently(const Status& status) {
  const Status failure = status.code() == StatusCode::kUnavailable
                             ? status
                             : unavailable("the engine failed: " + status.message());
  ES_LOG(Error) << "engine failed for good: " << failure.message();
  {
    std::lock_guard<std::mutex> lock(mu_);
    failure_ = failure;
    failed_ = true;
  }
  fail_all(failure);
  update_stats();
  if (failure_callback_) failure_callback_(failure);
}

Status Engine::health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

void Engine::fail_all(const Status& status) {
  for (std::unique_ptr<SequenceGroup>& g : scheduler_->abort_all()) {
    release_draft(*g);
    output_->fail(*g, status);
  }
  std::vector<std::pair<EngineRequest, std::shared_ptr<RequestStream>>> incoming;
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming.swap(inbox_);
  }
  for (auto& [req, stream] : incoming) OutputProcessor::reject(*stream, req.request_id, status);
}

void Engine::update_stats() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.num_running = scheduler_->num_running();
  stats_.num_waiting = scheduler_->num_waiting();
  stats_.kv_usage = block_manager_->usage();
  stats_.draft_kv_usage = drafter_ ? drafter_->kv_usage() : 0.0;
  stats_.num_preemptions = scheduler_->num_preemptions();
  const PrefixCacheStats& pc = block_manager_->prefix_cache_stats();
  stats_.prefix_cache_queries = pc.query_tokens;
  stats_.prefix_cache_hits = pc.hit_tokens;
  stats_.num_prompt_tokens = total_prompt_tokens_;
  stats_.num_generation_tokens = selector_->num_generation_tokens();
  stats_.num_forced_tokens = selector_->num_forced_tokens();
  stats_.num_steps = total_steps_;
  stats_.num_spec_rounds = speculative_ ? speculative_->num_rounds() : 0;
  stats_.num_spec_accepted_steps = speculative_ ? speculative_->num_accepted_steps() : 0;
  stats_.num_target_calls = total_steps_;
  stats_.num_draft_calls = drafter_ ? drafter_->num_forward_calls() : 0;
  stats_.num_spec_plain_steps_cost = speculative_ ? speculative_->num_plain_steps_cost() : 0;
  stats_.num_spec_plain_steps_no_room = speculative_ ? speculative_->num_plain_steps_no_room() : 0;
  stats_.num_blocks_per_group.clear();
  stats_.block_size_per_group.clear();
  for (int g = 0; g < block_manager_->num_groups(); ++g) {
    stats_.num_blocks_per_group.push_back(block_manager_->num_total_blocks(g));
    stats_.block_size_per_group.push_back(block_manager_->block_size(g));
  }
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace earnserve
