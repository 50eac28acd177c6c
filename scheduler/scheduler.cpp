#include "scheduler/scheduler.h"

#include <algorithm>

#include "core/logging.h"

namespace earnserve {

Scheduler::Scheduler(SchedulerOptions options, BlockManager& block_manager)
    : options_(options), block_manager_(block_manager) {}

void Scheduler::add(std::unique_ptr<SequenceGroup> group) {
  group->status = GroupStatus::kWaiting;
  waiting_.push_back(std::move(group));
}

int Scheduler::num_running_seqs() const {
  int n = 0;
  for (const auto& g : running_)
    n += g->fanned_out ? static_cast<int>(g->seqs.size()) : g->max_seqs();
  return n;
}

bool Scheduler::allocate_group(SequenceGroup& group) {
  // Every live sequence gets its tokens so far; they share prompt pages through the prefix cache.
  for (auto& seq : group.seqs) {
    if (!block_manager_.can_allocate(seq->tokens, seq->kept)) return false;
  }
  for (size_t i = 0; i < group.seqs.size(); ++i) {
    Sequence& seq = *group.seqs[i];
    int64_t id = next_kv_id_++;
    std::optional<int> cached = block_manager_.allocate(id, seq.tokens, seq.kept);
    if (!cached) {
      for (size_t j = 0; j < i; ++j) free_seq(*group.seqs[j]);
      return false;
    }
    seq.kv_id = id;
    seq.num_computed_tokens = *cached;
    if (i == 0 && group.metrics.num_preemptions == 0) group.metrics.num_cached_tokens = *cached;
  }
  return true;
}

void Scheduler::free_seq(Sequence& seq) {
  if (seq.kv_id >= 0) block_manager_.free(seq.kv_id);
  seq.kv_id = -1;
  seq.num_computed_tokens = 0;
}

void Scheduler::fork(Sequence& parent, Sequence& child) {
  ES_CHECK_GE(parent.kv_id, 0);
  child.kv_id = next_kv_id_++;
  block_manager_.fork(parent.kv_id, child.kv_id);
  child.num_computed_tokens = parent.num_computed_tokens;
}

std::vector<std::unique_ptr<Sequence>> Scheduler::regroup_beams(
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
    fork(*old[parent], *child);
    next[i] = std::move(child);
  }
  for (size_t parent = 0; parent < old.size(); ++parent) {
    if (first_child[parent] >= 0) {
      next[first_child[parent]] = std::move(old[parent]);
    } else {
      free_seq(*old[parent]);
    }
  }
  return next;
}

void Scheduler::preempt(SequenceGroup& group) {
  for (auto& seq : group.seqs) free_seq(*seq);
  if (group.is_beam()) {
    // Beam search restarts from the prompt; it is deterministic, so the result is unchanged.
    std::unique_ptr<Sequence> first = std::move(group.seqs.front());
    first->truncate(first->num_prompt_tokens);
    first->cumulative_logprob = 0.0f;
    first->trie_node = Catalogue::kRoot;
    first->forced_to_end = false;
    group.seqs.clear();
    group.seqs.push_back(std::move(first));
    group.beam.reset();
    group.fanned_out = false;
  }
  group.metrics.num_preemptions++;
  group.status = GroupStatus::kWaiting;
  ++num_preemptions_;
}

bool Scheduler::reserve(Sequence& seq) {
  // Tokens the manager has not seen yet (sampled last step) get slots now.
  int known = block_manager_.num_tokens(seq.kv_id);
  int total = static_cast<int>(seq.tokens.size());
  if (known >= total) return true;
  return block_manager_.append_slots(
      seq.kv_id, std::span<const int32_t>(seq.tokens.data() + known, total - known),
      std::span<const uint8_t>(seq.kept.data() + known, total - known));
}

void Scheduler::record_peak_blocks(SequenceGroup& group) {
  int groups = block_manager_.num_groups();
  group.metrics.peak_kv_blocks.resize(groups, 0);
  for (int g = 0; g < groups; ++g) {
    // Blocks shared by several beams count once: the distinct ids across the group's tables.
    std::vector<int> ids;
    for (auto& seq : group.seqs) {
      if (seq->kv_id < 0) continue;
      const std::vector<int>& table = block_manager_.block_table(seq->kv_id, g);
      ids.insert(ids.end(), table.begin(), table.end());
    }
    std::sort(ids.begin(), ids.end());
    int distinct = static_cast<int>(std::unique(ids.begin(), ids.end()) - ids.begin());
    group.metrics.peak_kv_blocks[g] = std::max(group.metrics.peak_kv_blocks[g], distinct);
  }
}

void Scheduler::plan_chunk(SequenceGroup& group, Sequence& seq, bool whole_if_alone,
                           int& token_budget, std::vector<ScheduledSeq>& planned) const {
  const int remaining = seq.num_uncomputed();
  if (remaining <= 0 || token_budget <= 0) return;
  int count = std::min(remaining, token_budget);
  if (!options_.enable_chunked_prefill && count < remaining) {
    if (!whole_if_alone) return;
    count = remaining;
  }
  token_budget -= count;
  planned.push_back({&group, &seq, seq.num_computed_tokens, count,
                     seq.num_computed_tokens + count == static_cast<int>(seq.tokens.size())});
}

