#include "scheduler/engine.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/logging.h"
#include "kernels/ops.h"
#include "model/tokenizer/incremental_detokenizer.h"
#include "model/registry.h"
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
  e->max_model_len_ = options.max_model_len > 0 ? std::min(options.max_model_len, context) : context;
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
  e->update_stats();
  return e;
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
      return invalid_argument("prompt token id " + std::to_string(t) + " is outside the vocabulary");
    }
  }
  int num_registers = 0;
  if (const auto& earn = model_config().earn) {
    num_registers = static_cast<int>(earn->prefix_register_ids.size() +
                                     earn->suffix_register_ids.size());
  }
  const int prompt = static_cast<int>(r.prompt_token_ids.size()) + num_registers;
  if (prompt >= max_model_len_) {
    return invalid_argument("the prompt has " + std::to_string(prompt) +
                            " tokens; the model's context is " + std::to_string(max_model_len_));
  }
  if (r.catalogue && eos_token_ids_.empty()) {
    return invalid_argument("catalogue-constrained decoding needs the model's end-of-sequence token");
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
  const int bs = options_.block_size;
  const int total = std::min(prompt + r.params.max_tokens, max_model_len_);
  const int width = r.params.use_beam_search ? r.params.beam_width : r.params.n;
  int gen_blocks = (total - prompt + bs - 1) / bs + 1;
  if (r.params.speculative) {
    // A round's drafted tree takes slots after the beams' tokens until it is verified.
    const int nodes = r.params.speculative->num_draft_beams *
                      r.params.speculative->num_speculative_steps;
    gen_blocks += (nodes + bs - 1) / bs / width + 1;
  }
  for (int g = 0; g < block_manager_->num_groups(); ++g) {
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

void Engine::wrap_prompt(const std::vector<int32_t>& prompt, std::vector<int32_t>& tokens,
                         std::vector<uint8_t>& kept) const {
  earnserve::wrap_prompt(model_config(), prompt, tokens, kept);
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
  if (request.catalogue && !request.exclude_items.empty()) {
    group->exclusion =
        std::make_unique<CatalogueExclusion>(*request.catalogue, request.exclude_items);
  }
  auto seq = std::make_unique<Sequence>();
  wrap_prompt(request.prompt_token_ids, seq->tokens, seq->kept);
  seq->num_prompt_tokens = static_cast<int>(seq->tokens.size());
  uint64_t seed = request.params.seed ? *request.params.seed
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
  RequestOutput out;
  out.request_id = request_id;
  out.finished = true;
  out.error = aborted("request " + request_id + " was aborted");
  out.metrics = g->metrics;
  for (auto& seq : g->seqs) {
    SequenceOutput so;
    so.index = seq->index;
    so.finish_reason = FinishReason::kAbort;
    out.outputs.push_back(std::move(so));
  }
  g->stream->push(std::move(out));
  update_stats();
}

StatusOr<bool> Engine::step() {
  SchedulerStep step = scheduler_->schedule();
  for (SequenceGroup* g : step.preempted) release_draft(*g);
  if (step.empty()) {
    update_stats();
    return false;
  }
  ES_RETURN_IF_ERROR(prepare_speculative(step));
  ES_RETURN_IF_ERROR(run_model(step));
  update_stats();
  return true;
}

Status Engine::run_model(const SchedulerStep& step) {
  ES_ASSIGN_OR_RETURN(Tensor logits, executor_->execute(step, *block_manager_));
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
  process_outputs(step, logits);
  return Status::Ok();
}

void Engine::process_outputs(const SchedulerStep& step, const Tensor& logits) {
  const int64_t vocab = model_config().vocab_size;
  float* base = logits.numel() ? logits.data<float>() : nullptr;
  // Rows in step order; group a request's rows together.
  std::vector<SequenceGroup*> groups;
  std::unordered_map<SequenceGroup*, std::vector<std::pair<Sequence*, std::span<float>>>> rows;
  int row = 0;
  for (size_t i = 0; i < step.seqs.size(); ++i) {
    const ScheduledSeq& s = step.seqs[i];
    if (!s.needs_logits) continue;
    // A drafted tree's rows follow its chunk's row.
    const int num_rows = 1 + static_cast<int>(step.tree_tokens(i).size());
    std::span<float> r(base + static_cast<int64_t>(row) * vocab, vocab * num_rows);
    row += num_rows;
    if (!rows.count(s.group)) groups.push_back(s.group);
    rows[s.group].emplace_back(s.seq, r);
  }
  finished_this_step_.clear();
  for (SequenceGroup* group : groups) {
    auto& group_rows = rows[group];
    if (!group->metrics.first_token) group->metrics.first_token = Clock::now();
    if (group->spec && group->beam) {
      // A speculative search verifies when prepare_speculative() gave it a round: every live
      // beam ran to its end this step (the scheduler runs a beam search's beams together).
      if (!rounds_.count(group)) continue;
      std::vector<std::span<float>> spans;
      for (auto& [seq, r] : group_rows) spans.push_back(r);
      process_speculative(*group, spans);
    } else if (group->is_beam()) {
      std::vector<std::span<float>> spans;
      for (auto& [seq, r] : group_rows) spans.push_back(r);
      process_beams(*group, spans);
    } else {
      if (!group->fanned_out) fan_out(*group);
      for (auto& [seq, r] : group_rows) {
        if (group->seqs.size() > 1 && seq == group->seqs[0].get() &&
            seq->num_generated() == 0) {
          // The prompt's row feeds every fanned-out sequence (each samples with its own seed).
          std::vector<float> copy(r.begin(), r.end());
          for (auto& other : group->seqs) {
            std::vector<float> row_copy = copy;
            process_sampling(*group, *other, row_copy);
          }
        } else {
          process_sampling(*group, *seq, r);
        }
      }
      // Move finished sequences out and free their pages.
      for (auto it = group->seqs.begin(); it != group->seqs.end();) {
        if ((*it)->finished()) {
          scheduler_->free_seq(**it);
          group->done_seqs.push_back(std::move(*it));
          it = group->seqs.erase(it);
        } else {
          ++it;
        }
      }
      if (group->seqs.empty()) {
        finished_this_step_.push_back(group);
      } else if (group->request.stream) {
        emit(*group, false);
      }
    }
  }
  for (SequenceGroup* g : finished_this_step_) finish_group(*g);
}

void Engine::fan_out(SequenceGroup& group) {
  group.fanned_out = true;
  const int n = group.request.params.n;
  Sequence& first = *group.seqs[0];
  uint64_t base_seed = group.request.params.seed ? *group.request.params.seed : first.seed;
  for (int i = 1; i < n; ++i) {
    auto child = std::make_unique<Sequence>();
    child->index = i;
    child->tokens = first.tokens;
    child->kept = first.kept;
    child->num_prompt_tokens = first.num_prompt_tokens;
    child->seed = mix_seed(base_seed, static_cast<uint64_t>(i));
    scheduler_->fork(first, *child);
    group.seqs.push_back(std::move(child));
  }
}

void Engine::process_sampling(SequenceGroup& group, Sequence& seq, std::span<float> row) {
  const SamplingParams& p = group.request.params;
  std::vector<int32_t> allowed;
  SamplingContext ctx;
  ctx.prompt_tokens = std::span<const int32_t>(seq.tokens.data(), seq.num_prompt_tokens);
  ctx.output_tokens = std::span<const int32_t>(seq.tokens.data() + seq.num_prompt_tokens,
                                               seq.num_generated());
  ctx.seed = seq.seed;
  std::vector<int32_t> banned;
  if (seq.num_generated() < p.min_tokens) {
    banned = p.stop_token_ids;
    if (!p.ignore_eos) banned.insert(banned.end(), eos_token_ids_.begin(), eos_token_ids_.end());
    ctx.banned_tokens = banned;
  }
  if (group.request.catalogue) {
    group.request.catalogue->allowed_tokens(seq.trie_node, group.exclusion.get(),
                                            eos_token_ids_.front(), allowed);
    ctx.allowed_tokens = allowed;
    ctx.constrained = true;
  }
  SampledToken t = sample_token(row, p, ctx);
  seq.append(t.token);
  seq.cumulative_logprob += t.logprob;
  if (p.logprobs >= 0) seq.logprobs.push_back({t.token, t.logprob, std::move(t.top_logprobs)});
  ++total_generation_tokens_;
  if (!seq.detokenizer) {
    seq.detokenizer = std::make_unique<IncrementalDetokenizer>(
        *tokenizer_, std::span<const int32_t>(seq.tokens.data(), seq.num_prompt_tokens));
  }

  const bool is_eos = std::find(eos_token_ids_.begin(), eos_token_ids_.end(), t.token) !=
                      eos_token_ids_.end();
  const bool is_stop_id = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), t.token) !=
                          p.stop_token_ids.end();
  if (group.request.catalogue) {
    if (is_eos) {
      auto items = group.request.catalogue->terminal_items(seq.trie_node);
      for (int32_t item : items) {
        if (!group.exclusion || !group.exclusion->is_excluded(item)) {
          seq.item_index = item;
          break;
        }
      }
      seq.stop_token = t.token;
      finish_sequence(group, seq, FinishReason::kStop);
      return;
    }
    seq.trie_node = group.request.catalogue->child(seq.trie_node, t.token);
    ES_CHECK_GE(seq.trie_node, 0);
  }
  if ((is_eos && !p.ignore_eos) || is_stop_id) {
    seq.stop_token = t.token;
    finish_sequence(group, seq, FinishReason::kStop);
    return;
  }
  // Text and stop strings.
  seq.text += seq.detokenizer->append(t.token);
  if (!p.stop.empty()) {
    for (const std::string& s : p.stop) {
      // Only the newest text can complete a stop string.
      size_t from = seq.text.size() > s.size() + 64 ? seq.text.size() - s.size() - 64 : 0;
      size_t pos = seq.text.find(s, std::min(from, seq.num_text_sent));
      if (pos != std::string::npos) {
        seq.text.resize(p.include_stop_str_in_output ? pos + s.size() : pos);
        seq.stop_reason = s;
        finish_sequence(group, seq, FinishReason::kStop);
        return;
      }
    }
  }
  if (seq.num_generated() >= p.max_tokens ||
      static_cast<int>(seq.tokens.size()) >= max_model_len_) {
    finish_sequence(group, seq, FinishReason::kLength);
  }
}

