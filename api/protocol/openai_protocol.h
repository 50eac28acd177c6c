// The OpenAI-compatible wire protocol, one include: JSON request bodies -> validated engine
// requests, engine outputs -> JSON responses and stream chunks, and every failure -> an
// OpenAI-style error `{"error": {"message", "type", "param", "code"}}` with its HTTP status.
// One header per part:
//   protocol_context.h    what parsing knows about the served model (no engine needed)
//   fields.h              errors, field reading, the body and model checks, usage
//   completions.h         /v1/completions and /v1/chat/completions
//   recommendations.h     /v1/recommendations
//   items.h               GET /v1/items (the catalogue, searched by title)
//   tokenize.h            /tokenize and /detokenize
//   speculative_protocol.h  the "speculative" request field and usage.speculative
//   batch_lines.h         the lines of `earnserve batch` files
//
// HTTP status policy:
//   400 a field has a bad value or a bad type, malformed JSON, invalid UTF-8, empty prompt,
//       prompt or max_tokens past the context, n or best_of past the limits, unknown item id;
//   404 unknown model or route;   413 body over --max-body-bytes;
//   422 well-formed JSON of the wrong shape (the body is not a JSON object);
//   429 the queue of in-flight requests is full;   503 shutting down or the engine failed.
// Free functions over plain data; thread-safe as long as the context's pointees are.
#pragma once

#include "api/protocol/batch_lines.h"
#include "api/protocol/completions.h"
#include "api/protocol/fields.h"
#include "api/protocol/items.h"
#include "api/protocol/protocol_context.h"
#include "api/protocol/recommendations.h"
#include "api/protocol/speculative_protocol.h"
#include "api/protocol/tokenize.h"
