// Paged attention on the CPU. Work is split into items (sequence, kv head, chunk of query
// positions), pulled dynamically by the worker threads since their costs differ widely.
//  - A prefill chunk gathers the KV entries its queries can see from the pages into contiguous
//    scratch, then computes all query heads of the group at once:
//      S = scale * Q K^T (sgemm), causal row-wise softmax, O = S V (sgemm).
//    Chunks are short enough that the causal upper triangle costs little and items are many.
//  - A decode (one query position) reads K and V in place, page by page, once for all query
//    heads of the group: a small-M sgemm plus the gather would cost more than the math.
// Shared prefixes (beam search) add a first phase, one item per (prefix, kv head): the prefix's
// K and V are gathered once, the queries of every member sequence are stacked, and
//   S = scale * Q K^T, m = rowmax S, l = rowsum exp(S - m), O = exp(S - m) V
// (two sgemms per chunk of rows) leave a partial softmax state per (query token, head): m and l
// in scratch, the unnormalised O in `out`. The per-sequence items of the second phase then cover
// only the entries past the prefix and merge their scores into that state (online softmax).
// Tree attention masks, in either kind of item, the scores of this step's queries that are not
// the query's ancestors to -inf before the softmax: a walk up the ancestor chain, O(q_len) per
// query, no larger than the score row itself.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/threading.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/blas_threads.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/vec_math.h"

