// Tensor parallelism in LlamaModel (model/tensor_parallel.h): tp = 2 and 4 ranks as threads of
// this process, each with its own Gloo communicator over loopback and its own KV pages, run the
// same steps as the unsplit model: a batched prefill of two prompts, then decode steps, with the
// EARN register layer group for EARN checkpoints. Every rank's logits must be those of tp = 1
// within 1e-5, and every rank's KV pages must hold exactly the KV heads the split gives it (a
// replica when tp exceeds num_key_value_heads). Configs that do not split are load errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <thread>

#include "kernels/cpu/vec_math.h"
#include "model/fixed_slot_runner.h"
#include "model/llama.h"
#include "model/parallel/communicator.h"
#include "model/registry.h"
#include "tests/model/model_test_util.h"
#include "tests/parallel/test_ports.h"

namespace earnserve {
namespace {

constexpr double kTolerance = 1e-5;
// int8 shards that cut activation blocks (see EveryRankMatchesTheUnsplitModel): the size of the
// random fixtures' int8 quantisation error itself (LlamaInt8Test: up to 0.24 against f32).
constexpr double kInt8CutBlockTolerance = 0.25;
constexpr int64_t kBlockSize = 4;
constexpr int64_t kBlocksPerSeq = 16;  // per sequence and layer group: 64 tokens
constexpr int kNumSeqs = 2;
constexpr int kNumDecodes = 3;

// A token of a step; `upper` says whether it takes part in the layers from EARN's split_layer up
// (registers and generated tokens do, prompt tokens do not). Ignored for plain models.
struct StepToken {
  int32_t id;
  bool upper;
};
// One step: each sequence's new tokens.
using Step = std::vector<std::vector<StepToken>>;

// Two prompts (21 and 9 tokens) prefilled in one step, then kNumDecodes steps of one token per
// sequence. EARN prompts are wrapped as the engine wraps them: [BOS] prefix registers, prompt,
// suffix registers.
std::vector<Step> make_script(const ModelConfig& c) {
  const int32_t num_registers = c.earn ? static_cast<int32_t>(c.earn->prefix_register_ids.size() +
                                                              c.earn->suffix_register_ids.size())
                                       : 0;
  // Ordinary ids stay below the register ids, which the EARN fixtures put at the vocab's end.
  const int32_t num_plain = static_cast<int32_t>(c.vocab_size) - num_registers;
  std::vector<Step> script;
  Step prefill;
  for (int s = 0; s < kNumSeqs; ++s) {
    std::vector<StepToken> tokens;
    if (c.earn && c.bos_token_id >= 0)
      tokens.push_back({static_cast<int32_t>(c.bos_token_id), false});
    if (c.earn) {
      for (int32_t id : c.earn->prefix_register_ids) tokens.push_back({id, true});
    }
    const int prompt_len = s == 0 ? 21 : 9;
    for (int i = 0; i < prompt_len; ++i) {
      tokens.push_back({(i * 37 + s * 101 + 11) % num_plain, !c.earn.has_value()});
    }
    if (c.earn) {
      for (int32_t id : c.earn->suffix_register_ids) tokens.push_back({id, true});
    }
    prefill.push_back(std::move(tokens));
  }
  script.push_back(std::move(prefill));
  for (int step = 0; step < kNumDecodes; ++step) {
    Step decode;
    for (int s = 0; s < kNumSeqs; ++s) {
      decode.push_back({{(step * 53 + s * 17 + 5) % num_plain, true}});
    }
    script.push_back(std::move(decode));
  }
  return script;
}

struct ScriptResult {
  std::vector<Tensor> logits;  // per step: [rows of the last group, vocab]
  KvCacheRefs kv;
};

// Runs `script` on `model` with fresh KV pages sized by num_local_kv_heads(), building each
// ForwardBatch as the model tests do: group 0 for every layer below EARN's split_layer (all rows),
// group 1 above it (the `upper` rows, narrowed with token_indices). Sequence s owns blocks
// [s * kBlocksPerSeq, ...) in group 0 and [(kNumSeqs + s) * kBlocksPerSeq, ...) in group 1.
// Logits of every row of the last group.
StatusOr<ScriptResult> run_script(CausalLM& model, const std::vector<Step>& script) {
  const ModelConfig& c = model.config();
  const int num_layers = static_cast<int>(c.num_hidden_layers);
  const int split = c.earn ? static_cast<int>(c.earn->split_layer) : num_layers;
  const bool two_groups = split < num_layers;
  ScriptResult result;
  const Shape pages = {2 * kNumSeqs * kBlocksPerSeq, kBlockSize, model.num_local_kv_heads(),
                       c.head_dim};
  for (int l = 0; l < num_layers; ++l) {
    ES_ASSIGN_OR_RETURN(Tensor key, Tensor::zeros(pages, DType::kF32));
    ES_ASSIGN_OR_RETURN(Tensor value, Tensor::zeros(pages, DType::kF32));
    result.kv.key.push_back(key);
    result.kv.value.push_back(value);
  }
  auto slot = [](int seq, int group, int32_t pos) {
    const int64_t block = (group * kNumSeqs + seq) * kBlocksPerSeq + pos / kBlockSize;
    return static_cast<int32_t>(block * kBlockSize + pos % kBlockSize);
  };
  std::vector<int32_t> lens[2] = {std::vector<int32_t>(kNumSeqs, 0),
                                  std::vector<int32_t>(kNumSeqs, 0)};
  for (const Step& step : script) {
    std::vector<int32_t> ids, positions, rows1, slots[2], seq_lens[2], starts[2] = {{0}, {0}},
                                                                       tables[2];
    for (int s = 0; s < kNumSeqs; ++s) {
      for (const StepToken& t : step[static_cast<size_t>(s)]) {
        if (two_groups && t.upper) {
          rows1.push_back(static_cast<int32_t>(ids.size()));
          slots[1].push_back(slot(s, 1, lens[1][s]++));
        }
        ids.push_back(t.id);
        positions.push_back(lens[0][s]);
        slots[0].push_back(slot(s, 0, lens[0][s]++));
      }
      starts[0].push_back(static_cast<int32_t>(ids.size()));
      starts[1].push_back(static_cast<int32_t>(rows1.size()));
      for (int g = 0; g < 2; ++g) {
        seq_lens[g].push_back(lens[g][s]);
        for (int64_t b = 0; b < kBlocksPerSeq; ++b) {
          tables[g].push_back(static_cast<int32_t>((g * kNumSeqs + s) * kBlocksPerSeq + b));
        }
      }
    }
    ForwardBatch batch;
    batch.token_ids = Tensor::from_vector(ids);
    batch.positions = Tensor::from_vector(positions);
    for (int g = 0; g < (two_groups ? 2 : 1); ++g) {
      AttentionMetadata group;
      if (g == 1) group.token_indices = Tensor::from_vector(rows1);
      group.slot_mapping = Tensor::from_vector(slots[g]);
      group.block_tables = Tensor::from_vector(tables[g], {kNumSeqs, kBlocksPerSeq});
      group.seq_lens = Tensor::from_vector(seq_lens[g]);
      group.query_start_loc = Tensor::from_vector(starts[g]);
      batch.groups.push_back(std::move(group));
    }
    for (int l = 0; l < num_layers; ++l) batch.layer_group.push_back(two_groups && l >= split);
    const int32_t num_rows = static_cast<int32_t>(two_groups ? rows1.size() : ids.size());
    std::vector<int32_t> wanted(static_cast<size_t>(num_rows));
    for (int32_t r = 0; r < num_rows; ++r) wanted[static_cast<size_t>(r)] = r;
    batch.logits_indices = Tensor::from_vector(wanted);
    Tensor logits = Tensor::cpu({num_rows, c.vocab_size}, DType::kF32);
    ES_RETURN_IF_ERROR(model.forward(batch, result.kv, logits));
    result.logits.push_back(logits);
  }
  return result;
}

RendezvousOptions rendezvous(int port, int rank, int world_size) {
  RendezvousOptions o;
  o.master_addr = "127.0.0.1";
  o.master_port = port;
  o.rank = rank;
  o.world_size = world_size;
  o.hostname = "127.0.0.1";
  o.timeout = std::chrono::milliseconds(60000);
  return o;
}

// Runs `body` on `world_size` threads, each with its own Gloo communicator; returns each rank's
// Status (the rendezvous error, or what body returned).
std::vector<Status> run_world(int world_size,
                              const std::function<Status(int rank, Communicator&)>& body) {
  const int port = free_loopback_port();
  std::vector<Status> results(static_cast<size_t>(world_size));
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world_size; ++rank) {
    threads.emplace_back([&, rank] {
      auto comm = create_gloo_communicator(rendezvous(port, rank, world_size));
      results[static_cast<size_t>(rank)] = comm.ok() ? body(rank, **comm) : comm.status();
    });
  }
  for (std::thread& t : threads) t.join();
  return results;
}

LoadOptions tp_options(int rank, int size, Communicator* comm, bool vocab_parallel, DType dtype) {
  LoadOptions options;
  options.weight_dtype = dtype;
  options.tensor_parallel.rank = rank;
  options.tensor_parallel.size = size;
  options.tensor_parallel.comm = comm;
  options.tensor_parallel.vocab_parallel_embeddings = vocab_parallel;
  return options;
}

// The KV head that local head 0 of `rank` must hold, from the documented mapping: a contiguous
// share when tp <= KV, else the KV head of the rank's query heads (tp / KV ranks per head).
int64_t expected_first_kv_head(int rank, int tp, int64_t num_kv_heads) {
  return tp <= num_kv_heads ? rank * (num_kv_heads / tp) : rank / (tp / num_kv_heads);
}

// Every KV entry of `local` ([blocks, block_size, local_kv, head_dim]) equals the entry of
// reference head first_head + j in `full` ([blocks, block_size, kv, head_dim]).
::testing::AssertionResult kv_heads_match(const Tensor& local, const Tensor& full,
                                          int64_t first_head, const std::string& what,
                                          double tolerance) {
  const int64_t num_slots = full.dim(0) * full.dim(1);
  const int64_t local_heads = local.dim(2);
  const int64_t head_dim = full.dim(3);
  std::vector<float> expected;
  for (int64_t slot = 0; slot < num_slots; ++slot) {
    for (int64_t j = 0; j < local_heads; ++j) {
      const float* src = full.data<float>() + (slot * full.dim(2) + first_head + j) * head_dim;
      expected.insert(expected.end(), src, src + head_dim);
    }
  }
  return testing::logits_close(local.data<float>(), expected, tolerance, what);
}

struct TpCase {
  const char* fixture;
  int tp;
  bool vocab_parallel;
  DType weight_dtype = DType::kF32;
};

void PrintTo(const TpCase& c, std::ostream* os) {
  *os << c.fixture << " tp=" << c.tp << (c.vocab_parallel ? " vocab-parallel" : "") << " as "
      << dtype_name(c.weight_dtype);
}

std::string case_name(const ::testing::TestParamInfo<TpCase>& info) {
  std::string name = std::string(info.param.fixture) + "_tp" + std::to_string(info.param.tp) +
                     (info.param.vocab_parallel ? "_vocab_parallel_" : "_") +
                     dtype_name(info.param.weight_dtype);
  for (char& ch : name) {
    if (ch == '-') ch = '_';
  }
  return name;
}

class TensorParallelTest : public ::testing::TestWithParam<TpCase> {};

TEST_P(TensorParallelTest, EveryRankMatchesTheUnsplitModel) {
  const TpCase& p = GetParam();
  const std::string dir = testing::fixture_model_dir(p.fixture);
  LoadOptions plain;
  plain.weight_dtype = p.weight_dtype;
  auto reference_model = load_causal_lm(dir, plain);
  ASSERT_TRUE(reference_model.ok()) << reference_model.status().to_string();
  const ModelConfig config = (*reference_model)->config();
  ASSERT_EQ(config.num_attention_heads % p.tp, 0);
  const std::vector<Step> script = make_script(config);
  auto reference = run_script(**reference_model, script);
  ASSERT_TRUE(reference.ok()) << reference.status().to_string();

  // int8 activations are quantised in blocks of 32 columns. A row-parallel shard (o_proj,
  // down_proj) whose width is a multiple of 32 sees the unsplit layer's blocks, so its partial
  // products add up to the unsplit layer's within f32 rounding (every real model's shards are
  // such: head_dim 64 or 128, intermediate sizes like 4864 and 8192); a narrower shard cuts blocks
  // at its edges and quantises them on their own, which agrees within quantisation error.
  const bool blocks_aligned =
      (config.num_attention_heads / p.tp * config.head_dim) % cpu::kI8Block == 0 &&
      (config.intermediate_size / p.tp) % cpu::kI8Block == 0;
  const double tolerance =
      p.weight_dtype == DType::kI8 && !blocks_aligned ? kInt8CutBlockTolerance : kTolerance;
  const int64_t num_kv_heads = config.num_key_value_heads;
  const int64_t local_kv = std::max<int64_t>(1, num_kv_heads / p.tp);
  std::vector<ScriptResult> results(static_cast<size_t>(p.tp));
  std::vector<int64_t> reported_kv(static_cast<size_t>(p.tp));
  std::vector<Status> statuses = run_world(p.tp, [&](int rank, Communicator& comm) -> Status {
    ES_ASSIGN_OR_RETURN(
        std::unique_ptr<CausalLM> model,
        load_causal_lm(dir, tp_options(rank, p.tp, &comm, p.vocab_parallel, p.weight_dtype)));
    reported_kv[static_cast<size_t>(rank)] = model->num_local_kv_heads();
    ES_ASSIGN_OR_RETURN(results[static_cast<size_t>(rank)], run_script(*model, script));
    return Status::Ok();
  });

  for (int rank = 0; rank < p.tp; ++rank) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    ASSERT_TRUE(statuses[static_cast<size_t>(rank)].ok())
        << statuses[static_cast<size_t>(rank)].to_string();
    EXPECT_EQ(reported_kv[static_cast<size_t>(rank)], local_kv);
    const ScriptResult& got = results[static_cast<size_t>(rank)];
    ASSERT_EQ(got.logits.size(), reference->logits.size());
    for (size_t step = 0; step < got.logits.size(); ++step) {
      const Tensor& expected = reference->logits[step];
      ASSERT_EQ(got.logits[step].shape(), expected.shape());
      const std::vector<float> all = expected.to_float_vector();
      for (int64_t row = 0; row < expected.dim(0); ++row) {
        const std::vector<float> want(all.begin() + row * config.vocab_size,
                                      all.begin() + (row + 1) * config.vocab_size);
        EXPECT_TRUE(testing::logits_close(
            got.logits[step].data<float>() + row * config.vocab_size, want, tolerance,
            "step " + std::to_string(step) + ", row " + std::to_string(row)));
      }
    }
    const int64_t first = expected_first_kv_head(rank, p.tp, num_kv_heads);
    for (size_t l = 0; l < got.kv.key.size(); ++l) {
      ASSERT_EQ(got.kv.key[l].dim(2), local_kv);
      EXPECT_TRUE(kv_heads_match(got.kv.key[l], reference->kv.key[l], first,
                                 "keys of layer " + std::to_string(l), tolerance));
      EXPECT_TRUE(kv_heads_match(got.kv.value[l], reference->kv.value[l], first,
                                 "values of layer " + std::to_string(l), tolerance));
    }
  }
}