void Engine::finish_sequence(SequenceGroup& group, Sequence& seq, FinishReason reason) {
  seq.finish_reason = reason;
  if (seq.detokenizer && seq.stop_reason.empty()) seq.text += seq.detokenizer->flush();
  if (reason == FinishReason::kStop && seq.stop_reason.empty() && seq.stop_token) {
    seq.stop_reason = tokenizer_->id_to_token(*seq.stop_token);
  }
}

std::vector<std::unique_ptr<Sequence>> Engine::regroup_beams(
    std::vector<std::unique_ptr<Sequence>> old, const std::vector<int>& parents) {
  std::vector<std::unique_ptr<Sequence>> next(parents.size());
  std::vector<int> first_child(old.size(), -1);
  for (size_t i = 0; i < parents.size(); ++i) {
    if (first_child[parents[i]] < 0) first_child[parents[i]] = static_cast<int>(i);
  }
  // Forks first, while parents still hold exactly their computed tokens.
  for (size_t i = 0; i < parents.size(); ++i) {
    const int parent = parents[i];
    if (first_child[parent] == static_cast<int>(i)) continue;
    auto child = std::make_unique<Sequence>();
    child->tokens = old[parent]->tokens;
    child->kept = old[parent]->kept;
    child->num_prompt_tokens = old[parent]->num_prompt_tokens;
    child->trie_node = old[parent]->trie_node;
    scheduler_->fork(*old[parent], *child);
    next[i] = std::move(child);
  }
  for (size_t parent = 0; parent < old.size(); ++parent) {
    if (first_child[parent] >= 0) {
      next[first_child[parent]] = std::move(old[parent]);
    } else {
      scheduler_->free_seq(*old[parent]);
    }
  }
  return next;
}

