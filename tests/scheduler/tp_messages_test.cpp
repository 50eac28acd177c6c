// Encodings of the tensor-parallel control messages: a step with two KV groups (EARN-like), tree
// attention rows, shared prefixes and block copies decodes to exactly what was sent; undefined
// tensors stay undefined; truncated, padded or corrupt payloads and unexpected message types are
// DATA_LOSS naming the message; a worker's error message decodes to UNAVAILABLE with its text.
#include "scheduler/parallel/tp_messages.h"

#include <gtest/gtest.h>

namespace earnserve {
namespace {

std::vector<int32_t> values(const Tensor& t) {
  const int32_t* p = t.data<int32_t>();
  return std::vector<int32_t>(p, p + t.numel());
}

void expect_same(const Tensor& a, const Tensor& b, const char* what) {
  ASSERT_EQ(a.defined(), b.defined()) << what;
  if (!a.defined()) return;
  EXPECT_EQ(a.shape(), b.shape()) << what;
  EXPECT_EQ(b.dtype(), DType::kI32) << what;
  EXPECT_EQ(values(a), values(b)) << what;
}

ForwardBatch two_group_batch() {
  ForwardBatch b;
  b.token_ids = Tensor::from_vector(std::vector<int32_t>{5, 9, 2, 7, 7, 1});
  b.positions = Tensor::from_vector(std::vector<int32_t>{0, 1, 2, 0, 1, 2});
  AttentionMetadata all;
  all.slot_mapping = Tensor::from_vector(std::vector<int32_t>{0, 1, 2, 16, 17, -1});
  all.block_tables = Tensor::from_vector(std::vector<int32_t>{0, 3, 1, 4}, {2, 2});
  all.seq_lens = Tensor::from_vector(std::vector<int32_t>{3, 2});
  all.query_start_loc = Tensor::from_vector(std::vector<int32_t>{0, 3, 6});
  all.seq_prefix = Tensor::from_vector(std::vector<int32_t>{0, -1});
  all.prefix_lens = Tensor::from_vector(std::vector<int32_t>{16});
  AttentionMetadata marked;
  marked.token_indices = Tensor::from_vector(std::vector<int32_t>{2, 5});
  marked.slot_mapping = Tensor::from_vector(std::vector<int32_t>{4, 8});
  marked.block_tables = Tensor::from_vector(std::vector<int32_t>{1, 2}, {2, 1});
  marked.seq_lens = Tensor::from_vector(std::vector<int32_t>{1, 1});
  marked.query_start_loc = Tensor::from_vector(std::vector<int32_t>{0, 1, 2});
  marked.query_parents = Tensor::from_vector(std::vector<int32_t>{-1, -1});
  b.groups = {all, marked};
  b.layer_group = {0, 0, 1, 1};
  b.logits_indices = Tensor::from_vector(std::vector<int32_t>{0, 1});
  return b;
}

TEST(TpMessagesTest, StepRoundTripsEveryTensorAndCopy) {
  const ForwardBatch sent = two_group_batch();
  const std::vector<BlockCopy> copies = {{0, 3, 5}, {1, 2, 6}};
  auto message = encode_tp_step(sent, copies);
  ASSERT_TRUE(message.ok()) << message.status().to_string();
  auto step = decode_tp_step(*message);
  ASSERT_TRUE(step.ok()) << step.status().to_string();
  const ForwardBatch& got = step->batch;
  expect_same(sent.token_ids, got.token_ids, "token_ids");
  expect_same(sent.positions, got.positions, "positions");
  expect_same(sent.logits_indices, got.logits_indices, "logits_indices");
  ASSERT_EQ(got.groups.size(), 2u);
  for (size_t g = 0; g < 2; ++g) {
    const AttentionMetadata& a = sent.groups[g];
    const AttentionMetadata& b = got.groups[g];
    expect_same(a.token_indices, b.token_indices, "token_indices");
    expect_same(a.slot_mapping, b.slot_mapping, "slot_mapping");
    expect_same(a.block_tables, b.block_tables, "block_tables");
    expect_same(a.seq_lens, b.seq_lens, "seq_lens");
    expect_same(a.query_start_loc, b.query_start_loc, "query_start_loc");
    expect_same(a.seq_prefix, b.seq_prefix, "seq_prefix");
    expect_same(a.prefix_lens, b.prefix_lens, "prefix_lens");
    expect_same(a.query_parents, b.query_parents, "query_parents");
  }
  EXPECT_EQ(got.layer_group, sent.layer_group);
  EXPECT_EQ(step->copies, copies);
}

TEST(TpMessagesTest, RejectsTruncatedAndPaddedStepPayloads) {
  auto message = encode_tp_step(two_group_batch(), {{0, 1, 2}});
  ASSERT_TRUE(message.ok());
  // Every proper prefix is truncated somewhere; none may decode or crash.
  for (size_t size = 0; size < message->payload.size(); ++size) {
    ControlMessage cut{message->type, {message->payload.begin(), message->payload.begin() + size}};
    auto step = decode_tp_step(cut);
    ASSERT_FALSE(step.ok()) << "prefix of " << size << " bytes decoded";
    EXPECT_EQ(step.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(step.status().message().find("step message"), std::string::npos);
  }
  ControlMessage padded = *message;
  padded.payload.push_back(0);
  auto step = decode_tp_step(padded);
  EXPECT_EQ(step.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(step.status().message().find("trailing"), std::string::npos);
}

TEST(TpMessagesTest, RejectsALayerGroupOutsideTheGroups) {
  ForwardBatch b = two_group_batch();
  b.layer_group = {0, 2};
  auto message = encode_tp_step(b, {});
  ASSERT_TRUE(message.ok());
  auto step = decode_tp_step(*message);
  EXPECT_EQ(step.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(step.status().message().find("layer group 2"), std::string::npos);
}

TEST(TpMessagesTest, RefusesToEncodeNonIntegerInputs) {
  ForwardBatch b = two_group_batch();
  b.positions = Tensor::from_vector(std::vector<float>{0.f, 1.f});
  auto message = encode_tp_step(b, {});
  EXPECT_EQ(message.status().code(), StatusCode::kInvalidArgument);
}

TEST(TpMessagesTest, HelloAndReadyRoundTrip) {
  auto hello = decode_tp_hello(encode_tp_hello({3, 4}));
  ASSERT_TRUE(hello.ok()) << hello.status().to_string();
  EXPECT_EQ(hello->rank, 3);
  EXPECT_EQ(hello->world_size, 4);

  TpReady ready;
  ready.num_hidden_layers = 4;
  ready.vocab_size = 2915;
  ready.head_dim = 16;
  ready.num_local_kv_heads = 1;
  ready.block_size = 16;
  ready.num_blocks_per_group = {120, 30};
  auto got = decode_tp_ready(encode_tp_ready(ready));
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(*got, ready);
  EXPECT_EQ(describe_tp_ready(ready),
            "layers 4, vocab 2915, head_dim 16, local KV heads 1, block size 16, KV blocks [120, "
            "30]");
}

TEST(TpMessagesTest, ReadyCarriesEachGroupsBlockSize) {
  TpReady ready;
  ready.num_hidden_layers = 8;
  ready.vocab_size = 1887;
  ready.head_dim = 32;
  ready.num_local_kv_heads = 2;
  ready.block_size = 16;
  ready.num_blocks_per_group = {120, 480};
  ready.block_size_per_group = {16, 4};
  auto got = decode_tp_ready(encode_tp_ready(ready));
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(got->block_size_per_group, (std::vector<int32_t>{16, 4}));
  TpReady other = ready;
  other.block_size_per_group = {16, 8};
  EXPECT_NE(*got, other);  // a worker with other register pages is refused
  EXPECT_EQ(describe_tp_ready(ready),
            "layers 8, vocab 1887, head_dim 32, local KV heads 2, block size 16, KV blocks [120, "
            "480], block sizes [16, 4]");
}

TEST(TpMessagesTest, AnErrorMessageDecodesToTheSendersText) {
  auto hello = decode_tp_hello(encode_tp_error("rank 2: out of memory"));
  EXPECT_EQ(hello.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(hello.status().message(), "rank 2: out of memory");
}

TEST(TpMessagesTest, AnUnexpectedTypeNamesBoth) {
  Status s = decode_tp_empty(encode_tp_hello({1, 2}), TpMessageType::kWelcome);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("expected a welcome message, got hello"), std::string::npos)
      << s.message();
  auto step = decode_tp_step(encode_tp_empty(TpMessageType::kShutdown));
  EXPECT_NE(step.status().message().find("expected a step message, got shutdown"),
            std::string::npos);
}

}  // namespace
}  // namespace earnserve