// Every fixture has 4 query heads and 2 KV heads: tp = 2 splits the KV heads, tp = 4 replicates
// each on two ranks. int8 cases compare with the unsplit int8 model: o_proj and down_proj shards
// keep their whole rows' scales, so the ranks' partial products add up to the unsplit layer's
// where the shards hold whole activation blocks (tiny-earn at tp = 2: 32-column shards) and
// within quantisation error where they cut them (tiny-qwen2's 88-column down_proj shards at tp = 2,
// tiny-llama3-bf16's 40 at tp = 4).
// tiny-llama3-bf16 has an o_proj bias; tiny-qwen2 q/k/v biases; tiny-earn (vocab 2915) and
// tiny-earn-suffix (2910) the EARN layer groups.
INSTANTIATE_TEST_SUITE_P(
    Fixtures, TensorParallelTest,
    ::testing::Values(TpCase{"tiny-qwen2", 2, false}, TpCase{"tiny-qwen2", 4, false},
                      TpCase{"tiny-qwen2", 2, true}, TpCase{"tiny-qwen2", 4, true},
                      TpCase{"tiny-llama3-bf16", 2, false}, TpCase{"tiny-llama3-bf16", 4, true},
                      TpCase{"tiny-llama3-bf16", 2, true, DType::kBF16},
                      TpCase{"tiny-llama3-bf16", 4, false, DType::kBF16},
                      TpCase{"tiny-qwen2", 2, false, DType::kI8},
                      TpCase{"tiny-llama3-bf16", 4, true, DType::kI8},
                      TpCase{"tiny-earn", 2, false, DType::kI8}, TpCase{"tiny-earn", 2, false},
                      TpCase{"tiny-earn", 4, false}, TpCase{"tiny-earn-suffix", 2, true}),
    case_name);