void Engine::process_beams(SequenceGroup& group, std::vector<std::span<float>>& rows) {
  const SamplingParams& p = group.request.params;
  if (!group.beam) {
    BeamSearchOptions o;
    o.width = p.beam_width;
    o.length_penalty = p.length_penalty;
    o.early_stopping = p.early_stopping;
    o.max_tokens = std::min(p.max_tokens, max_model_len_ - group.seqs[0]->num_prompt_tokens);
    if (!p.ignore_eos) o.stop_tokens = eos_token_ids_;
    o.stop_tokens.insert(o.stop_tokens.end(), p.stop_token_ids.begin(), p.stop_token_ids.end());
    group.beam = std::make_unique<BeamSearch>(o);
    group.fanned_out = true;
  }
  ES_CHECK_EQ(rows.size(), group.seqs.size());
  if (p.speculative && p.speculative->verification == SpeculativeParams::Verification::kRelaxed) {
    // Relaxed speculative searches sample every step, also those without a drafted tree.
    SpeculativeRound& round = rounds_[&group];
    round = SpeculativeRound{};
    round.tokens.assign(rows.size(), {});
    round.parents.assign(rows.size(), {});
    round.node_ids.assign(rows.size(), {});
    process_speculative(group, rows, /*count_round=*/false);
    rounds_.erase(&group);
    return;
  }
  // Normalise each row to log-probabilities (the constraint is applied on top, as transformers'
  // prefix_allowed_tokens_fn does).
  std::vector<std::vector<int32_t>> allowed(rows.size());
  std::vector<BeamStepInput> inputs(rows.size());
  for (size_t b = 0; b < rows.size(); ++b) {
    std::span<float> r = rows[b];
    float lse = log_sum_exp(r);
    for (float& v : r) v -= lse;
    inputs[b].logprobs = r;
    if (group.request.catalogue) {
      group.request.catalogue->allowed_tokens(group.seqs[b]->trie_node, group.exclusion.get(),
                                              eos_token_ids_.front(), allowed[b]);
      inputs[b].allowed_tokens = allowed[b];
      inputs[b].constrained = true;
    }
  }
  std::vector<BeamChoice> choices = group.beam->step(inputs);
  total_generation_tokens_ += static_cast<int64_t>(choices.size());

  std::vector<int> parents;
  for (const BeamChoice& c : choices) parents.push_back(c.parent);
  std::vector<std::unique_ptr<Sequence>> next = regroup_beams(std::move(group.seqs), parents);
  for (size_t i = 0; i < choices.size(); ++i) {
    Sequence& s = *next[i];
    s.index = static_cast<int>(i);
    s.append(choices[i].token);
    s.cumulative_logprob = choices[i].score;
    if (group.request.catalogue) {
      s.trie_node = group.request.catalogue->child(s.trie_node, choices[i].token);
      ES_CHECK_GE(s.trie_node, 0);
    }
  }
  group.seqs = std::move(next);
  if (group.beam->done()) finished_this_step_.push_back(&group);
}

