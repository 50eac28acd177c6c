// Continuous batching changes nothing about a request's result: many requests of different
// lengths and settings, run together with chunked prefill, a page budget small enough to force
// preemption, and prefix caching on, give exactly what each gives alone.
#include <gtest/gtest.h>

#include "scheduler/engine.h"
#include "test_paths.h"

namespace earnserve {
namespace {

std::unique_ptr<Engine> make_engine(int64_t kv_bytes, int max_tokens, int max_seqs,
                                    bool prefix_caching = true) {
  EngineOptions o;
  o.model_dir = testing::tinystories_dir();
  o.kv_cache_memory_bytes = kv_bytes;
  o.max_num_batched_tokens = max_tokens;
  o.max_num_seqs = max_seqs;
  o.enable_prefix_caching = prefix_caching;
  auto e = Engine::create(o);
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return std::move(e).value();
}

std::vector<EngineRequest> make_requests(const Tokenizer& tok) {
  const std::vector<std::string> starts = {
      "Once upon a time, there was a little girl named Lily. She loved to play outside",
      "Once upon a time, there was a little girl named Lily. She had a red ball",
      "Once upon a time",
      "Tom had a big dog. The dog",
      "The sun was hot and the children went to the lake to swim. They",
      "One day, a bird flew into the garden",
      "Sam and his mom went to the store to buy some food for dinner. At the store,",
      "The little cat was sad because",
  };
  std::vector<EngineRequest> out;
  for (int i = 0; i < 36; ++i) {
    EngineRequest r;
    r.request_id = "r" + std::to_string(i);
    r.prompt_token_ids = tok.encode(starts[i % starts.size()], true);
    SamplingParams& p = r.params;
    p.max_tokens = 8 + (i * 7) % 40;
    switch (i % 4) {
      case 0:
        p.temperature = 0.0f;
        break;
      case 1:
        p.temperature = 0.8f;
        p.top_p = 0.9f;
        p.seed = 1000 + i;
        break;
      case 2:
        p.temperature = 1.0f;
        p.top_k = 20;
        p.seed = 2000 + i;
        p.n = 2;
        break;
      case 3:
        p.temperature = 0.7f;
        p.min_p = 0.05f;
        p.seed = 3000 + i;
        p.frequency_penalty = 0.5f;
        p.logprobs = 2;
        break;
    }
    out.push_back(std::move(r));
  }
  return out;
}

TEST(EngineBatchingTest, BatchedResultsEqualEachRequestAlone) {
  // Alone: a roomy engine, one request at a time.
  auto alone_engine = make_engine(64ll << 20, 4096, 64, /*prefix_caching=*/false);
  std::vector<EngineRequest> requests = make_requests(alone_engine->tokenizer());
  std::vector<RequestOutput> alone;
  for (const EngineRequest& r : requests) {
    auto out = alone_engine->generate({r});
    ASSERT_TRUE(out.ok()) << out.status().to_string();
    alone.push_back(out->front());
  }

  // Together: 24 KV pages of 16 tokens, 48 tokens per step (chunked prefill), prefix caching.
  // TinyStories has 2 layers x 4 KV heads x 16 dims: 16 KiB per page.
  auto batched_engine = make_engine(24 * 16 * 1024, 48, 16);
  auto together = batched_engine->generate(requests);
  ASSERT_TRUE(together.ok()) << together.status().to_string();

  EngineStats stats = batched_engine->stats();
  EXPECT_GT(stats.num_preemptions, 0) << "the budget was meant to force preemption";
  EXPECT_GT(stats.prefix_cache_hits, 0) << "shared story starts were meant to hit the cache";
  for (size_t i = 0; i < requests.size(); ++i) {
    const RequestOutput& a = alone[i];
    const RequestOutput& b = (*together)[i];
    ASSERT_EQ(a.outputs.size(), b.outputs.size()) << requests[i].request_id;
    for (size_t k = 0; k < a.outputs.size(); ++k) {
      EXPECT_EQ(a.outputs[k].token_ids, b.outputs[k].token_ids)
          << requests[i].request_id << " seq " << k;
      EXPECT_EQ(a.outputs[k].text, b.outputs[k].text) << requests[i].request_id;
      EXPECT_EQ(a.outputs[k].finish_reason, b.outputs[k].finish_reason);
      EXPECT_NEAR(a.outputs[k].cumulative_logprob, b.outputs[k].cumulative_logprob, 1e-3);
    }
  }
  // Every page is free again (cached pages count as free).
  EXPECT_FALSE(batched_engine->has_unfinished());
  EXPECT_EQ(batched_engine->stats().kv_usage, 0.0);
}

TEST(EngineBatchingTest, SeededSamplingIsReproducibleAndNDiffers) {
  auto engine = make_engine(16ll << 20, 2048, 32);
  EngineRequest r;
  r.request_id = "n4";
  r.prompt_token_ids = engine->tokenizer().encode("Once upon a time", true);
  r.params.temperature = 1.0f;
  r.params.seed = 7;
  r.params.n = 4;
  r.params.max_tokens = 20;
  auto first = engine->generate({r});
  auto second = engine->generate({r});
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_EQ(first->front().outputs.size(), 4u);
  std::set<std::vector<int32_t>> distinct;
  for (size_t k = 0; k < 4; ++k) {
    EXPECT_EQ(first->front().outputs[k].token_ids, second->front().outputs[k].token_ids);
    distinct.insert(first->front().outputs[k].token_ids);
  }
  EXPECT_GT(distinct.size(), 1u);
}

TEST(EngineBatchingTest, StopStringsAndMaxTokensEndSequences) {
  auto engine = make_engine(16ll << 20, 2048, 32);
  EngineRequest r;
  r.request_id = "stop";
  r.prompt_token_ids = engine->tokenizer().encode("Once upon a time", true);
  r.params.temperature = 0.0f;
  r.params.max_tokens = 60;
  auto full = engine->generate({r});
  ASSERT_TRUE(full.ok());
  const std::string text = full->front().outputs[0].text;
  ASSERT_GT(text.size(), 10u);
  // Stop at the first occurrence of a word the greedy story contains.
  const std::string stop = text.substr(text.size() / 2, 4);
  r.params.stop = {stop};
  auto stopped = engine->generate({r});
  ASSERT_TRUE(stopped.ok());
  const SequenceOutput& o = stopped->front().outputs[0];
  EXPECT_EQ(o.finish_reason, FinishReason::kStop);
  EXPECT_EQ(o.stop_reason, stop);
  EXPECT_EQ(o.text, text.substr(0, text.find(stop)));

  r.params.stop.clear();
  r.params.max_tokens = 5;
  r.params.ignore_eos = true;
  auto short_run = engine->generate({r});
  ASSERT_TRUE(short_run.ok());
  EXPECT_EQ(short_run->front().outputs[0].token_ids.size(), 5u);
  EXPECT_EQ(short_run->front().outputs[0].finish_reason, FinishReason::kLength);
}

TEST(EngineBatchingTest, AbortFreesEverything) {
  auto engine = make_engine(16ll << 20, 64, 32);
  EngineRequest r;
  r.request_id = "abort-me";
  r.prompt_token_ids = engine->tokenizer().encode("Once upon a time, there was a dog", true);
  r.params.max_tokens = 200;
  r.params.ignore_eos = true;
  auto stream = engine->add_request(r);
  ASSERT_TRUE(stream.ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(engine->step().ok());
  EXPECT_GT(engine->stats().kv_usage, 0.0);
  engine->abort_request("abort-me");
  EXPECT_FALSE(engine->has_unfinished());
  EXPECT_EQ(engine->stats().kv_usage, 0.0);
  auto out = (*stream)->next(std::chrono::milliseconds(0));
  ASSERT_TRUE(out.has_value());
  EXPECT_TRUE(out->finished);
  EXPECT_FALSE(out->error.ok());
}

TEST(EngineBatchingTest, RejectsRequestsThatCanNeverFit) {
  auto engine = make_engine(8 * 16 * 1024, 2048, 32);  // 8 pages
  EngineRequest r;
  r.request_id = "huge";
  r.prompt_token_ids.assign(200, 5);
  EXPECT_EQ(engine->add_request(r).status().code(), StatusCode::kResourceExhausted);
  r.prompt_token_ids.assign(600, 5);  // beyond the 512-token context
  EXPECT_EQ(engine->add_request(r).status().code(), StatusCode::kInvalidArgument);
  r.prompt_token_ids.clear();
  EXPECT_EQ(engine->add_request(r).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace earnserve