// FixedSlotRunner sizes its pages with num_local_kv_heads(), so it drives a split model as is.
TEST(TensorParallelRunnerTest, GreedyGenerationEqualsTheUnsplitModel) {
  const std::string dir = testing::fixture_model_dir("tiny-qwen2");
  const std::vector<int32_t> prompt = {5, 77, 123, 9, 250, 31, 64};
  auto reference_model = load_causal_lm(dir, LoadOptions());
  ASSERT_TRUE(reference_model.ok()) << reference_model.status().to_string();
  FixedSlotRunner reference_runner(**reference_model, 1, 32);
  auto expected = reference_runner.generate_greedy(0, prompt, 10);
  ASSERT_TRUE(expected.ok()) << expected.status().to_string();

  std::vector<std::vector<int32_t>> generated(2);
  std::vector<Status> statuses = run_world(2, [&](int rank, Communicator& comm) -> Status {
    ES_ASSIGN_OR_RETURN(std::unique_ptr<CausalLM> model,
                        load_causal_lm(dir, tp_options(rank, 2, &comm, true, DType::kF32)));
    FixedSlotRunner runner(*model, 1, 32);
    ES_ASSIGN_OR_RETURN(generated[static_cast<size_t>(rank)],
                        runner.generate_greedy(0, prompt, 10));
    return Status::Ok();
  });
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(statuses[static_cast<size_t>(rank)].ok())
        << statuses[static_cast<size_t>(rank)].to_string();
    EXPECT_EQ(generated[static_cast<size_t>(rank)], *expected) << "rank " << rank;
  }
}