void Engine::emit(SequenceGroup& group, bool final) {
  RequestOutput out;
  out.request_id = group.request.request_id;
  out.prompt_token_ids = group.request.prompt_token_ids;
  out.finished = final;
  out.metrics = group.metrics;
  if (group.spec) out.speculative = group.spec->stats;
  const bool delta = group.request.stream;
  auto add = [&](Sequence& seq) {
    SequenceOutput so;
    so.index = seq.index;
    size_t from_tok = delta ? seq.num_tokens_sent : 0;
    size_t from_text = delta ? seq.num_text_sent : 0;
    so.token_ids.assign(seq.tokens.begin() + seq.num_prompt_tokens + from_tok, seq.tokens.end());
    so.text = seq.text.substr(std::min(from_text, seq.text.size()));
    if (!seq.logprobs.empty()) {
      size_t from_lp = delta ? seq.num_logprobs_sent : 0;
      so.logprobs.assign(seq.logprobs.begin() + from_lp, seq.logprobs.end());
      seq.num_logprobs_sent = seq.logprobs.size();
    }
    seq.num_tokens_sent = seq.tokens.size() - seq.num_prompt_tokens;
    seq.num_text_sent = seq.text.size();
    so.cumulative_logprob = seq.cumulative_logprob;
    so.score = group.is_beam() ? seq.beam_score : seq.cumulative_logprob;
    so.finish_reason = seq.finish_reason;
    so.stop_reason = seq.stop_reason;
    so.stop_token = seq.stop_token;
    so.item_index = seq.item_index;
    out.outputs.push_back(std::move(so));
  };
  for (auto& seq : group.seqs) add(*seq);
  for (auto& seq : group.done_seqs) {
    // A finished sequence is reported once more only if something is unsent or this is the end.
    if (final || seq->num_tokens_sent < static_cast<size_t>(seq->num_generated())) add(*seq);
  }
  std::sort(out.outputs.begin(), out.outputs.end(),
            [](const SequenceOutput& a, const SequenceOutput& b) { return a.index < b.index; });
  group.stream->push(std::move(out));
}

