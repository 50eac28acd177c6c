// Attribute and item access (with Python's string and dict
// methods as bound callables), slicing, and the globals transformers adds for chat templates
// (namespace, raise_exception, strftime_now, dict) plus range. Behaviour follows Jinja 3.1 and
// Python 3 for the values chat templates handle. Stateless functions; thread-safe.
#pragma once

#include <ctime>
#include <string>

#include "api/jinja/value.h"
#include "core/status.h"

namespace earnserve::jinja {

// `object.name`: a dict key, namespace attribute or Python method; Undefined when none. Looking
// up on an Undefined value is an error, as in Jinja.
StatusOr<Value> get_attribute(const Value& object, const std::string& name);
// `object[key]`: list/string index (negative counts from the end), dict key, or attribute.
StatusOr<Value> get_item(const Value& object, const Value& key);
// `object[start:stop:step]` on a list or string, Python semantics; null parts are omitted.
StatusOr<Value> slice_value(const Value& object, const Value* start, const Value* stop,
                            const Value* step);

// Items a for loop visits: list items, dict keys, string characters; Undefined gives none.
StatusOr<std::vector<Value>> iterate(const Value& value);

// The globals every chat template sees. `now` is the calendar time strftime_now formats.
void add_builtin_globals(const std::tm& now, std::vector<std::pair<std::string, Value>>& globals);

}  // namespace earnserve::jinja
