#include "api/protocol/completions.h"

#include <algorithm>
#include <climits>

#include "api/jinja/chat_template.h"
#include "api/protocol/speculative_protocol.h"
#include "model/tokenizer/tokenizer.h"
#include "scheduler/recommendation/catalogue.h"
#include "scheduler/recommendation/recommendation.h"

namespace earnserve::api {
namespace {

using nlohmann::json;

// Prompts of a completion request: a string, a list of strings, a list of token ids or a list
// of token-id lists.
std::optional<ApiError> read_prompts(const json& body, const ProtocolContext& ctx,
                                     CompletionRequest& out) {
  if (!body.contains("prompt") || body["prompt"].is_null()) {
    return bad_request("prompt is required", "prompt");
  }
  const json& p = body["prompt"];
  auto add_text = [&](const json& s) -> std::optional<ApiError> {
    const std::string text = s.get<std::string>();
    ES_API_RETURN_IF(check_text(text, "prompt"));
    if (text.empty()) return bad_request("prompt must not be empty", "prompt");
    out.prompts.push_back(ctx.tokenizer->encode(text, /*add_special_tokens=*/true));
    out.prompt_texts.push_back(text);
    return std::nullopt;
  };
  auto add_ids = [&](const json& list) -> std::optional<ApiError> {
    if (list.empty()) return bad_request("prompt must not be empty", "prompt");
    std::vector<int32_t> ids;
    ES_API_RETURN_IF(check_token_ids(list, ctx, "prompt", ids));
    out.prompt_texts.push_back(ctx.tokenizer->decode(ids, /*skip_special_tokens=*/false));
    out.prompts.push_back(std::move(ids));
    return std::nullopt;
  };
  if (p.is_string()) return add_text(p);
  if (!p.is_array()) {
    return bad_request(
        "prompt must be a string, a list of strings, a list of token ids or a "
        "list of token-id lists",
        "prompt");
  }
  if (p.empty()) return bad_request("prompt must not be empty", "prompt");
  constexpr size_t kMaxPrompts = 256;
  if (p[0].is_number_integer()) return add_ids(p);
  if (p.size() > kMaxPrompts) {
    return bad_request("at most " + std::to_string(kMaxPrompts) + " prompts per request", "prompt");
  }
  for (const json& e : p) {
    if (e.is_string()) {
      ES_API_RETURN_IF(add_text(e));
    } else if (e.is_array()) {
      ES_API_RETURN_IF(add_ids(e));
    } else {
      return bad_request("prompt list items must all be strings or all token-id lists", "prompt");
    }
  }
  return std::nullopt;
}

// Sampling fields shared by completions and chat.
std::optional<ApiError> read_sampling(const json& body, bool chat, CompletionRequest& out) {
  FieldReader f(body);
  SamplingParams& sp = out.params;
  const char* max_name =
      chat && f.present("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  sp.max_tokens = 0;  // 0: default, resolved against each prompt's length
  ES_API_RETURN_IF(f.read_int(max_name, 1, INT_MAX, sp.max_tokens));
  ES_API_RETURN_IF(f.read_int("min_tokens", 0, INT_MAX, sp.min_tokens));
  ES_API_RETURN_IF(f.read_float("temperature", 0.0, 2.0, false, sp.temperature));
  ES_API_RETURN_IF(f.read_float("top_p", 0.0, 1.0, true, sp.top_p));
  ES_API_RETURN_IF(f.read_int("top_k", -1, INT_MAX, sp.top_k));
  ES_API_RETURN_IF(f.read_float("min_p", 0.0, 1.0, false, sp.min_p));
  ES_API_RETURN_IF(f.read_float("presence_penalty", -2.0, 2.0, false, sp.presence_penalty));
  ES_API_RETURN_IF(f.read_float("frequency_penalty", -2.0, 2.0, false, sp.frequency_penalty));
  ES_API_RETURN_IF(f.read_float("repetition_penalty", 0.0, 100.0, true, sp.repetition_penalty));
  ES_API_RETURN_IF(f.read_float("length_penalty", -100.0, 100.0, false, sp.length_penalty));
  ES_API_RETURN_IF(f.read_bool("ignore_eos", sp.ignore_eos));
  ES_API_RETURN_IF(f.read_bool("include_stop_str_in_output", sp.include_stop_str_in_output));
  ES_API_RETURN_IF(f.read_bool("use_beam_search", sp.use_beam_search));
  ES_API_RETURN_IF(f.read_bool("early_stopping", sp.early_stopping));
  ES_API_RETURN_IF(f.read_bool("stream", out.stream));
  int n = 1;
  ES_API_RETURN_IF(f.read_int("n", 1, kMaxN, n));
  int best_of = n;
  ES_API_RETURN_IF(f.read_int("best_of", 1, kMaxN, best_of));
  if (best_of < n) return bad_request("best_of must be at least n", "best_of");
  out.num_returned = n;
  if (sp.use_beam_search) {
    sp.n = n;
    sp.beam_width = best_of;
    sp.temperature = 0.0f;
  } else {
    if (best_of > n && out.stream) {
      return bad_request("best_of > n cannot be streamed", "best_of");
    }
    sp.n = best_of;
  }
  if (f.present("seed")) {
    const json& s = body["seed"];
    if (!s.is_number_integer()) return bad_request("seed must be an integer", "seed");
    sp.seed = s.is_number_unsigned() ? s.get<uint64_t>() : static_cast<uint64_t>(s.get<int64_t>());
  }
  if (f.present("stop")) {
    const json& s = body["stop"];
    std::vector<std::string> stops;
    if (s.is_string()) {
      stops.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      for (const json& e : s) {
        if (!e.is_string())
          return bad_request("stop must be a string or a list of strings", "stop");
        stops.push_back(e.get<std::string>());
      }
    } else {
      return bad_request("stop must be a string or a list of strings", "stop");
    }
    if (stops.size() > 16) return bad_request("at most 16 stop strings", "stop");
    for (const std::string& t : stops) {
      ES_API_RETURN_IF(check_text(t, "stop"));
      if (t.empty()) return bad_request("stop strings must not be empty", "stop");
    }
    sp.stop = std::move(stops);
  }
  if (f.present("stop_token_ids")) {
    const json& s = body["stop_token_ids"];
    if (!s.is_array())
      return bad_request("stop_token_ids must be a list of integers", "stop_token_ids");
    for (const json& e : s) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > INT32_MAX) {
        return bad_request("stop_token_ids must be a list of token ids", "stop_token_ids");
      }
      sp.stop_token_ids.push_back(static_cast<int32_t>(e.get<int64_t>()));
    }
  }
  if (f.present("stream_options")) {
    const json& so = body["stream_options"];
    if (!so.is_object()) return bad_request("stream_options must be an object", "stream_options");
    if (!out.stream) return bad_request("stream_options needs stream=true", "stream_options");
    FieldReader sf(so);
    ES_API_RETURN_IF(sf.read_bool("include_usage", out.include_usage));
  }
  return std::nullopt;
}

// Catalogue fields (earnserve extension) and the final per-prompt checks.
std::optional<ApiError> finish_request(const json& body, const ProtocolContext& ctx,
                                       CompletionRequest& out) {
  FieldReader f(body);
  bool constrain = false;
  ES_API_RETURN_IF(f.read_bool("constrain_to_catalogue", constrain));
  if (constrain) {
    if (!ctx.recommendation) {
      return bad_request("the model has no catalogue (recommendation.json)",
                         "constrain_to_catalogue");
    }
    out.catalogue = ctx.recommendation->catalogue_ptr();
  }
  if (f.present("exclude_items")) {
    if (!constrain)
      return bad_request("exclude_items needs constrain_to_catalogue", "exclude_items");
    const json& list = body["exclude_items"];
    if (!list.is_array())
      return bad_request("exclude_items must be a list of item ids", "exclude_items");
    for (const json& e : list) {
      if (!e.is_string() && !e.is_number_integer()) {
        return bad_request("exclude_items must be a list of item ids", "exclude_items");
      }
      const std::string id = e.is_string() ? e.get<std::string>() : e.dump();
      const int64_t index = out.catalogue->find_item(id);
      if (index < 0) return bad_request("unknown item id '" + id + "'", "exclude_items");
      out.exclude_items.push_back(index);
    }
  }
  const char* max_name =
      f.present("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  const bool default_max = out.params.max_tokens == 0;
  for (const std::vector<int32_t>& ids : out.prompts) {
    const int64_t len = static_cast<int64_t>(ids.size());
    if (len == 0) return bad_request("prompt must not be empty", out.chat ? "messages" : "prompt");
    if (len >= ctx.max_model_len) {
      return bad_request("the prompt has " + std::to_string(len) +
                             " tokens; this model's maximum context length is " +
                             std::to_string(ctx.max_model_len),
                         out.chat ? "messages" : "prompt");
    }
    if (!default_max && len + out.params.max_tokens > ctx.max_model_len) {
      return bad_request("this model's maximum context length is " +
                             std::to_string(ctx.max_model_len) + " tokens; you requested " +
                             std::to_string(len + out.params.max_tokens) + " tokens (" +
                             std::to_string(len) + " in the prompt, " +
                             std::to_string(out.params.max_tokens) + " in the completion)",
                         max_name);
    }
  }
  if (default_max) {
    // Completions default to 16 tokens, chat to the rest of the context (OpenAI, vLLM).
    int64_t room = INT_MAX;
    for (const auto& ids : out.prompts) {
      room = std::min<int64_t>(room, ctx.max_model_len - static_cast<int64_t>(ids.size()));
    }
    out.params.max_tokens = static_cast<int>(out.chat ? room : std::min<int64_t>(16, room));
  }
  if (out.params.min_tokens > out.params.max_tokens) {
    return bad_request("min_tokens must not exceed max_tokens", "min_tokens");
  }
  ES_API_RETURN_IF(read_speculative_field(body, ctx, /*by_default=*/false, out.params));
  if (Status s = out.params.validate(); !s.ok()) return bad_request(s.message());
  return std::nullopt;
}

json logprobs_json(const SequenceOutput& o, const Tokenizer& tok, bool chat, size_t text_offset) {
  auto piece = [&](int32_t id) { return tok.decode(std::span<const int32_t>(&id, 1), false); };
  if (chat) {
    json content = json::array();
    for (const TokenLogprob& lp : o.logprobs) {
      json top = json::array();
      for (const auto& [id, v] : lp.top) top.push_back({{"token", piece(id)}, {"logprob", v}});
      content.push_back(
          {{"token", piece(lp.token)}, {"logprob", lp.logprob}, {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  size_t offset = text_offset;
  for (const TokenLogprob& lp : o.logprobs) {
    const std::string p = piece(lp.token);
    tokens.push_back(p);
    token_logprobs.push_back(lp.logprob);
    json t = json::object();
    for (const auto& [id, v] : lp.top) t[piece(id)] = v;
    top.push_back(t);
    offsets.push_back(offset);
    offset += p.size();
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

json finish_reason_json(FinishReason r) {
  if (r == FinishReason::kNone) return nullptr;
  return finish_reason_name(r);
}

json stop_reason_json(const SequenceOutput& o) {
  if (o.stop_token) return *o.stop_token;
  if (!o.stop_reason.empty()) return o.stop_reason;
  return nullptr;
}

// The sequences of one prompt to report: beams best first, best_of sampling cut to n.
std::vector<const SequenceOutput*> chosen(const CompletionRequest& req, const RequestOutput& out) {
  std::vector<const SequenceOutput*> seqs;
  for (const SequenceOutput& o : out.outputs) seqs.push_back(&o);
  if (req.params.use_beam_search) {
    std::stable_sort(seqs.begin(), seqs.end(),
                     [](auto* a, auto* b) { return a->score > b->score; });
  } else if (static_cast<int>(seqs.size()) > req.num_returned) {
    std::stable_sort(seqs.begin(), seqs.end(), [](auto* a, auto* b) {
      return a->cumulative_logprob > b->cumulative_logprob;
    });
  }
  if (static_cast<int>(seqs.size()) > req.num_returned) seqs.resize(req.num_returned);
  return seqs;
}

}  // namespace

std::vector<EngineRequest> CompletionRequest::engine_requests(const std::string& base_id) const {
  std::vector<EngineRequest> out;
  for (size_t i = 0; i < prompts.size(); ++i) {
    EngineRequest r;
    r.request_id = base_id + "-" + std::to_string(i);
    r.prompt_token_ids = prompts[i];
    r.params = params;
    r.catalogue = catalogue;
    r.exclude_items = exclude_items;
    r.stream = stream;
    out.push_back(std::move(r));
  }
  return out;
}

ApiOr<CompletionRequest> parse_completion_request(const json& body, const ProtocolContext& ctx) {
  ES_API_RETURN_IF(check_model(body, ctx));
  CompletionRequest out;
  ES_API_RETURN_IF(read_sampling(body, /*chat=*/false, out));
  FieldReader f(body);
  ES_API_RETURN_IF(f.read_bool("echo", out.echo));
  if (f.present("logprobs")) {
    ES_API_RETURN_IF(f.read_int("logprobs", 0, 20, out.params.logprobs));
  }
  if (f.present("suffix")) return bad_request("suffix is not supported", "suffix");
  if (out.echo && out.params.use_beam_search && out.stream) {
    return bad_request("echo cannot be combined with streamed beam search", "echo");
  }
  ES_API_RETURN_IF(read_prompts(body, ctx, out));
  ES_API_RETURN_IF(finish_request(body, ctx, out));
  return out;
}

ApiOr<CompletionRequest> parse_chat_request(const json& body, const ProtocolContext& ctx) {
  ES_API_RETURN_IF(check_model(body, ctx));
  CompletionRequest out;
  out.chat = true;
  ES_API_RETURN_IF(read_sampling(body, /*chat=*/true, out));
  FieldReader f(body);
  ES_API_RETURN_IF(f.read_bool("logprobs", out.chat_logprobs));
  int top_logprobs = 0;
  ES_API_RETURN_IF(f.read_int("top_logprobs", 0, 20, top_logprobs));
  if (f.present("top_logprobs") && !out.chat_logprobs) {
    return bad_request("top_logprobs needs logprobs=true", "top_logprobs");
  }
  if (out.chat_logprobs) out.params.logprobs = top_logprobs;
  if (!body.contains("messages") || !body["messages"].is_array()) {
    return bad_request("messages must be a list of messages", "messages");
  }
  const json& messages = body["messages"];
  if (messages.empty()) return bad_request("messages must not be empty", "messages");
  for (const json& m : messages) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return bad_request("each message must be an object with a string role", "messages");
    }
    if (m.contains("content") && !m["content"].is_null()) {
      const json& c = m["content"];
      if (c.is_string()) {
        ES_API_RETURN_IF(check_text(c.get<std::string>(), "messages"));
      } else if (!c.is_array()) {
        return bad_request("message content must be a string or a list of parts", "messages");
      }
    }
  }
  bool add_generation_prompt = true;
  ES_API_RETURN_IF(f.read_bool("add_generation_prompt", add_generation_prompt));
  json extra = json::object();
  if (f.present("chat_template_kwargs")) {
    if (!body["chat_template_kwargs"].is_object()) {
      return bad_request("chat_template_kwargs must be an object", "chat_template_kwargs");
    }
    extra = body["chat_template_kwargs"];
  }
  if (!ctx.chat_template) {
    return bad_request("the model has no chat template; use /v1/completions", "messages");
  }
  nlohmann::ordered_json context = ctx.chat_template_context;
  for (const auto& [key, value] : extra.items()) context[key] = value;
  ChatTemplateOptions options;
  options.add_generation_prompt = add_generation_prompt;
  StatusOr<std::string> text =
      ctx.chat_template->render(nlohmann::ordered_json(messages), context, options);
  if (!text.ok()) return bad_request("chat template: " + text.status().message(), "messages");
  ES_API_RETURN_IF(check_text(*text, "messages"));
  out.prompt_texts.push_back(*text);
  out.prompts.push_back(ctx.tokenizer->encode(*text, /*add_special_tokens=*/false));
  ES_API_RETURN_IF(finish_request(body, ctx, out));
  return out;
}

json completion_response(const ResponseMeta& meta, const CompletionRequest& req,
                         const std::vector<RequestOutput>& outputs, const Tokenizer& tok) {
  json choices = json::array();
  int64_t prompt_tokens = 0, completion_tokens = 0;
  std::vector<int> kv_blocks;  // summed over the prompts' requests
  for (size_t p = 0; p < outputs.size(); ++p) {
    const RequestOutput& out = outputs[p];
    prompt_tokens += static_cast<int64_t>(req.prompts[p].size());
    const std::vector<int>& peak = out.metrics.peak_kv_blocks;
    if (kv_blocks.size() < peak.size()) kv_blocks.resize(peak.size(), 0);
    for (size_t g = 0; g < peak.size(); ++g) kv_blocks[g] += peak[g];
    for (const SequenceOutput& o : out.outputs) completion_tokens += o.token_ids.size();
    const std::vector<const SequenceOutput*> seqs = chosen(req, out);
    for (size_t k = 0; k < seqs.size(); ++k) {
      const SequenceOutput& o = *seqs[k];
      const int index = static_cast<int>(p * req.num_returned + k);
      json c = {{"index", index},
                {"finish_reason", finish_reason_json(o.finish_reason)},
                {"stop_reason", stop_reason_json(o)}};
      const std::string prefix = req.echo ? req.prompt_texts[p] : "";
      if (req.chat) {
        c["message"] = {{"role", "assistant"}, {"content", o.text}};
        c["logprobs"] = req.chat_logprobs ? logprobs_json(o, tok, true, 0) : json(nullptr);
      } else {
        c["text"] = prefix + o.text;
        c["logprobs"] =
            req.params.logprobs >= 0 ? logprobs_json(o, tok, false, prefix.size()) : json(nullptr);
      }
      if (req.params.use_beam_search) c["score"] = o.score;
      if (req.params.use_beam_search || req.params.n > req.num_returned) {
        c["cumulative_logprob"] = o.cumulative_logprob;
      }
      if (req.catalogue && o.item_index >= 0) {
        c["item_id"] = req.catalogue->item(o.item_index).id;
      }
      choices.push_back(std::move(c));
    }
  }
  return {{"id", meta.id},
          {"object", req.chat ? "chat.completion" : "text_completion"},
          {"created", meta.created},
          {"model", meta.model},
          {"choices", choices},
          {"usage", usage_json(prompt_tokens, completion_tokens, kv_blocks,
                               sum_speculative_stats(outputs))}};
}

json completion_chunk(const ResponseMeta& meta, const CompletionRequest& req, int prompt_index,
                      const RequestOutput& delta, const Tokenizer& tok) {
  json choices = json::array();
  const std::vector<const SequenceOutput*> seqs = chosen(req, delta);
  for (size_t k = 0; k < seqs.size(); ++k) {
    const SequenceOutput& o = *seqs[k];
    // Beams arrive together at the end, ranked; sampled sequences keep their own index.
    const int rank = req.params.use_beam_search ? static_cast<int>(k) : o.index;
    json c = {{"index", prompt_index * req.num_returned + rank},
              {"finish_reason", finish_reason_json(o.finish_reason)}};
    if (o.finish_reason != FinishReason::kNone) c["stop_reason"] = stop_reason_json(o);
    if (req.chat) {
      c["delta"] = o.text.empty() && o.finish_reason != FinishReason::kNone
                       ? json::object()
                       : json({{"content", o.text}});
      c["logprobs"] = req.chat_logprobs ? logprobs_json(o, tok, true, 0) : json(nullptr);
    } else {
      c["text"] = o.text;
      c["logprobs"] = req.params.logprobs >= 0 ? logprobs_json(o, tok, false, 0) : json(nullptr);
    }
    if (req.params.use_beam_search) c["score"] = o.score;
    choices.push_back(std::move(c));
  }
  return {{"id", meta.id},
          {"object", req.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", meta.created},
          {"model", meta.model},
          {"choices", choices}};
}

json chat_role_chunk(const ResponseMeta& meta, int num_choices) {
  json choices = json::array();
  for (int i = 0; i < num_choices; ++i) {
    choices.push_back({{"index", i},
                       {"delta", {{"role", "assistant"}, {"content", ""}}},
                       {"logprobs", nullptr},
                       {"finish_reason", nullptr}});
  }
  return {{"id", meta.id},
          {"object", "chat.completion.chunk"},
          {"created", meta.created},
          {"model", meta.model},
          {"choices", choices}};
}

json usage_chunk(const ResponseMeta& meta, bool chat, int64_t prompt_tokens,
                 int64_t completion_tokens) {
  return {{"id", meta.id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", meta.created},
          {"model", meta.model},
          {"choices", json::array()},
          {"usage", usage_json(prompt_tokens, completion_tokens)}};
}

json echo_chunk(const ResponseMeta& meta, const CompletionRequest& req) {
  json chunk = usage_chunk(meta, req.chat, 0, 0);
  chunk.erase("usage");
  for (size_t p = 0; p < req.prompts.size(); ++p) {
    for (int k = 0; k < req.num_returned; ++k) {
      chunk["choices"].push_back({{"index", static_cast<int>(p) * req.num_returned + k},
                                  {"text", req.prompt_texts[p]},
                                  {"logprobs", nullptr},
                                  {"finish_reason", nullptr}});
    }
  }
  return chunk;
}

}  // namespace earnserve::api
