// Jinja's built-in filters (trim, tojson, length, join, map, selectattr, ...) and tests
// (defined, none, string, false, divisibleby, ...) as Jinja 3.1 defines them, with transformers'
// tojson (json.dumps, non-ASCII kept). Stateless functions; thread-safe.
#pragma once

#include <string>

#include "api/jinja/value.h"
#include "core/status.h"

namespace earnserve::jinja {

bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);

// Unknown names are errors (the parser rejects them earlier).
StatusOr<Value> apply_filter(const std::string& name, const Value& operand, const CallArgs& args);
StatusOr<bool> apply_test(const std::string& name, const Value& operand, const CallArgs& args);

}  // namespace earnserve::jinja
