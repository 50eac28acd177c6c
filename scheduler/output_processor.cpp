#include "scheduler/output_processor.h"

#include <algorithm>
#include <span>

#include "core/logging.h"

namespace earnserve {

OutputProcessor::OutputProcessor(const Tokenizer& tokenizer, std::vector<int32_t> eos_token_ids,
                                 int max_model_len)
    : tokenizer_(tokenizer),
      eos_token_ids_(std::move(eos_token_ids)),
      max_model_len_(max_model_len) {}

bool OutputProcessor::is_eos(int32_t token) const {
  return std::find(eos_token_ids_.begin(), eos_token_ids_.end(), token) != eos_token_ids_.end();
}

void OutputProcessor::process_token(const SequenceGroup& group, Sequence& seq) {
  const SamplingParams& p = group.request.params;
  const int32_t token = seq.tokens.back();
  SequenceText& text = texts_[&seq];
  if (!text.detokenizer) {
    text.detokenizer = std::make_unique<IncrementalDetokenizer>(
        tokenizer_, std::span<const int32_t>(seq.tokens.data(), seq.num_prompt_tokens));
  }
  const bool eos = is_eos(token);
  const bool is_stop_id =
      std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) != p.stop_token_ids.end();
  if (group.constraint) {
    if (eos) {
      // The end of an item's identifier.
      text.item_index = group.constraint->terminal_item(seq.trie_node);
      text.stop_token = token;
      finish_sequence(seq, text, FinishReason::kStop);
      return;
    }
    seq.trie_node = group.constraint->advance(seq.trie_node, token);
  }
  if ((eos && !p.ignore_eos) || is_stop_id) {
    text.stop_token = token;
    finish_sequence(seq, text, FinishReason::kStop);
    return;
  }
  text.text += text.detokenizer->append(token);
  if (stop_string_found(p, text)) {
    finish_sequence(seq, text, FinishReason::kStop);
    return;
  }
  if (seq.num_generated() >= p.max_tokens ||
      static_cast<int>(seq.tokens.size()) >= max_model_len_) {
    finish_sequence(seq, text, FinishReason::kLength);
  }
}

bool OutputProcessor::stop_string_found(const SamplingParams& p, SequenceText& text) const {
  for (const std::string& s : p.stop) {
    // Only the newest text can complete a stop string.
    size_t from = text.text.size() > s.size() + 64 ? text.text.size() - s.size() - 64 : 0;
    size_t pos = text.text.find(s, std::min(from, text.num_text_sent));
    if (pos != std::string::npos) {
      text.text.resize(p.include_stop_str_in_output ? pos + s.size() : pos);
      text.stop_reason = s;
      return true;
    }
  }
  return false;
}

void OutputProcessor::finish_sequence(Sequence& seq, SequenceText& text, FinishReason reason) {
  seq.finish_reason = reason;
  if (text.detokenizer && text.stop_reason.empty()) text.text += text.detokenizer->flush();
  if (reason == FinishReason::kStop && text.stop_reason.empty() && text.stop_token) {
    text.stop_reason = tokenizer_.id_to_token(*text.stop_token);
  }
}

