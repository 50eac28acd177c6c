// BeamDrafter: the draft side of speculative beam search (AtSpeed, arXiv 2410.05165). It owns the
// draft model's executor (the model and its own KV storage, scheduler/executor/executor.h), the
// draft's block manager, and the KV of every speculative request's draft beams
// (SpeculativeState::draft_beams, one per live target beam). Each round draft() runs beam search
// with N beams for up to gamma steps from the target's live beams, one draft forward per depth
// batched over all requests of the step, and returns every drafted beam at every depth as a tree of
// distinct (parent, token) nodes (or, for relaxed verification, draws N candidates per depth from
// its own distribution and returns the distinct draws with counts). advance() then rolls the draft
// beams forward to the beams the target kept (fork/copy-on-write like ordinary beams).
//
// The draft's KV is best effort: when its pages run out, a request's draft beams are dropped and
// its round drafts nothing (the target then takes one ordinary beam step); the next round
// re-prefills them, mostly from the draft's prefix cache.
//
// The draft model reads the same token ids as the target (its tokenizer vocabulary must equal
// the target's) behind its own prompt wrapping (EARN registers when the draft is an EARN model).
// Not thread-safe: owned and driven by the engine thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cache/block_manager.h"
#include "core/status.h"
#include "model/tokenizer/tokenizer.h"
#include "scheduler/executor/executor.h"
#include "scheduler/executor/executor_options.h"
#include "scheduler/sequence.h"
#include "scheduler/speculative/calibration.h"
#include "scheduler/speculative/speculation_cost_model.h"

namespace earnserve {

struct DrafterOptions {
  // The draft model's checkpoint, device and KV pages (earn_marked_slot_ratio and earn_block_size
  // apply when the draft is an EARN model). No tensor parallelism: rank 0 alone runs the draft.
  ExecutorOptions executor;
  bool enable_prefix_caching = true;
};

// A drafted node below the live beams.
struct DraftTreeNode {
  // Index in the request's tree: 0..R-1 are the R live beams (depth 0), drafted nodes follow in
  // the order of DraftJob::nodes, so node i of `nodes` is tree node R + i.
  int parent = 0;
  int32_t token = 0;
  int32_t trie_node = 0;  // catalogue node after the token (constrained requests)
  int draws = 0;          // sampling mode: how many of the depth's N draws chose this node
};

// Sampling mode: the draft's distribution at one expanded tree node. q over a depth's candidates
// (parent node, token) is proportional to exp(weight(parent) + logprobs[token]).
struct DraftExpansion {
  int node = 0;         // tree node index (0..R-1: a live beam)
  float weight = 0.0f;  // live beam: the target's score; drafted node: weight(parent) + its logprob
  std::vector<int32_t> tokens;  // candidate tokens after the node (allowed, not stop), ascending
  std::vector<float> logprobs;  // the draft's log-probability of each
};

// One request's drafting this round.
struct DraftJob {
  SequenceGroup* group = nullptr;
  int max_depth = 0;  // depth to draft below the live beams; 0 = none
  int num_beams = 1;  // N, draft beams kept per depth
  // Relaxed verification: instead of keeping its N best, each depth draws N candidates i.i.d.
  // from q (see DraftExpansion) with counter_uniform(seed, counter++); the distinct ones
  // continue. `counter` is advanced past the draws used.
  bool sample = false;
  uint64_t seed = 0;
  uint64_t counter = 0;
  // Output: drafted nodes, parents before children, each depth's nodes best first (sampling: by
  // descending q).
  std::vector<DraftTreeNode> nodes;
  std::vector<DraftExpansion> expansions;  // sampling mode: every node expanded, in order
};

class BeamDrafter {
 public:
  // Loads the draft model and tokenizer from options.model_dir and sizes its KV cache. Errors
  // name the directory: unreadable checkpoint, or a vocabulary (tokenizer or logits width) that
  // differs from the target's.
  static StatusOr<std::unique_ptr<BeamDrafter>> create(const DrafterOptions& options,
                                                       const Tokenizer& target_tokenizer,
                                                       const ModelConfig& target_config);
  BeamDrafter(const BeamDrafter&) = delete;
  BeamDrafter& operator=(const BeamDrafter&) = delete;

  const std::string& model_dir() const { return options_.executor.model_dir; }
  // Whether a request's draft_model names this draft: its directory as given or its last
  // component.
  bool matches(const std::string& name) const;

  // Drafts a tree for every job in one draft forward per depth. Jobs whose group has no draft
  // beams first get them (the prompt prefilled once, forked per live beam). A job that cannot get
  // draft pages drafts nothing. REQUIRES: each group is a live beam search (beam set, not done)
  // whose live beams are group->seqs.
  Status draft(std::span<DraftJob> jobs);

  // After verification: the target's new live beam i is old live beam origins[i] followed by
  // appended[i]; the draft beams follow (the first beam of an origin takes its pages, the others
  // fork them; beams no new beam descends from are freed).
  void advance(SequenceGroup& group, std::span<const int> origins,
               std::span<const std::vector<int32_t>> appended);

  // Frees the request's draft pages (finish, abort, preemption).
  void release(SequenceGroup& group);

  // Draft sequences holding pages, and the fullest group's block usage (0 when nothing is held).
  int num_sequences() const { return block_manager_->num_sequences(); }
  double kv_usage() const { return block_manager_->usage(); }
  int64_t num_forward_calls() const { return num_forward_calls_; }
  // The draft's forward time by rows: calibrated by calibrate(), then every forward's.
  const StepCostTable& step_costs() const { return step_costs_; }
  // Times a few draft forwards of up to `max_rows` rows (calibration.h).
  CalibrationResult calibrate(int max_rows, const CalibrationOptions& options) {
    return calibrate_forwards(*executor_, *block_manager_, max_rows, options, step_costs_);
  }

 private:
  BeamDrafter() = default;

  // A draft sequence: a Sequence holding KV in the draft's block manager.
  std::unique_ptr<Sequence> new_sequence(std::span<const int32_t> tokens,
                                         std::span<const uint8_t> kept);
  // A copy of `parent` (all tokens computed) followed by `tokens`, or null without pages.
  std::unique_ptr<Sequence> fork_and_append(Sequence& parent, std::span<const int32_t> tokens);
  bool append(Sequence& seq, std::span<const int32_t> tokens);
  void free_sequence(Sequence& seq);
  // Gives the group draft beams for its live beams, forking `prompt` (computed); false (holding
  // nothing) without pages.
  bool start(SequenceGroup& group, Sequence& prompt);
  // Computes every uncomputed token of `seqs` in one draft forward and returns each sequence's
  // next-token log-probabilities: [seqs.size() * vocab], row i for seqs[i].
  StatusOr<std::vector<float>> forward(std::span<Sequence* const> seqs,
                                       std::span<SequenceGroup* const> owners);

  // Constant after construction.
  DrafterOptions options_;
  int64_t vocab_size_ = 0;
  int max_model_len_ = 0;

  std::unique_ptr<Executor> executor_;
  std::unique_ptr<BlockManager> block_manager_;
  int64_t next_kv_id_ = 0;
  int64_t num_forward_calls_ = 0;
  StepCostTable step_costs_;
};

}  // namespace earnserve
