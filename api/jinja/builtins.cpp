#include "api/jinja/builtins.h"

#include <algorithm>
#include <map>

#include "api/jinja/strings.h"

namespace earnserve::jinja {
namespace {

StatusOr<bool> affix_match(const Value& self, const CallArgs& args, bool prefix) {
  const char* what = prefix ? "startswith" : "endswith";
  const Value* arg = args.find(0, "prefix");
  if (arg == nullptr) return invalid_argument(std::string(what) + "() needs an argument");
  std::vector<std::string> options;
  if (arg->is_string()) {
    options.push_back(arg->str());
  } else if (arg->is_list()) {
    for (const Json& item : arg->json()) {
      if (!item.is_string()) return invalid_argument(std::string(what) + "() takes strings");
      options.push_back(item.get<std::string>());
    }
  } else {
    return type_error(what, *arg);
  }
  const std::string& s = self.str();
  for (const std::string& o : options) {
    if (o.size() > s.size()) continue;
    if (prefix ? s.compare(0, o.size(), o) == 0
               : s.compare(s.size() - o.size(), o.size(), o) == 0) {
      return true;
    }
  }
  return false;
}

Value string_list(const std::vector<std::string>& parts) {
  Json list = Json::array();
  for (const std::string& p : parts) list.push_back(p);
  return Value::from_json(std::move(list));
}

// A bound method of a Python str, or Undefined.
Value string_method(const Value& self, const std::string& name) {
  using Fn = std::function<StatusOr<Value>(const Value&, const CallArgs&)>;
  static const std::map<std::string, Fn>* const kMethods = new std::map<std::string, Fn>{
      {"strip", [](const Value& s, const CallArgs& a) -> StatusOr<Value> {
         ES_ASSIGN_OR_RETURN(auto chars, string_arg(a, 0, "chars", "strip()"));
         return str_value(py_strip(s.str(), chars, true, true));
       }},
      {"lstrip", [](const Value& s, const CallArgs& a) -> StatusOr<Value> {
         ES_ASSIGN_OR_RETURN(auto chars, string_arg(a, 0, "chars", "lstrip()"));
         return str_value(py_strip(s.str(), chars, true, false));
       }},
      {"rstrip", [](const Value& s, const CallArgs& a) -> StatusOr<Value> {
         ES_ASSIGN_OR_RETURN(auto chars, string_arg(a, 0, "chars", "rstrip()"));
         return str_value(py_strip(s.str(), chars, false, true));
       }},
      {"split", [](const Value& s, const CallArgs& a) -> StatusOr<Value> {
         ES_ASSIGN_OR_RETURN(auto sep, string_arg(a, 0, "sep", "split()"));
         if (sep && sep->empty()) return invalid_argument("split(): empty separator");
         const Value* max_split = a.find(1, "maxsplit");
         return string_list(py_split(s.str(), sep, max_split && max_split->is_number() ? max_split->as_int() : -1));
       }},
      {"startswith", [](const Value& s, const CallArgs& a) -> StatusOr<Value> {
         ES_ASSIGN_OR_RETURN(bool hit, affix_match(s, a, true));
         return bool_value(hit);
       }},
      {"endswith", [](const Value& s, const CallArgs& a) -> StatusOr<Value> {
         ES_ASSIGN_OR_RETURN(bool hit, affix_match(s, a, false));
         return bool_value(hit);
       }},
      {"upper", [](const Value& s, const CallArgs&) -> StatusOr<Value> { return str_value(ascii_case(s.str(), true)); }},
      {"lower", [](const Value& s, const CallArgs&) -> StatusOr<Value> { return str_value(ascii_case(s.str(), false)); }},
      {"title", [](const Value& s, const CallArgs&) -> StatusOr<Value> { return str_value(py_title(s.str())); }},
      {"capitalize", [](const Value& s, const CallArgs&) -> StatusOr<Value> { return str_value(py_capitalize(s.str())); }},
      {"replace", [](const Value& s, const CallArgs& a) -> StatusOr<Value> {
         ES_ASSIGN_OR_RETURN(std::string old_text, required_string(a, 0, "old", "replace()"));
         ES_ASSIGN_OR_RETURN(std::string new_text, required_string(a, 1, "new", "replace()"));
         const Value* count = a.find(2, "count");
         return str_value(py_replace(s.str(), old_text, new_text, count && count->is_number() ? count->as_int() : -1));
       }},
      {"find", [](const Value& s, const CallArgs& a) -> StatusOr<Value> {
         ES_ASSIGN_OR_RETURN(std::string sub, required_string(a, 0, "sub", "find()"));
         const size_t hit = s.str().find(sub);
         if (hit == std::string::npos) return int_value(-1);
         return int_value(static_cast<int64_t>(decode_utf8(s.str().substr(0, hit)).size()));
       }},
      {"count", [](const Value& s, const CallArgs& a) -> StatusOr<Value> {
         ES_ASSIGN_OR_RETURN(std::string sub, required_string(a, 0, "sub", "count()"));
         if (sub.empty()) return int_value(static_cast<int64_t>(decode_utf8(s.str()).size()) + 1);
         int64_t n = 0;
         for (size_t at = s.str().find(sub); at != std::string::npos; at = s.str().find(sub, at + sub.size())) ++n;
         return int_value(n);
       }},
      {"join", [](const Value& s, const CallArgs& a) -> StatusOr<Value> {
         const Value* items = a.find(0, "iterable");
         if (items == nullptr) return invalid_argument("join() needs an argument");
         ES_ASSIGN_OR_RETURN(std::vector<Value> parts, iterate(*items));
         std::string out;
         for (size_t i = 0; i < parts.size(); ++i) {
           if (!parts[i].is_string()) return invalid_argument("join() takes strings, got '" + parts[i].type_name() + "'");
           if (i > 0) out += s.str();
           out += parts[i].str();
         }
         return str_value(out);
       }},
  };
  auto it = kMethods->find(name);
  if (it == kMethods->end())
    return Value::undefined("'str object' has no attribute '" + name + "'");
  Fn fn = it->second;
  return Value::from_callable("str." + name,
                              [self, fn](const CallArgs& args) { return fn(self, args); });
}

// A bound method of a Python dict, or Undefined.
Value dict_method(const Value& self, const std::string& name) {
  if (name == "items" || name == "keys" || name == "values") {
    return Value::from_callable("dict." + name, [self, name](const CallArgs&) -> StatusOr<Value> {
      Json out = Json::array();
      for (auto it = self.json().begin(); it != self.json().end(); ++it) {
        if (name == "items") out.push_back(Json::array({it.key(), it.value()}));
        if (name == "keys") out.push_back(it.key());
        if (name == "values") out.push_back(it.value());
      }
      return Value::from_json(std::move(out));
    });
  }
  if (name == "get") {
    return Value::from_callable("dict.get", [self](const CallArgs& args) -> StatusOr<Value> {
      const Value* key = args.find(0, "key");
      if (key == nullptr) return invalid_argument("get() needs a key");
      if (key->is_string()) {
        auto it = self.json().find(key->str());
        if (it != self.json().end()) return Value::alias(self, *it);
      }
      const Value* fallback = args.find(1, "default");
      return fallback ? *fallback : Value::from_json(nullptr);
    });
  }
  return Value::undefined("'dict object' has no attribute '" + name + "'");
}

}  // namespace

StatusOr<Value> get_attribute(const Value& object, const std::string& name) {
  switch (object.kind()) {
    case Value::Kind::kUndefined:
      return invalid_argument(object.undefined_hint());
    case Value::Kind::kNamespace: {
      Value* found = object.ns().find(name);
      if (found != nullptr) return *found;
      return Value::undefined("'Namespace object' has no attribute '" + name + "'");
    }
    case Value::Kind::kCallable:
      return Value::undefined("'function object' has no attribute '" + name + "'");
    case Value::Kind::kJson:
      break;
  }
  if (object.is_dict()) {
    if (name == "items" || name == "keys" || name == "values" || name == "get") {
      return dict_method(object, name);
    }
    auto it = object.json().find(name);
    if (it != object.json().end()) return Value::alias(object, *it);
    return Value::undefined("'dict object' has no attribute '" + name + "'");
  }
  if (object.is_string()) return string_method(object, name);
  return Value::undefined("'" + object.type_name() + " object' has no attribute '" + name + "'");
}

StatusOr<Value> get_item(const Value& object, const Value& key) {
  if (object.is_undefined()) return invalid_argument(object.undefined_hint());
  if (key.is_integer() || key.is_bool()) {
    int64_t index = key.as_int();
    if (object.is_list()) {
      const int64_t size = static_cast<int64_t>(object.json().size());
      if (index < 0) index += size;
      if (index < 0 || index >= size) return Value::undefined("list index out of range");
      return Value::alias(object, object.json()[static_cast<size_t>(index)]);
    }
    if (object.is_string()) {
      const std::u32string text = decode_utf8(object.str());
      const int64_t size = static_cast<int64_t>(text.size());
      if (index < 0) index += size;
      if (index < 0 || index >= size) return Value::undefined("string index out of range");
      return str_value(encode_utf8(text.substr(static_cast<size_t>(index), 1)));
    }
  }
  if (key.is_string()) {
    if (object.is_dict()) {
      auto it = object.json().find(key.str());
      if (it != object.json().end()) return Value::alias(object, *it);
    }
    return get_attribute(object, key.str());
  }
  return Value::undefined("'" + object.type_name() + " object' has no item " +
                          to_output_string(key));
}

StatusOr<Value> slice_value(const Value& object, const Value* start, const Value* stop,
                            const Value* step) {
  auto as_index = [](const Value* v, const char* what) -> StatusOr<std::optional<int64_t>> {
    if (v == nullptr || v->is_none()) return std::optional<int64_t>();
    if (!v->is_integer())
      return invalid_argument(std::string("slice ") + what + " must be an integer");
    return std::optional<int64_t>(v->as_int());
  };
  ES_ASSIGN_OR_RETURN(auto begin_opt, as_index(start, "start"));
  ES_ASSIGN_OR_RETURN(auto end_opt, as_index(stop, "stop"));
  ES_ASSIGN_OR_RETURN(auto step_opt, as_index(step, "step"));
  const int64_t stride = step_opt.value_or(1);
  if (stride == 0) return invalid_argument("slice step cannot be zero");
  std::u32string text;
  int64_t size = 0;
  if (object.is_string()) {
    text = decode_utf8(object.str());
    size = static_cast<int64_t>(text.size());
  } else if (object.is_list()) {
    size = static_cast<int64_t>(object.json().size());
  } else {
    return type_error("slicing", object);
  }
  // Python's slice.indices().
  auto clamp = [&](std::optional<int64_t> v, int64_t fallback) {
    if (!v) return fallback;
    int64_t x = *v < 0 ? *v + size : *v;
    if (stride > 0) return std::clamp<int64_t>(x, 0, size);
    return std::clamp<int64_t>(x, -1, size - 1);
  };
  const int64_t first = clamp(begin_opt, stride > 0 ? 0 : size - 1);
  const int64_t last = clamp(end_opt, stride > 0 ? size : -1);
  std::vector<int64_t> picks;
  for (int64_t i = first; stride > 0 ? i < last : i > last; i += stride) picks.push_back(i);
  if (object.is_string()) {
    std::u32string out;
    for (int64_t i : picks) out.push_back(text[static_cast<size_t>(i)]);
    return str_value(encode_utf8(out));
  }
  Json out = Json::array();
  for (int64_t i : picks) out.push_back(object.json()[static_cast<size_t>(i)]);
  return Value::from_json(std::move(out));
}

StatusOr<std::vector<Value>> iterate(const Value& value) {
  std::vector<Value> items;
  if (value.is_undefined()) return items;
  if (value.is_list()) {
    for (const Json& item : value.json()) items.push_back(Value::alias(value, item));
    return items;
  }
  if (value.is_dict()) {
    for (auto it = value.json().begin(); it != value.json().end(); ++it)
      items.push_back(str_value(it.key()));
    return items;
  }
  if (value.is_string()) {
    for (char32_t c : decode_utf8(value.str()))
      items.push_back(str_value(encode_utf8(std::u32string(1, c))));
    return items;
  }
  return invalid_argument("'" + value.type_name() + "' object is not iterable");
}

void add_builtin_globals(const std::tm& now, std::vector<std::pair<std::string, Value>>& globals) {
  globals.emplace_back(
      "raise_exception",
      Value::from_callable("raise_exception", [](const CallArgs& a) -> StatusOr<Value> {
        const Value* message = a.find(0, "message");
        return invalid_argument("raise_exception: " +
                                (message ? to_output_string(*message) : std::string()));
      }));
  globals.emplace_back(
      "strftime_now",
      Value::from_callable("strftime_now", [now](const CallArgs& a) -> StatusOr<Value> {
        ES_ASSIGN_OR_RETURN(std::string format, required_string(a, 0, "format", "strftime_now()"));
        if (format.empty()) return str_value("");
        char buffer[512];
        const size_t n = std::strftime(buffer, sizeof(buffer), format.c_str(), &now);
        if (n == 0)
          return invalid_argument("strftime_now(): format '" + format + "' gives no text");
        return str_value(std::string(buffer, n));
      }));
  auto make_namespace = [](const CallArgs& a) -> StatusOr<Value> {
    auto ns = std::make_shared<Namespace>();
    for (const Value& positional : a.positional) {
      if (!positional.is_dict()) return type_error("namespace()", positional);
      for (auto it = positional.json().begin(); it != positional.json().end(); ++it) {
        ns->attributes.emplace_back(it.key(), Value::alias(positional, it.value()));
      }
    }
    for (const auto& [key, value] : a.keyword) {
      if (Value* existing = ns->find(key)) {
        *existing = value;
      } else {
        ns->attributes.emplace_back(key, value);
      }
    }
    return Value::from_namespace(std::move(ns));
  };
  globals.emplace_back("namespace", Value::from_callable("namespace", make_namespace));
  globals.emplace_back(
      "dict", Value::from_callable("dict", [](const CallArgs& a) -> StatusOr<Value> {
        Json out = Json::object();
        for (const Value& positional : a.positional) {
          if (!positional.is_dict()) return type_error("dict()", positional);
          for (auto it = positional.json().begin(); it != positional.json().end(); ++it)
            out[it.key()] = it.value();
        }
        for (const auto& [key, value] : a.keyword) {
          ES_ASSIGN_OR_RETURN(out[key], to_json(value));
        }
        return Value::from_json(std::move(out));
      }));
  globals.emplace_back("range",
                       Value::from_callable("range", [](const CallArgs& a) -> StatusOr<Value> {
                         std::vector<int64_t> bounds;
                         for (const Value& v : a.positional) {
                           if (!v.is_integer()) return type_error("range()", v);
                           bounds.push_back(v.as_int());
                         }
                         if (bounds.empty() || bounds.size() > 3)
                           return invalid_argument("range() takes 1 to 3 integers");
                         const int64_t begin = bounds.size() == 1 ? 0 : bounds[0];
                         const int64_t end = bounds.size() == 1 ? bounds[0] : bounds[1];
                         const int64_t step = bounds.size() == 3 ? bounds[2] : 1;
                         if (step == 0) return invalid_argument("range() step cannot be zero");
                         constexpr int64_t kMaxRange = 1 << 20;
                         Json out = Json::array();
                         for (int64_t i = begin; step > 0 ? i < end : i > end; i += step) {
                           if (static_cast<int64_t>(out.size()) >= kMaxRange)
                             return invalid_argument("range() is too long");
                           out.push_back(i);
                         }
                         return Value::from_json(std::move(out));
                       }));
}

}  // namespace earnserve::jinja
