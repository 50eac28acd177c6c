// Scheduler: continuous batching over the paged KV cache. Each step it decides which sequences
// run and how many of their tokens: decodes of running requests first, then chunks of prompts
// still being prefilled, then new requests admitted first-come-first-served, all under
// max_num_seqs and max_num_batched_tokens. When pages run out it preempts the newest running
// request by recompute (its pages are freed; it goes back to the front of the queue and is
// recomputed later, usually hitting the prefix cache). Abort frees everything at once.
// Single-threaded: owned and driven by the engine thread.
#pragma once

#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "cache/block_manager.h"
#include "scheduler/sequence.h"

namespace earnserve {

struct SchedulerOptions {
  int max_num_seqs = 256;
  int max_num_batched_tokens = 2048;
  bool enable_chunked_prefill = true;
};

// One sequence's share of a step: tokens [start, start + count) of seq->tokens are computed.
struct ScheduledSeq {
  SequenceGroup* group = nullptr;
  Sequence* seq = nullptr;
  int start = 0;
  int count = 0;
  bool needs_logits = false;  // the chunk ends at the sequence's last token
};

// Speculative verification: drafted tree nodes fed after a sequence's chunk, each attending the
// sequence's context and its own ancestors only; their KV goes to slots the block manager holds
// past seq->tokens. parents[i] < i indexes the tree, -1 = the chunk's last token. Every node
// yields logits, after the chunk's last token. Borrowed from the engine for one step.
struct DraftedRows {
  std::span<const int32_t> tokens;
  std::span<const int32_t> parents;
};

struct SchedulerStep {
  std::vector<ScheduledSeq> seqs;
  // Empty, or parallel to seqs (set by the engine). REQUIRES: needs_logits where non-empty.
  std::vector<DraftedRows> trees;
  std::span<const int32_t> tree_tokens(size_t i) const {
    return trees.empty() ? std::span<const int32_t>() : trees[i].tokens;
  }
  int num_tokens = 0;
  std::vector<SequenceGroup*> preempted;
  bool empty() const { return seqs.empty(); }
};

class Scheduler {
 public:
  Scheduler(SchedulerOptions options, BlockManager& block_manager);

  // Takes ownership of a new request; it waits for admission.
  void add(std::unique_ptr<SequenceGroup> group);
  // Frees the request's pages and removes it; returns it (status kAborted) or null if unknown.
  std::unique_ptr<SequenceGroup> abort(const std::string& request_id);

  SchedulerStep schedule();
  // After the model ran: the scheduled tokens' KV is written.
  void mark_computed(const SchedulerStep& step);

  // Gives a sequence KV of its own, sharing `parent`'s pages (no copy).
  void fork(Sequence& parent, Sequence& child);
  // Frees a sequence's pages (it finished or its beam was dropped).
  void free_seq(Sequence& seq);
  // A beam search's new live beams: beam i continues old beam parents[i]. A parent's first child
  // takes over its sequence (and pages), later children fork it, parents without a child are
  // freed. REQUIRES: every old beam with more than one child holds exactly its computed tokens
  // (a beam forced to its end, Sequence::forced_to_end, has one child at most).
  std::vector<std::unique_ptr<Sequence>> regroup_beams(std::vector<std::unique_ptr<Sequence>> old,
                                                       const std::vector<int>& parents);
  // Aborts every request (engine failure or shutdown), freeing their pages.
  std::vector<std::unique_ptr<SequenceGroup>> abort_all();
  // Removes a finished request (all its sequences must be freed) and returns it.
  std::unique_ptr<SequenceGroup> remove_finished(SequenceGroup* group);

  bool has_work() const { return !waiting_.empty() || !running_.empty(); }
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int num_running() const { return static_cast<int>(running_.size()); }
  int64_t num_preemptions() const { return num_preemptions_; }
  BlockManager& block_manager() { return block_manager_; }

 private:
  int num_running_seqs() const;
  bool allocate_group(SequenceGroup& group);
  void preempt(SequenceGroup& group);
  // Gives slots to the tokens of `seq` the block manager has not seen yet (sampled last step);
  // false, changing nothing, when pages ran out.
  bool reserve(Sequence& seq);
  void record_peak_blocks(SequenceGroup& group);
  // Plans the next chunk of `seq` within `token_budget` (reduced by what it takes). Without
  // chunked prefill a sequence runs whole or not at all; `whole_if_alone` lets a prompt larger
  // than the budget run whole when nothing else is in the step.
  void plan_chunk(SequenceGroup& group, Sequence& seq, bool whole_if_alone, int& token_budget,
                  std::vector<ScheduledSeq>& planned) const;

  SchedulerOptions options_;
  BlockManager& block_manager_;
  std::deque<std::unique_ptr<SequenceGroup>> waiting_;
  std::list<std::unique_ptr<SequenceGroup>> running_;  // admission order; newest at the back
  int64_t next_kv_id_ = 0;
  int64_t num_preemptions_ = 0;
};

}  // namespace earnserve