namespace earnserve::cpu {
namespace {

// Upper bound on one item's score matrix (floats); longer contexts get shorter query chunks.
constexpr int64_t kMaxScoreFloats = int64_t{1} << 18;
// Target rows (query positions x heads of the group) of one prefill chunk.
constexpr int64_t kChunkRows = 128;
// Bound on the score matrix of one chunk of a prefix's stacked rows: small enough to stay in L2
// between the two sgemms, large enough (>= 64 rows for prompts up to 4k) for sgemm's tiling.
constexpr int64_t kMaxPrefixScoreFloats = int64_t{1} << 16;

struct WorkItem {
  int32_t seq;
  int32_t kv_head;
  int32_t q_begin;  // query positions [q_begin, q_end) within the sequence's q_len
  int32_t q_end;
};

// Phase one: every query token of one prefix's member sequences against one kv head.
struct PrefixItem {
  int32_t prefix;
  int32_t kv_head;
  int32_t first_seq;    // a member whose block table locates the prefix's pages
  int32_t token_begin;  // range of the call's prefix_tokens list
  int32_t token_end;
};

// Read-only view of the call's tensors, shared by all items.
struct Geometry {
  const float* query;              // [num_tokens, num_heads, head_dim]
  const float* key_cache;          // [num_blocks, block_size, num_kv_heads, head_dim]
  const float* value_cache;        // same
  const int32_t* block_tables;     // [num_seqs, max_blocks_per_seq]
  const int32_t* seq_lens;         // [num_seqs]
  const int32_t* query_start_loc;  // [num_seqs + 1]
  float* out;                      // [num_tokens, num_heads, head_dim]
  int64_t num_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
  int64_t group_size;  // query heads per kv head
  int64_t num_blocks;
  int64_t block_size;
  int64_t max_blocks_per_seq;
  float scale;
  // Shared prefixes; all null when the call has none.
  const int32_t* seq_prefix;   // [num_seqs], -1 = none
  const int32_t* prefix_lens;  // [num_prefixes]
  float* prefix_max;           // [num_tokens, num_heads] row max of the prefix's scaled scores
  float* prefix_sum;           // [num_tokens, num_heads] sum of exp(score - prefix_max)
  // Tree attention; null when the call is causal.
  const int32_t* query_parents;  // [num_tokens], parent's index within the sequence, -1 = root
};

// KV entries of `seq` already covered by its shared prefix (0 without one).
int64_t prefix_len_of(const Geometry& g, int64_t seq) {
  if (g.seq_prefix == nullptr || g.seq_prefix[seq] < 0) return 0;
  return g.prefix_lens[g.seq_prefix[seq]];
}

// Tree attention: hides the scores of the queries before query j of a sequence that are not j's
// ancestors. parents: the sequence's query_parents; tree_scores[a]: the score of its query a,
// for a < j (j's own score follows and stays). Ancestors strictly decrease up the chain, so the
// hidden entries are the gaps between consecutive ones.
void mask_non_ancestors(const int32_t* parents, int64_t j, float* tree_scores) {
  constexpr float kHidden = -std::numeric_limits<float>::infinity();
  int64_t gap_end = j;
  for (int64_t a = parents[j]; a >= 0; a = parents[a]) {
    std::fill(tree_scores + a + 1, tree_scores + gap_end, kHidden);
    gap_end = a;
  }
  std::fill(tree_scores, tree_scores + gap_end, kHidden);
}

struct Scratch {
  std::vector<float> q;       // prefill: [rows, head_dim], rows = chunk positions * group_size;
                              // decode: [group_size], 1 / softmax sum per head
  std::vector<float> k;       // [kv_len, head_dim]
  std::vector<float> v;       // [kv_len, head_dim]
  std::vector<float> scores;  // [rows, kv_len]
  std::vector<float> o;       // [rows, head_dim]
};

// Copies KV entries [kv_begin, kv_end) of one kv head of sequence `seq` out of the pages into
// rows [0, kv_end - kv_begin) of k and v.
void gather_kv(const Geometry& g, int32_t seq, int64_t kv_head, int64_t kv_begin, int64_t kv_end,
               float* k, float* v) {
  const int32_t* table = g.block_tables + seq * g.max_blocks_per_seq;
  const size_t entry_bytes = static_cast<size_t>(g.head_dim) * sizeof(float);
  for (int64_t j = kv_begin; j < kv_end;) {
    const int32_t block = table[j / g.block_size];
    ES_CHECK(0 <= block && block < g.num_blocks)
        << "paged_attention: block id " << block << " of sequence " << seq << " outside [0, "
        << g.num_blocks << ")";
    const int64_t offset = j % g.block_size;
    const int64_t run = std::min(g.block_size - offset, kv_end - j);
    for (int64_t e = 0; e < run; ++e) {
      const int64_t src =
          ((block * g.block_size + offset + e) * g.num_kv_heads + kv_head) * g.head_dim;
      std::memcpy(k + (j - kv_begin + e) * g.head_dim, g.key_cache + src, entry_bytes);
      std::memcpy(v + (j - kv_begin + e) * g.head_dim, g.value_cache + src, entry_bytes);
    }
    j += run;
  }
}

// One query position against its sequence's pages: all gs query heads of the kv head at once.
// With a shared prefix only the entries past it are read, merged into the prefix's state.
void run_decode_item(const Geometry& g, const WorkItem& item, Scratch& s) {
  const int64_t d = g.head_dim;
  const int64_t gs = g.group_size;
  const int64_t first_row = g.query_start_loc[item.seq];
  const int64_t q_len = g.query_start_loc[item.seq + 1] - first_row;
  const int64_t token = first_row + item.q_begin;
  const int64_t context = g.seq_lens[item.seq] - q_len;  // KV entries before this step's queries
  const int64_t kv_begin = prefix_len_of(g, item.seq);   // a multiple of block_size
  const int64_t kv_end = context + item.q_begin + 1;
  const int64_t kv_len = kv_end - kv_begin;
  const float* q = g.query + (token * g.num_heads + item.kv_head * gs) * d;  // [gs, d]
  const int32_t* table = g.block_tables + item.seq * g.max_blocks_per_seq;
  const int64_t entry_stride = g.num_kv_heads * d;

  // scores: [gs, kv_len], scaled logits, then probabilities (unnormalised).
  s.scores.resize(static_cast<size_t>(gs * kv_len));
  s.o.assign(static_cast<size_t>(gs * d), 0.0f);
  s.q.resize(static_cast<size_t>(gs));  // 1 / sum per head
  auto entry_offset = [&](int64_t block_index) {
    const int32_t block = table[block_index];
    ES_CHECK(0 <= block && block < g.num_blocks)
        << "paged_attention: block id " << block << " of sequence " << item.seq << " outside [0, "
        << g.num_blocks << ")";
    return (block * g.block_size * g.num_kv_heads + item.kv_head) * d;
  };
  for (int64_t j = kv_begin; j < kv_end; j += g.block_size) {
    const float* k = g.key_cache + entry_offset(j / g.block_size);
    const int64_t run = std::min(g.block_size, kv_end - j);
    for (int64_t r = 0; r < gs; ++r) {
      dot_multi(q + r * d, k, entry_stride, run, d, s.scores.data() + r * kv_len + j - kv_begin);
    }
  }
  float* out = g.out + (token * g.num_heads + item.kv_head * gs) * d;
  const int64_t state = token * g.num_heads + item.kv_head * gs;
  float* inv_sum = s.q.data();
  for (int64_t r = 0; r < gs; ++r) {
    float* row = s.scores.data() + r * kv_len;
    scale(row, g.scale, kv_len);
    if (g.query_parents != nullptr) {
      mask_non_ancestors(g.query_parents + first_row, item.q_begin, row + context - kv_begin);
    }
    const float m = max_value(row, kv_len);
    if (kv_begin == 0) {
      inv_sum[r] = 1.0f / exp_shifted(row, m, row, kv_len);
      continue;
    }
    // Rescale the prefix's state to the common maximum; its O sits in `out`.
    const float m_all = std::max(m, g.prefix_max[state + r]);
    const float alpha = std::exp(g.prefix_max[state + r] - m_all);
    inv_sum[r] = 1.0f / (exp_shifted(row, m_all, row, kv_len) + g.prefix_sum[state + r] * alpha);
    for (int64_t i = 0; i < d; ++i) s.o[r * d + i] = out[r * d + i] * alpha;
  }
  for (int64_t j = kv_begin; j < kv_end; j += g.block_size) {
    const float* v = g.value_cache + entry_offset(j / g.block_size);
    const int64_t run = std::min(g.block_size, kv_end - j);
    for (int64_t r = 0; r < gs; ++r) {
      accumulate_rows(s.scores.data() + r * kv_len + j - kv_begin, v, entry_stride, run, d,
                      s.o.data() + r * d);
    }
  }
  for (int64_t r = 0; r < gs; ++r) {
    for (int64_t i = 0; i < d; ++i) out[r * d + i] = s.o[r * d + i] * inv_sum[r];
  }
}

// A chunk of query positions of one sequence: gathered K/V, two sgemms. With a shared prefix
// only the entries past it are gathered, merged into the prefix's state.
void run_prefill_item(const Geometry& g, const WorkItem& item, Scratch& s) {
  const int64_t d = g.head_dim;
  const int64_t gs = g.group_size;
  const int64_t first_row = g.query_start_loc[item.seq];
  const int64_t q_len = g.query_start_loc[item.seq + 1] - first_row;
  const int64_t context = g.seq_lens[item.seq] - q_len;  // KV entries before this step's queries
  const int64_t num_pos = item.q_end - item.q_begin;
  const int64_t rows = num_pos * gs;
  const int64_t kv_begin = prefix_len_of(g, item.seq);
  const int64_t kv_len = context + item.q_end - kv_begin;  // entries the chunk may see

  s.q.resize(static_cast<size_t>(rows * d));
  s.k.resize(static_cast<size_t>(kv_len * d));
  s.v.resize(static_cast<size_t>(kv_len * d));
  s.scores.resize(static_cast<size_t>(rows * kv_len));
  s.o.resize(static_cast<size_t>(rows * d));

  gather_kv(g, item.seq, item.kv_head, kv_begin, kv_begin + kv_len, s.k.data(), s.v.data());
  // Row (p, r) of Q is query head kv_head * gs + r of position q_begin + p.
  for (int64_t p = 0; p < num_pos; ++p) {
    const int64_t token = first_row + item.q_begin + p;
    std::memcpy(s.q.data() + p * gs * d, g.query + (token * g.num_heads + item.kv_head * gs) * d,
                static_cast<size_t>(gs * d) * sizeof(float));
  }

  sgemm(true, static_cast<int>(rows), static_cast<int>(kv_len), static_cast<int>(d), g.scale,
        s.q.data(), static_cast<int>(d), s.k.data(), static_cast<int>(d), 0.0f, s.scores.data(),
        static_cast<int>(kv_len));
  for (int64_t p = 0; p < num_pos; ++p) {
    const int64_t visible = context + item.q_begin + p + 1 - kv_begin;
    const int64_t token = first_row + item.q_begin + p;
    for (int64_t r = 0; r < gs; ++r) {
      float* row = s.scores.data() + (p * gs + r) * kv_len;
      if (g.query_parents != nullptr) {
        mask_non_ancestors(g.query_parents + first_row, item.q_begin + p, row + context - kv_begin);
      }
      const float m = max_value(row, visible);
      if (kv_begin == 0) {
        const float sum = exp_shifted(row, m, row, visible);
        scale(row, 1.0f / sum, visible);
      } else {
        // Normalised here, so the prefix's O enters the second sgemm as C (beta = 1) scaled
        // by alpha / sum.
        const int64_t state = token * g.num_heads + item.kv_head * gs + r;
        const float m_all = std::max(m, g.prefix_max[state]);
        const float alpha = std::exp(g.prefix_max[state] - m_all);
        const float inv_sum =
            1.0f / (exp_shifted(row, m_all, row, visible) + g.prefix_sum[state] * alpha);
        scale(row, inv_sum, visible);
        const float* prefix_o = g.out + state * d;
        float* o = s.o.data() + (p * gs + r) * d;
        for (int64_t i = 0; i < d; ++i) o[i] = prefix_o[i] * (alpha * inv_sum);
      }
      std::fill(row + visible, row + kv_len, 0.0f);
    }
  }
  sgemm(false, static_cast<int>(rows), static_cast<int>(d), static_cast<int>(kv_len), 1.0f,
        s.scores.data(), static_cast<int>(kv_len), s.v.data(), static_cast<int>(d),
        kv_begin == 0 ? 0.0f : 1.0f, s.o.data(), static_cast<int>(d));
  for (int64_t p = 0; p < num_pos; ++p) {
    const int64_t token = first_row + item.q_begin + p;
    std::memcpy(g.out + (token * g.num_heads + item.kv_head * gs) * d, s.o.data() + p * gs * d,
                static_cast<size_t>(gs * d) * sizeof(float));
  }
}

// Every query token of a prefix's members against the prefix's entries of one kv head: K and V
// gathered once, then rows in chunks that bound the score matrix. Leaves the partial softmax
// state: prefix_max, prefix_sum and the unnormalised O in `out`.
void run_prefix_item(const Geometry& g, const PrefixItem& item, const int32_t* tokens, Scratch& s) {
  const int64_t d = g.head_dim;
  const int64_t gs = g.group_size;
  const int64_t prefix_len = g.prefix_lens[item.prefix];
  s.k.resize(static_cast<size_t>(prefix_len * d));
  s.v.resize(static_cast<size_t>(prefix_len * d));
  gather_kv(g, item.first_seq, item.kv_head, 0, prefix_len, s.k.data(), s.v.data());

  const int64_t chunk = std::max<int64_t>(1, kMaxPrefixScoreFloats / (gs * prefix_len));
  for (int64_t t0 = item.token_begin; t0 < item.token_end; t0 += chunk) {
    const int64_t num_tokens = std::min(chunk, item.token_end - t0);
    const int64_t rows = num_tokens * gs;
    s.q.resize(static_cast<size_t>(rows * d));
    s.scores.resize(static_cast<size_t>(rows * prefix_len));
    s.o.resize(static_cast<size_t>(rows * d));
    // Row (t, r) of Q is query head kv_head * gs + r of token tokens[t0 + t].
    for (int64_t t = 0; t < num_tokens; ++t) {
      std::memcpy(s.q.data() + t * gs * d,
                  g.query + (tokens[t0 + t] * g.num_heads + item.kv_head * gs) * d,
                  static_cast<size_t>(gs * d) * sizeof(float));
    }
    sgemm(true, static_cast<int>(rows), static_cast<int>(prefix_len), static_cast<int>(d), g.scale,
          s.q.data(), static_cast<int>(d), s.k.data(), static_cast<int>(d), 0.0f, s.scores.data(),
          static_cast<int>(prefix_len));
    for (int64_t t = 0; t < num_tokens; ++t) {
      const int64_t state = tokens[t0 + t] * g.num_heads + item.kv_head * gs;
      for (int64_t r = 0; r < gs; ++r) {
        float* row = s.scores.data() + (t * gs + r) * prefix_len;
        const float m = max_value(row, prefix_len);
        g.prefix_max[state + r] = m;
        g.prefix_sum[state + r] = exp_shifted(row, m, row, prefix_len);
      }
    }
    sgemm(false, static_cast<int>(rows), static_cast<int>(d), static_cast<int>(prefix_len), 1.0f,
          s.scores.data(), static_cast<int>(prefix_len), s.v.data(), static_cast<int>(d), 0.0f,
          s.o.data(), static_cast<int>(d));
    for (int64_t t = 0; t < num_tokens; ++t) {
      std::memcpy(g.out + (tokens[t0 + t] * g.num_heads + item.kv_head * gs) * d,
                  s.o.data() + t * gs * d, static_cast<size_t>(gs * d) * sizeof(float));
    }
  }
}

Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

// Runs fn(i, scratch) for i in [0, count), items pulled dynamically by the workers; `work`
// (multiply-adds of all items) below a few parallel grains keeps the call on one thread.
template <typename Fn>
void run_items(size_t count, int64_t work, Fn&& fn) {
  if (count == 0) return;
  const int64_t workers = work < 4 * kMinParallelWork
                              ? 1
                              : std::min<int64_t>(num_threads(), static_cast<int64_t>(count));
  std::atomic<size_t> next{0};
  parallel_for(workers, 1, [&](int64_t, int64_t) {
    Scratch& scratch = thread_scratch();
    for (size_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) fn(i, scratch);
  });
}

}  // namespace

void paged_attention(const ops::PagedAttentionArgs& args, Tensor& out) {
  Geometry g;
  g.query = args.query.data<float>();
  g.key_cache = args.key_cache.data<float>();
  g.value_cache = args.value_cache.data<float>();
  g.block_tables = args.block_tables.data<int32_t>();
  g.seq_lens = args.seq_lens.data<int32_t>();
  g.query_start_loc = args.query_start_loc.data<int32_t>();
  g.out = out.data<float>();
  g.num_heads = args.query.dim(1);
  g.head_dim = args.query.dim(2);
  g.num_blocks = args.key_cache.dim(0);
  g.block_size = args.key_cache.dim(1);
  g.num_kv_heads = args.key_cache.dim(2);
  g.group_size = g.num_heads / g.num_kv_heads;
  g.max_blocks_per_seq = args.block_tables.dim(1);
  g.scale = args.scale;
  // ops::paged_attention has checked the prefix fields' shapes and values.
  const bool has_prefixes = args.seq_prefix.defined();
  g.seq_prefix = has_prefixes ? args.seq_prefix.data<int32_t>() : nullptr;
  g.prefix_lens = has_prefixes ? args.prefix_lens.data<int32_t>() : nullptr;
  g.prefix_max = nullptr;
  g.prefix_sum = nullptr;
  // ops::paged_attention has checked every parent lies in [-1, its own index).
  g.query_parents = args.query_parents.defined() ? args.query_parents.data<int32_t>() : nullptr;

  const int64_t num_seqs = args.seq_lens.dim(0);
  const int64_t num_tokens = args.query.dim(0);
  ES_CHECK(g.query_start_loc[0] == 0 && g.query_start_loc[num_seqs] == num_tokens)
      << "paged_attention: query_start_loc must run from 0 to num_tokens (" << num_tokens << ")";
  std::vector<WorkItem> items;
  int64_t work = 0;  // multiply-adds of QK^T and PV
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t q_len = g.query_start_loc[s + 1] - g.query_start_loc[s];
    const int64_t seq_len = g.seq_lens[s];
    ES_CHECK(q_len >= 0) << "paged_attention: query_start_loc decreases at sequence " << s;
    ES_CHECK(q_len <= seq_len && seq_len <= g.max_blocks_per_seq * g.block_size)
        << "paged_attention: sequence " << s << " has " << q_len << " queries, " << seq_len
        << " KV entries and room for " << g.max_blocks_per_seq * g.block_size;
    if (q_len == 0) continue;
    const int64_t own_len = seq_len - prefix_len_of(g, s);  // entries this sequence reads itself
    const int64_t chunk = std::clamp<int64_t>(
        std::min(kMaxScoreFloats / (g.group_size * own_len), kChunkRows / g.group_size), 1, q_len);
    for (int64_t q0 = 0; q0 < q_len; q0 += chunk) {
      for (int64_t h = 0; h < g.num_kv_heads; ++h) {
        items.push_back({static_cast<int32_t>(s), static_cast<int32_t>(h), static_cast<int32_t>(q0),
                         static_cast<int32_t>(std::min(q_len, q0 + chunk))});
      }
    }
    work += 4 * q_len * g.num_heads * own_len * g.head_dim;
  }
  if (items.empty()) return;

