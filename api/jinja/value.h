// Values of the Jinja subset used by chat templates: JSON data (shared, immutable), Jinja's
// Undefined, mutable namespace() objects and callables (globals, bound string/dict methods,
// macros). Also the Python-compatible text forms the renderer needs: str(), repr() and
// json.dumps() as transformers' tojson filter calls it.
// Values are cheap to copy (shared pointers); JSON data is never mutated after construction, so a
// child value aliases its parent's storage. Not thread-safe: one render uses its values alone.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"

namespace earnserve::jinja {

using Json = nlohmann::ordered_json;

class Value;

// Positional and keyword arguments of a call, filter or test.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // The argument at `index`, or named `name`, or nullptr.
  const Value* find(size_t index, const std::string& name) const;
};

using NativeFunction = std::function<StatusOr<Value>(const CallArgs& args)>;

struct Callable {
  std::string name;
  NativeFunction function;
};

// The object namespace() returns: attributes that {% set ns.x = ... %} may change from inside
// loops. Shared by reference like a Python object.
struct Namespace {
  std::vector<std::pair<std::string, Value>> attributes;

  Value* find(const std::string& name);
};

class Value {
 public:
  enum class Kind { kUndefined, kJson, kNamespace, kCallable };

  // Undefined; `hint` is the error to report if it is used ("'x' is undefined").
  Value() = default;
  static Value undefined(std::string hint);
  static Value from_json(Json json);
  // A child of `parent`'s data, sharing its storage. REQUIRES: `child` lives inside `parent`.
  static Value alias(const Value& parent, const Json& child);
  static Value from_namespace(std::shared_ptr<Namespace> ns);
  static Value from_callable(std::string name, NativeFunction function);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_json() const { return kind_ == Kind::kJson; }
  bool is_namespace() const { return kind_ == Kind::kNamespace; }
  bool is_callable() const { return kind_ == Kind::kCallable; }
  bool is_none() const { return is_json() && json_->is_null(); }
  bool is_string() const { return is_json() && json_->is_string(); }
  bool is_bool() const { return is_json() && json_->is_boolean(); }
  bool is_integer() const { return is_json() && json_->is_number_integer(); }
  bool is_float() const { return is_json() && json_->is_number_float(); }
  // int, float or bool, as Python counts numbers for arithmetic.
  bool is_number() const { return is_json() && (json_->is_number() || json_->is_boolean()); }
  bool is_list() const { return is_json() && json_->is_array(); }
  bool is_dict() const { return is_json() && json_->is_object(); }

  // REQUIRES: is_json().
  const Json& json() const { return *json_; }
  // REQUIRES: is_string().
  const std::string& str() const { return json_->get_ref<const std::string&>(); }
  // REQUIRES: is_number().
  int64_t as_int() const;
  double as_double() const;
  // REQUIRES: is_namespace().
  Namespace& ns() const { return *ns_; }
  // REQUIRES: is_callable().
  const Callable& callable() const { return *callable_; }
  const std::string& undefined_hint() const { return hint_; }

  // Python truthiness (Undefined is false).
  bool truthy() const;
  // "string", "int", "list", ... as Python names the type; for error messages.
  std::string type_name() const;

 private:
  Kind kind_ = Kind::kUndefined;
  std::shared_ptr<const Json> json_;
  std::shared_ptr<Namespace> ns_;
  std::shared_ptr<const Callable> callable_;
  std::string hint_;
};

// Python's str(value) as Jinja prints it: Undefined prints as "", None as "None", lists and dicts
// in repr form.
std::string to_output_string(const Value& value);
// Python's repr() of JSON data.
std::string python_repr(const Json& json);
// Python's repr() of a float ("0.5", "1.0", "1e+20").
std::string python_float_repr(double value);

struct JsonDumpOptions {
  std::optional<int> indent;
  // (item separator, key separator); Python's defaults depend on indent.
  std::optional<std::pair<std::string, std::string>> separators;
  bool sort_keys = false;
  bool ensure_ascii = false;
};

// Python's json.dumps(value, ...) of JSON data, byte for byte.
std::string python_json_dumps(const Json& json, const JsonDumpOptions& options);

// Converts a value back to plain JSON (namespaces become objects). Undefined and callables are
// errors.
StatusOr<Json> to_json(const Value& value);

// Python ==, across int/float/bool, lists and dicts (dict order does not matter).
bool python_equal(const Value& a, const Value& b);
bool python_json_equal(const Json& a, const Json& b);
// Python <; an error for types Python cannot order.
StatusOr<bool> python_less(const Value& a, const Value& b);

// Argument helpers for the built-in filters, tests and methods.
Value str_value(std::string s);
Value int_value(int64_t v);
Value bool_value(bool v);
// "<what> does not accept a value of type 'list'", or the undefined value's own error.
Status type_error(const std::string& what, const Value& value);
// The string argument at `index` or named `name`; nullopt when absent or None.
StatusOr<std::optional<std::string>> string_arg(const CallArgs& args, size_t index,
                                                const std::string& name, const std::string& what);
StatusOr<std::string> required_string(const CallArgs& args, size_t index, const std::string& name,
                                      const std::string& what);
bool bool_arg(const CallArgs& args, size_t index, const std::string& name, bool fallback);

// UTF-8 <-> code points, for Python's code point indexing, slicing and length. Invalid bytes
// decode as U+FFFD.
std::u32string decode_utf8(const std::string& text);
std::string encode_utf8(const std::u32string& text);
// Python's str.isspace() for one code point.
bool is_python_space(char32_t c);

}  // namespace earnserve::jinja