// ---- Load errors ------------------------------------------------------------------------------

// Loads `dir` on `tp` ranks; returns each rank's error message ("" when it loaded).
std::vector<std::string> load_messages(const std::string& dir, int tp, bool vocab_parallel) {
  std::vector<std::string> messages(static_cast<size_t>(tp));
  std::vector<Status> statuses = run_world(tp, [&](int rank, Communicator& comm) -> Status {
    auto model = load_causal_lm(dir, tp_options(rank, tp, &comm, vocab_parallel, DType::kF32));
    messages[static_cast<size_t>(rank)] = model.ok() ? "" : model.status().message();
    return Status::Ok();
  });
  for (const Status& s : statuses) EXPECT_TRUE(s.ok()) << s.to_string();
  return messages;
}

TEST(TensorParallelLoadTest, HeadsNotDivisibleByTpNameTheField) {
  const std::string dir = testing::fixture_model_dir("tiny-qwen2");
  for (const std::string& message : load_messages(dir, 3, false)) {
    EXPECT_EQ(message, dir +
                           "/config.json: field 'num_attention_heads' (4) is not divisible by "
                           "the tensor-parallel size 3");
  }
}

TEST(TensorParallelLoadTest, IntermediateSizeNotDivisibleByTpNamesTheField) {
  testing::TempDir dir;
  const std::string src = testing::fixture_model_dir("tiny-qwen2");
  nlohmann::json config = testing::read_json_or_fail(src + "/config.json");
  config["intermediate_size"] = 177;
  testing::write_file(dir.file("config.json"), config.dump());
  std::filesystem::create_symlink(src + "/model.safetensors", dir.file("model.safetensors"));
  for (const std::string& message : load_messages(dir.path(), 2, false)) {
    EXPECT_EQ(message, dir.file("config.json") +
                           ": field 'intermediate_size' (177) is not divisible by the "
                           "tensor-parallel size 2");
  }
}