  ScopedSingleThreadBlas single_thread_blas;
  std::vector<float> prefix_state;     // [2, num_tokens, num_heads]: max, then sum
  std::vector<int32_t> prefix_tokens;  // query tokens of prefix members, grouped by prefix
  std::vector<PrefixItem> prefix_items;
  if (has_prefixes) {
    const int64_t num_prefixes = args.prefix_lens.dim(0);
    std::vector<int32_t> offsets(static_cast<size_t>(num_prefixes + 1), 0);
    std::vector<int32_t> first_seq(static_cast<size_t>(num_prefixes), -1);
    for (int64_t s = 0; s < num_seqs; ++s) {
      const int32_t p = g.seq_prefix[s];
      if (p < 0) continue;
      offsets[p + 1] += g.query_start_loc[s + 1] - g.query_start_loc[s];
      if (first_seq[p] < 0) first_seq[p] = static_cast<int32_t>(s);
    }
    for (int64_t p = 0; p < num_prefixes; ++p) offsets[p + 1] += offsets[p];
    prefix_tokens.resize(static_cast<size_t>(offsets.back()));
    std::vector<int32_t> cursor(offsets.begin(), offsets.end() - 1);
    for (int64_t s = 0; s < num_seqs; ++s) {
      const int32_t p = g.seq_prefix[s];
      if (p < 0) continue;
      for (int32_t t = g.query_start_loc[s]; t < g.query_start_loc[s + 1]; ++t) {
        prefix_tokens[cursor[p]++] = t;
      }
    }
    int64_t prefix_work = 0;
    for (int64_t p = 0; p < num_prefixes; ++p) {
      if (offsets[p + 1] == offsets[p]) continue;
      for (int64_t h = 0; h < g.num_kv_heads; ++h) {
        prefix_items.push_back({static_cast<int32_t>(p), static_cast<int32_t>(h), first_seq[p],
                                offsets[p], offsets[p + 1]});
      }
      prefix_work +=
          4 * int64_t{offsets[p + 1] - offsets[p]} * g.num_heads * g.prefix_lens[p] * g.head_dim;
    }
    prefix_state.resize(static_cast<size_t>(2 * num_tokens * g.num_heads));
    g.prefix_max = prefix_state.data();
    g.prefix_sum = prefix_state.data() + num_tokens * g.num_heads;
    run_items(prefix_items.size(), prefix_work, [&](size_t i, Scratch& scratch) {
      run_prefix_item(g, prefix_items[i], prefix_tokens.data(), scratch);
    });
  }

  run_items(items.size(), work, [&](size_t i, Scratch& scratch) {
    const WorkItem& item = items[i];
    if (item.q_end - item.q_begin == 1) {
      run_decode_item(g, item, scratch);
    } else {
      run_prefill_item(g, item, scratch);
    }
  });
}

}  // namespace earnserve::cpu
