// A gtest fixture for protocol tests: the real tokenizer and recommendation spec of the tiny-rec
// fixture model, loaded once per test suite, and the ProtocolContext of a server serving it.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "api/protocol/openai_protocol.h"
#include "model/tokenizer/tokenizer.h"
#include "scheduler/recommendation/recommendation.h"

namespace earnserve::api {

class TinyRecProtocolTest : public ::testing::Test {
 protected:
  static inline const std::string kModelDir =
      std::string(EARNSERVE_SOURCE_DIR) + "/tests/fixtures/models/tiny-rec";

  static void SetUpTestSuite() {
    auto tok = Tokenizer::from_dir(kModelDir);
    ASSERT_TRUE(tok.ok()) << tok.status().to_string();
    tokenizer_ = std::move(*tok).release();
    auto spec = RecommendationSpec::load(kModelDir, *tokenizer_);
    ASSERT_TRUE(spec.ok()) << spec.status().to_string();
    spec_ = new std::shared_ptr<const RecommendationSpec>(*spec);
  }
  static void TearDownTestSuite() {
    delete spec_;
    delete tokenizer_;
    spec_ = nullptr;
    tokenizer_ = nullptr;
  }

  // A server serving tiny-rec as "tiny-rec", without a draft model.
  static ProtocolContext base_context() {
    ProtocolContext ctx;
    ctx.served_model_name = "tiny-rec";
    ctx.tokenizer = tokenizer_;
    ctx.max_model_len = 256;
    ctx.vocab_size = 2907;
    ctx.recommendation = *spec_;
    return ctx;
  }

  static inline Tokenizer* tokenizer_ = nullptr;
  static inline std::shared_ptr<const RecommendationSpec>* spec_ = nullptr;
};

}  // namespace earnserve::api