SchedulerStep Scheduler::schedule() {
  SchedulerStep step;
  int token_budget = options_.max_num_batched_tokens;

  // 1. Running requests, oldest first. A request that cannot get pages preempts the newest one.
  for (auto it = running_.begin(); it != running_.end();) {
    SequenceGroup& group = **it;
    bool preempted_self = false;
    std::vector<ScheduledSeq> planned;
    // A beam search steps all its live beams together (each needs its logits in the same step):
    // all of them run, over the budget only when alone in the step, or none.
    int* budget = &token_budget;
    int group_budget = 0;
    if (group.is_beam() && group.fanned_out) {
      int need = 0;
      for (auto& seq_ptr : group.seqs) {
        if (!seq_ptr->forced_to_end) need += seq_ptr->num_uncomputed();
      }
      if (need > token_budget) {
        group_budget = step.seqs.empty() ? need : 0;
        budget = &group_budget;
      }
    }
    for (auto& seq_ptr : group.seqs) {
      Sequence& seq = *seq_ptr;
      if (seq.finished() || seq.forced_to_end) continue;
      while (!reserve(seq)) {
        // Preempt from the back (newest) until this request fits or is itself the newest.
        SequenceGroup* victim = running_.back().get();
        preempt(*victim);
        step.preempted.push_back(victim);
        if (victim == &group) {
          preempted_self = true;
          break;
        }
        waiting_.push_front(std::move(running_.back()));
        running_.pop_back();
      }
      if (preempted_self) break;
      plan_chunk(group, seq, /*whole_if_alone=*/false, *budget, planned);
    }
    if (preempted_self) {
      waiting_.push_front(std::move(*it));
      it = running_.erase(it);
      // Anything already planned for it this step is dropped with it.
      continue;
    }
    if (budget == &group_budget && !planned.empty()) token_budget = 0;
    record_peak_blocks(group);
    step.seqs.insert(step.seqs.end(), planned.begin(), planned.end());
    ++it;
  }
  // Drop plans of requests preempted after they were planned.
  std::erase_if(step.seqs, [](const ScheduledSeq& s) { return s.seq->kv_id < 0; });

  // 2. Waiting requests, first come first served; stop at the first that does not fit.
  if (step.preempted.empty()) {
    int seqs_in_use = num_running_seqs();
    while (!waiting_.empty() && token_budget > 0) {
      SequenceGroup& group = *waiting_.front();
      if (seqs_in_use + group.max_seqs() > options_.max_num_seqs && !running_.empty()) break;
      if (!allocate_group(group)) break;
      std::vector<ScheduledSeq> planned;
      for (auto& seq_ptr : group.seqs) {
        plan_chunk(group, *seq_ptr, step.seqs.empty() && planned.empty(), token_budget, planned);
      }
      group.status = GroupStatus::kRunning;
      seqs_in_use += group.max_seqs();
      record_peak_blocks(group);
      step.seqs.insert(step.seqs.end(), planned.begin(), planned.end());
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
  }
  for (const ScheduledSeq& s : step.seqs) step.num_tokens += s.count;
  return step;
}

void Scheduler::mark_computed(const SchedulerStep& step) {
  for (const ScheduledSeq& s : step.seqs) {
    s.seq->num_computed_tokens = s.start + s.count;
    block_manager_.mark_computed(s.seq->kv_id, s.seq->num_computed_tokens, s.seq->tokens,
                                 s.seq->kept);
  }
}

std::unique_ptr<SequenceGroup> Scheduler::abort(const std::string& request_id) {
  auto matches = [&](const std::unique_ptr<SequenceGroup>& g) {
    return g->request.request_id == request_id;
  };
  std::unique_ptr<SequenceGroup> found;
  if (auto it = std::find_if(running_.begin(), running_.end(), matches); it != running_.end()) {
    found = std::move(*it);
    running_.erase(it);
  } else if (auto wit = std::find_if(waiting_.begin(), waiting_.end(), matches);
             wit != waiting_.end()) {
    found = std::move(*wit);
    waiting_.erase(wit);
  }
  if (found) {
    for (auto& seq : found->seqs) free_seq(*seq);
    found->status = GroupStatus::kAborted;
  }
  return found;
}

std::vector<std::unique_ptr<SequenceGroup>> Scheduler::abort_all() {
  std::vector<std::unique_ptr<SequenceGroup>> all;
  for (auto& g : running_) all.push_back(std::move(g));
  for (auto& g : waiting_) all.push_back(std::move(g));
  running_.clear();
  waiting_.clear();
  for (auto& g : all) {
    for (auto& seq : g->seqs) free_seq(*seq);
    g->status = GroupStatus::kAborted;
  }
  return all;
}

std::unique_ptr<SequenceGroup> Scheduler::remove_finished(SequenceGroup* group) {
  for (auto it = running_.begin(); it != running_.end(); ++it) {
    if (it->get() == group) {
      std::unique_ptr<SequenceGroup> out = std::move(*it);
      running_.erase(it);
      for (auto& seq : out->seqs) free_seq(*seq);
      return out;
    }
  }
  return nullptr;
}

}  // namespace earnserve