// tiny-earn's vocabulary (2915) splits only when the embeddings are vocab-parallel; replicated it
// loads (and runs: EveryRankMatchesTheUnsplitModel/tiny_earn_tp2).
TEST(TensorParallelLoadTest, VocabNotDivisibleIsAnErrorOnlyForVocabParallel) {
  const std::string dir = testing::fixture_model_dir("tiny-earn");
  for (const std::string& message : load_messages(dir, 2, true)) {
    EXPECT_EQ(message, dir +
                           "/config.json: field 'vocab_size' (2915) is not divisible by the "
                           "tensor-parallel size 2 (vocab_parallel_embeddings)");
  }
  for (const std::string& message : load_messages(dir, 2, false)) EXPECT_EQ(message, "");
}

TEST(TensorParallelLoadTest, CommunicatorMustMatchRankAndSize) {
  const std::string dir = testing::fixture_model_dir("tiny-qwen2");
  auto missing = load_causal_lm(dir, tp_options(0, 2, nullptr, false, DType::kF32));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("tensor-parallel size 2 needs a communicator"),
            std::string::npos)
      << missing.status().message();

  std::vector<std::string> messages(2);
  std::vector<Status> statuses = run_world(2, [&](int rank, Communicator& comm) -> Status {
    auto model = load_causal_lm(dir, tp_options(1 - rank, 2, &comm, false, DType::kF32));
    messages[static_cast<size_t>(rank)] = model.ok() ? "" : model.status().message();
    return Status::Ok();
  });
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(statuses[static_cast<size_t>(rank)].ok());
    EXPECT_NE(messages[static_cast<size_t>(rank)].find(
                  "communicator is rank " + std::to_string(rank) + " of 2, tensor parallel says " +
                  std::to_string(1 - rank) + " of 2"),
              std::string::npos)
        << messages[static_cast<size_t>(rank)];
  }
}