void Engine::finish_group(SequenceGroup& group) {
  group.metrics.finished = Clock::now();
  group.status = GroupStatus::kFinished;
  release_draft(group);
  if (group.is_beam()) {
    // Replace live beams by the best n finished hypotheses.
    for (auto& seq : group.seqs) scheduler_->free_seq(*seq);
    group.seqs.clear();
    const auto& hyps = group.beam->finished();
    const int n = std::min<int>(group.request.params.n, static_cast<int>(hyps.size()));
    for (int i = 0; i < n; ++i) {
      auto seq = std::make_unique<Sequence>();
      seq->index = i;
      wrap_prompt(group.request.prompt_token_ids, seq->tokens, seq->kept);
      seq->num_prompt_tokens = static_cast<int>(seq->tokens.size());
      seq->tokens.insert(seq->tokens.end(), hyps[i].tokens.begin(), hyps[i].tokens.end());
      seq->cumulative_logprob = hyps[i].cumulative_logprob;
      seq->beam_score = hyps[i].score;
      int32_t last = hyps[i].tokens.back();
      bool stopped = std::find(group.beam->options().stop_tokens.begin(),
                               group.beam->options().stop_tokens.end(),
                               last) != group.beam->options().stop_tokens.end();
      seq->finish_reason = stopped ? FinishReason::kStop : FinishReason::kLength;
      if (stopped) seq->stop_token = last;
      std::span<const int32_t> gen(hyps[i].tokens);
      if (stopped) gen = gen.first(gen.size() - 1);
      seq->text = tokenizer_->decode(gen, /*skip_special_tokens=*/true);
      if (group.request.catalogue) {
        int32_t node = group.request.catalogue->walk(gen);
        if (node >= 0) {
          for (int32_t item : group.request.catalogue->terminal_items(node)) {
            if (!group.exclusion || !group.exclusion->is_excluded(item)) {
              seq->item_index = item;
              break;
            }
          }
        }
      }
      group.done_seqs.push_back(std::move(seq));
    }
  }
  group.metrics.num_generated_tokens = 0;
  for (auto& s : group.done_seqs) group.metrics.num_generated_tokens += s->num_generated();
  emit(group, true);
  scheduler_->remove_finished(&group);
}

StatusOr<std::vector<RequestOutput>> Engine::generate(std::vector<EngineRequest> requests) {
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (EngineRequest& r : requests) {
    ES_ASSIGN_OR_RETURN(auto s, add_request(std::move(r)));
    streams.push_back(std::move(s));
  }
  while (has_unfinished()) {
    ES_ASSIGN_OR_RETURN(bool ran, step());
    if (!ran && has_unfinished()) return internal_error("the scheduler made no progress");
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
    if (!s.ok()) {
      RequestOutput out;
      out.request_id = id;
      out.finished = true;
      out.error = s;
      stream->push(std::move(out));
    }
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
    RequestOutput out;
    out.request_id = g->request.request_id;
    out.finished = true;
    out.error = status;
    out.metrics = g->metrics;
    g->stream->push(std::move(out));
  }
  std::vector<std::pair<EngineRequest, std::shared_ptr<RequestStream>>> incoming;
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming.swap(inbox_);
  }
  for (auto& [req, stream] : incoming) {
    RequestOutput out;
    out.request_id = req.request_id;
    out.finished = true;
    out.error = status;
    stream->push(std::move(out));
  }
}

void Engine::update_stats() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.num_running = scheduler_->num_running();
  stats_.num_waiting = scheduler_->num_waiting();
  stats_.kv_usage = block_manager_->usage();
  stats_.num_preemptions = scheduler_->num_preemptions();
  const PrefixCacheStats& pc = block_manager_->prefix_cache_stats();
  stats_.prefix_cache_queries = pc.query_tokens;
  stats_.prefix_cache_hits = pc.hit_tokens;
  stats_.num_prompt_tokens = total_prompt_tokens_;
  stats_.num_generation_tokens = total_generation_tokens_;
  stats_.num_steps = total_steps_;
  stats_.num_spec_rounds = total_spec_rounds_;
  stats_.num_spec_accepted_steps = total_spec_accepted_steps_;
  stats_.num_target_calls = total_steps_;
  stats_.num_draft_calls = drafter_ ? drafter_->num_forward_calls() : 0;
  stats_.num_blocks_per_group.clear();
  for (int g = 0; g < block_manager_->num_groups(); ++g) {
    stats_.num_blocks_per_group.push_back(block_manager_->num_total_blocks(g));
  }
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace earnserve