void OutputProcessor::emit(SequenceGroup& group, bool final) {
  RequestOutput out;
  out.request_id = group.request.request_id;
  out.prompt_token_ids = group.request.prompt_token_ids;
  out.finished = final;
  out.metrics = group.metrics;
  if (group.spec) out.speculative = group.spec->stats;
  const bool delta = group.request.stream;
  auto add = [&](Sequence& seq) {
    SequenceText& text = texts_[&seq];
    SequenceOutput so;
    so.index = seq.index;
    size_t from_tok = delta ? text.num_tokens_sent : 0;
    size_t from_text = delta ? text.num_text_sent : 0;
    so.token_ids.assign(seq.tokens.begin() + seq.num_prompt_tokens + from_tok, seq.tokens.end());
    so.text = text.text.substr(std::min(from_text, text.text.size()));
    if (!seq.logprobs.empty()) {
      size_t from_lp = delta ? text.num_logprobs_sent : 0;
      so.logprobs.assign(seq.logprobs.begin() + from_lp, seq.logprobs.end());
      text.num_logprobs_sent = seq.logprobs.size();
    }
    text.num_tokens_sent = seq.tokens.size() - seq.num_prompt_tokens;
    text.num_text_sent = text.text.size();
    so.cumulative_logprob = seq.cumulative_logprob;
    so.score = group.is_beam() ? seq.beam_score : seq.cumulative_logprob;
    so.finish_reason = seq.finish_reason;
    so.stop_reason = text.stop_reason;
    so.stop_token = text.stop_token;
    so.item_index = text.item_index;
    out.outputs.push_back(std::move(so));
  };
  for (auto& seq : group.seqs) add(*seq);
  for (auto& seq : group.done_seqs) {
    // A finished sequence is reported once more only if something is unsent or this is the end.
    if (final || texts_[seq.get()].num_tokens_sent < static_cast<size_t>(seq->num_generated())) {
      add(*seq);
    }
  }
  std::sort(out.outputs.begin(), out.outputs.end(),
            [](const SequenceOutput& a, const SequenceOutput& b) { return a.index < b.index; });
  group.stream->push(std::move(out));
}

void OutputProcessor::add_hypotheses(SequenceGroup& group) {
  const std::vector<int32_t>& stops = group.beam->options().stop_tokens;
  const auto& hyps = group.beam->finished();
  const int n = std::min<int>(group.request.params.n, static_cast<int>(hyps.size()));
  for (int i = 0; i < n; ++i) {
    // A hypothesis holds its generated tokens only: its prompt's KV is gone, and the output
    // carries the request's prompt.
    auto seq = std::make_unique<Sequence>();
    seq->index = i;
    seq->tokens = hyps[i].tokens;
    seq->cumulative_logprob = hyps[i].cumulative_logprob;
    seq->beam_score = hyps[i].score;
    const int32_t last = hyps[i].tokens.back();
    const bool stopped = std::find(stops.begin(), stops.end(), last) != stops.end();
    seq->finish_reason = stopped ? FinishReason::kStop : FinishReason::kLength;
    SequenceText& text = texts_[seq.get()];
    if (stopped) text.stop_token = last;
    std::span<const int32_t> gen(hyps[i].tokens);
    if (stopped) gen = gen.first(gen.size() - 1);
    text.text = tokenizer_.decode(gen, /*skip_special_tokens=*/true);
    if (group.constraint) text.item_index = group.constraint->item_of(gen);
    group.done_seqs.push_back(std::move(seq));
  }
}

void OutputProcessor::finish_group(SequenceGroup& group) {
  ES_CHECK(group.seqs.empty());
  if (group.is_beam()) add_hypotheses(group);
  group.metrics.num_generated_tokens = 0;
  for (auto& s : group.done_seqs) group.metrics.num_generated_tokens += s->num_generated();
  emit(group, true);
  release(group);
}

void OutputProcessor::abort(SequenceGroup& group) {
  RequestOutput out;
  out.request_id = group.request.request_id;
  out.finished = true;
  out.error = aborted("request " + group.request.request_id + " was aborted");
  out.metrics = group.metrics;
  for (auto& seq : group.seqs) {
    SequenceOutput so;
    so.index = seq->index;
    so.finish_reason = FinishReason::kAbort;
    out.outputs.push_back(std::move(so));
  }
  group.stream->push(std::move(out));
  release(group);
}

void OutputProcessor::fail(SequenceGroup& group, const Status& error) {
  RequestOutput out;
  out.request_id = group.request.request_id;
  out.finished = true;
  out.error = error;
  out.metrics = group.metrics;
  group.stream->push(std::move(out));
  release(group);
}

void OutputProcessor::reject(RequestStream& stream, const std::string& request_id,
                             const Status& error) {
  RequestOutput out;
  out.request_id = request_id;
  out.finished = true;
  out.error = error;
  stream.push(std::move(out));
}

void OutputProcessor::release(const SequenceGroup& group) {
  for (const auto& seq : group.seqs) texts_.erase(seq.get());
  for (const auto& seq : group.done_seqs) texts_.erase(seq.get());
}

}  // namespace earnserve