// ---- Sharded weight reads ---------------------------------------------------------------------

// A rank's rows are a view of the memory-mapped checkpoint (nothing else is read); its columns
// are a copy of exactly those columns.
TEST(TensorParallelWeightsTest, RowsAreViewsOfTheMappingAndColumnsAreTheColumns) {
  const std::string dir = testing::fixture_model_dir("tiny-qwen2");
  auto weights = Weights::load(dir, LoadOptions());
  ASSERT_TRUE(weights.ok()) << weights.status().to_string();
  const std::string name = "model.layers.0.self_attn.o_proj.weight";
  auto full = weights->get_f32(name, {64, 64});
  ASSERT_TRUE(full.ok()) << full.status().to_string();

  auto rows = weights->get_rows(name, {64, 64}, 16, 48, DType::kF32);
  ASSERT_TRUE(rows.ok()) << rows.status().to_string();
  EXPECT_EQ(rows->shape(), (Shape{32, 64}));
  EXPECT_EQ(rows->raw_data(), static_cast<const void*>(full->data<float>() + 16 * 64));

  auto columns = weights->get_columns(name, {64, 64}, 32, 48, DType::kF32);
  ASSERT_TRUE(columns.ok()) << columns.status().to_string();
  ASSERT_EQ(columns->shape(), (Shape{64, 16}));
  for (int64_t r = 0; r < 64; ++r) {
    for (int64_t c = 0; c < 16; ++c) {
      ASSERT_EQ(columns->data<float>()[r * 16 + c], full->data<float>()[r * 64 + 32 + c]);
    }
  }

  auto bad = weights->get_columns(name, {64, 32}, 0, 16, DType::kF32);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("has shape [64, 64], expected [64, 32]"),
            std::string::npos);
}

}  // namespace
}  // namespace earnserve
