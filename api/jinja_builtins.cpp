#include "api/jinja_builtins.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

namespace earnserve::jinja {
namespace {

using Filter = StatusOr<Value> (*)(const Value& operand, const CallArgs& args);
using Test = StatusOr<bool> (*)(const Value& operand, const CallArgs& args);

Value str_value(std::string s) { return Value::from_json(Json(std::move(s))); }
Value int_value(int64_t v) { return Value::from_json(Json(v)); }
Value bool_value(bool v) { return Value::from_json(Json(v)); }

Status type_error(const std::string& what, const Value& value) {
  if (value.is_undefined()) return invalid_argument(value.undefined_hint());
  return invalid_argument(what + " does not accept a value of type '" + value.type_name() + "'");
}

// An optional string argument; None and absent give nullopt.
StatusOr<std::optional<std::string>> string_arg(const CallArgs& args, size_t index,
                                                const std::string& name, const std::string& what) {
  const Value* v = args.find(index, name);
  if (v == nullptr || v->is_none()) return std::optional<std::string>();
  if (!v->is_string()) return type_error(what + " argument '" + name + "'", *v);
  return std::optional<std::string>(v->str());
}

StatusOr<std::string> required_string(const CallArgs& args, size_t index, const std::string& name,
                                      const std::string& what) {
  ES_ASSIGN_OR_RETURN(std::optional<std::string> s, string_arg(args, index, name, what));
  if (!s) return invalid_argument(what + " needs argument '" + name + "'");
  return *s;
}

bool bool_arg(const CallArgs& args, size_t index, const std::string& name, bool fallback) {
  const Value* v = args.find(index, name);
  return v == nullptr ? fallback : v->truthy();
}

// ---- Python string operations ------------------------------------------------------------------

std::string py_strip(const std::string& s, const std::optional<std::string>& chars, bool left,
                     bool right) {
  const std::u32string text = decode_utf8(s);
  const std::u32string set = chars ? decode_utf8(*chars) : std::u32string();
  auto strip_it = [&](char32_t c) {
    return chars ? set.find(c) != std::u32string::npos : is_python_space(c);
  };
  size_t begin = 0, end = text.size();
  if (left) {
    while (begin < end && strip_it(text[begin])) ++begin;
  }
  if (right) {
    while (end > begin && strip_it(text[end - 1])) --end;
  }
  return encode_utf8(text.substr(begin, end - begin));
}

std::vector<std::string> py_split(const std::string& s, const std::optional<std::string>& sep,
                                  int64_t max_split) {
  std::vector<std::string> parts;
  if (sep) {
    size_t start = 0;
    while (max_split < 0 || static_cast<int64_t>(parts.size()) < max_split) {
      const size_t hit = s.find(*sep, start);
      if (hit == std::string::npos) break;
      parts.push_back(s.substr(start, hit - start));
      start = hit + sep->size();
    }
    parts.push_back(s.substr(start));
    return parts;
  }
  const std::u32string text = decode_utf8(s);
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_python_space(text[i])) ++i;
    if (i == text.size()) break;
    if (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split) {
      size_t end = text.size();
      while (end > i && is_python_space(text[end - 1])) --end;
      parts.push_back(encode_utf8(text.substr(i, end - i)));
      break;
    }
    size_t j = i;
    while (j < text.size() && !is_python_space(text[j])) ++j;
    parts.push_back(encode_utf8(text.substr(i, j - i)));
    i = j;
  }
  return parts;
}

std::string py_replace(const std::string& s, const std::string& old_text, const std::string& new_text,
                       int64_t count) {
  if (old_text.empty()) {
    // Python inserts the replacement between every code point.
    const std::u32string text = decode_utf8(s);
    std::string out;
    int64_t done = 0;
    for (size_t i = 0; i <= text.size(); ++i) {
      if (count < 0 || done < count) {
        out += new_text;
        ++done;
      }
      if (i < text.size()) out += encode_utf8(text.substr(i, 1));
    }
    return out;
  }
  std::string out;
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t hit = s.find(old_text, start);
    if (hit == std::string::npos) break;
    out += s.substr(start, hit - start) + new_text;
    start = hit + old_text.size();
    ++done;
  }
  return out + s.substr(start);
}

// ASCII case mapping; non-ASCII letters are left as they are.
std::string ascii_case(const std::string& s, bool upper) {
  std::string out = s;
  for (char& c : out) {
    if (upper && c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    if (!upper && c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return out;
}

bool ascii_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::string py_title(const std::string& s) {
  std::string out = s;
  bool previous_cased = false;
  for (char& c : out) {
    if (ascii_alpha(c)) {
      c = previous_cased ? ascii_case(std::string(1, c), false)[0] : ascii_case(std::string(1, c), true)[0];
      previous_cased = true;
    } else {
      previous_cased = (static_cast<unsigned char>(c) & 0x80) != 0 && previous_cased;
    }
  }
  return out;
}

std::string py_capitalize(const std::string& s) {
  std::string out = ascii_case(s, false);
  if (!out.empty()) out[0] = ascii_case(out.substr(0, 1), true)[0];
  return out;
}

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
    if (prefix ? s.compare(0, o.size(), o) == 0 : s.compare(s.size() - o.size(), o.size(), o) == 0) {
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
  if (it == kMethods->end()) return Value::undefined("'str object' has no attribute '" + name + "'");
  Fn fn = it->second;
  return Value::from_callable("str." + name, [self, fn](const CallArgs& args) { return fn(self, args); });
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

// ---- Filters -------------------------------------------------------------------------------------

StatusOr<Value> filter_trim(const Value& v, const CallArgs& a) {
  if (!v.is_string()) return type_error("trim", v);
  ES_ASSIGN_OR_RETURN(auto chars, string_arg(a, 0, "chars", "trim"));
  return str_value(py_strip(v.str(), chars, true, true));
}

StatusOr<Value> filter_tojson(const Value& v, const CallArgs& a) {
  ES_ASSIGN_OR_RETURN(Json json, to_json(v));
  JsonDumpOptions options;
  options.ensure_ascii = bool_arg(a, 0, "ensure_ascii", false);
  if (const Value* indent = a.find(1, "indent"); indent != nullptr && !indent->is_none()) {
    if (!indent->is_integer()) return type_error("tojson indent", *indent);
    options.indent = static_cast<int>(indent->as_int());
  }
  if (const Value* seps = a.find(2, "separators"); seps != nullptr && !seps->is_none()) {
    if (!seps->is_list() || seps->json().size() != 2 || !seps->json()[0].is_string() ||
        !seps->json()[1].is_string()) {
      return invalid_argument("tojson separators must be two strings");
    }
    options.separators = std::make_pair(seps->json()[0].get<std::string>(), seps->json()[1].get<std::string>());
  }
  options.sort_keys = bool_arg(a, 3, "sort_keys", false);
  return str_value(python_json_dumps(json, options));
}

StatusOr<Value> filter_length(const Value& v, const CallArgs&) {
  if (v.is_undefined()) return int_value(0);
  if (v.is_string()) return int_value(static_cast<int64_t>(decode_utf8(v.str()).size()));
  if (v.is_list() || v.is_dict()) return int_value(static_cast<int64_t>(v.json().size()));
  return type_error("length", v);
}

StatusOr<Value> filter_string(const Value& v, const CallArgs&) { return str_value(to_output_string(v)); }

StatusOr<Value> filter_int(const Value& v, const CallArgs& a) {
  if (v.is_number()) return int_value(v.as_int());
  if (v.is_string()) {
    try {
      size_t used = 0;
      const std::string text = py_strip(v.str(), std::nullopt, true, true);
      const int64_t parsed = std::stoll(text, &used);
      if (used == text.size()) return int_value(parsed);
      const double d = std::stod(text, &used);
      if (used == text.size()) return int_value(static_cast<int64_t>(d));
    } catch (const std::exception&) {
    }
  }
  const Value* fallback = a.find(0, "default");
  return fallback ? *fallback : int_value(0);
}

StatusOr<Value> filter_float(const Value& v, const CallArgs& a) {
  if (v.is_number()) return Value::from_json(Json(v.as_double()));
  if (v.is_string()) {
    try {
      size_t used = 0;
      const std::string text = py_strip(v.str(), std::nullopt, true, true);
      const double d = std::stod(text, &used);
      if (used == text.size()) return Value::from_json(Json(d));
    } catch (const std::exception&) {
    }
  }
  const Value* fallback = a.find(0, "default");
  return fallback ? *fallback : Value::from_json(Json(0.0));
}

StatusOr<Value> string_filter(const char* name, const Value& v, std::string (*fn)(const std::string&)) {
  if (!v.is_string()) return type_error(name, v);
  return str_value(fn(v.str()));
}
std::string to_lower(const std::string& s) { return ascii_case(s, false); }
std::string to_upper(const std::string& s) { return ascii_case(s, true); }
StatusOr<Value> filter_lower(const Value& v, const CallArgs&) { return string_filter("lower", v, to_lower); }
StatusOr<Value> filter_upper(const Value& v, const CallArgs&) { return string_filter("upper", v, to_upper); }
StatusOr<Value> filter_title(const Value& v, const CallArgs&) { return string_filter("title", v, py_title); }
StatusOr<Value> filter_capitalize(const Value& v, const CallArgs&) {
  return string_filter("capitalize", v, py_capitalize);
}

StatusOr<Value> filter_first(const Value& v, const CallArgs&) {
  ES_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
  if (items.empty()) return Value::undefined("first of an empty sequence");
  return items.front();
}

StatusOr<Value> filter_last(const Value& v, const CallArgs&) {
  ES_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
  if (items.empty()) return Value::undefined("last of an empty sequence");
  return items.back();
}

StatusOr<Value> filter_join(const Value& v, const CallArgs& a) {
  ES_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
  ES_ASSIGN_OR_RETURN(auto sep, string_arg(a, 0, "d", "join"));
  ES_ASSIGN_OR_RETURN(auto attribute, string_arg(a, 1, "attribute", "join"));
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0 && sep) out += *sep;
    Value item = items[i];
    if (attribute) {
      ES_ASSIGN_OR_RETURN(item, get_item(item, str_value(*attribute)));
    }
    out += to_output_string(item);
  }
  return str_value(out);
}

StatusOr<Value> filter_default(const Value& v, const CallArgs& a) {
  const bool boolean = bool_arg(a, 1, "boolean", false);
  if (v.is_undefined() || (boolean && !v.truthy())) {
    const Value* fallback = a.find(0, "default_value");
    return fallback ? *fallback : str_value("");
  }
  return v;
}

StatusOr<Value> filter_list(const Value& v, const CallArgs&) {
  ES_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
  Json out = Json::array();
  for (const Value& item : items) {
    ES_ASSIGN_OR_RETURN(Json j, to_json(item));
    out.push_back(std::move(j));
  }
  return Value::from_json(std::move(out));
}

StatusOr<Value> filter_items(const Value& v, const CallArgs&) {
  if (v.is_undefined()) return Value::from_json(Json::array());
  if (!v.is_dict()) return type_error("items", v);
  return dict_method(v, "items").callable().function(CallArgs());
}

StatusOr<Value> filter_reverse(const Value& v, const CallArgs&) {
  if (v.is_string()) {
    std::u32string text = decode_utf8(v.str());
    std::reverse(text.begin(), text.end());
    return str_value(encode_utf8(text));
  }
  ES_ASSIGN_OR_RETURN(Value list, filter_list(v, CallArgs()));
  Json out = list.json();
  std::reverse(out.begin(), out.end());
  return Value::from_json(std::move(out));
}

StatusOr<Value> filter_replace(const Value& v, const CallArgs& a) {
  if (!v.is_string()) return type_error("replace", v);
  ES_ASSIGN_OR_RETURN(std::string old_text, required_string(a, 0, "old", "replace"));
  ES_ASSIGN_OR_RETURN(std::string new_text, required_string(a, 1, "new", "replace"));
  const Value* count = a.find(2, "count");
  return str_value(py_replace(v.str(), old_text, new_text, count && count->is_number() ? count->as_int() : -1));
}

StatusOr<Value> filter_abs(const Value& v, const CallArgs&) {
  if (v.is_float()) return Value::from_json(Json(std::fabs(v.as_double())));
  if (v.is_number()) return int_value(std::llabs(v.as_int()));
  return type_error("abs", v);
}

StatusOr<Value> filter_safe(const Value& v, const CallArgs&) { return v; }

StatusOr<Value> filter_escape(const Value& v, const CallArgs&) {
  std::string out;
  for (char c : to_output_string(v)) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return str_value(out);
}

// The items of `v` that pass (or, with `reject`, fail) a test, optionally on an attribute.
StatusOr<Value> select_items(const Value& v, const CallArgs& a, bool by_attribute, bool reject) {
  ES_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
  size_t next_arg = 0;
  std::string attribute;
  if (by_attribute) {
    ES_ASSIGN_OR_RETURN(attribute, required_string(a, next_arg++, "attribute", "selectattr"));
  }
  std::string test;
  if (next_arg < a.positional.size()) {
    if (!a.positional[next_arg].is_string()) return invalid_argument("select: the test name must be a string");
    test = a.positional[next_arg++].str();
    if (!is_known_test(test)) return invalid_argument("unknown test '" + test + "'");
  }
  CallArgs test_args;
  test_args.positional.assign(a.positional.begin() + std::min(next_arg, a.positional.size()), a.positional.end());
  Json out = Json::array();
  for (const Value& item : items) {
    Value subject = item;
    if (by_attribute) {
      ES_ASSIGN_OR_RETURN(subject, get_attribute(item, attribute));
    }
    bool pass = subject.truthy();
    if (!test.empty()) {
      ES_ASSIGN_OR_RETURN(pass, apply_test(test, subject, test_args));
    }
    if (pass != reject) {
      ES_ASSIGN_OR_RETURN(Json j, to_json(item));
      out.push_back(std::move(j));
    }
  }
  return Value::from_json(std::move(out));
}

StatusOr<Value> filter_select(const Value& v, const CallArgs& a) { return select_items(v, a, false, false); }
StatusOr<Value> filter_reject(const Value& v, const CallArgs& a) { return select_items(v, a, false, true); }
StatusOr<Value> filter_selectattr(const Value& v, const CallArgs& a) { return select_items(v, a, true, false); }
StatusOr<Value> filter_rejectattr(const Value& v, const CallArgs& a) { return select_items(v, a, true, true); }

StatusOr<Value> filter_map(const Value& v, const CallArgs& a) {
  ES_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
  ES_ASSIGN_OR_RETURN(auto attribute, string_arg(a, 99, "attribute", "map"));
  std::string filter;
  CallArgs filter_args;
  if (!attribute) {
    if (a.positional.empty() || !a.positional[0].is_string()) {
      return invalid_argument("map needs a filter name or attribute=");
    }
    filter = a.positional[0].str();
    if (!is_known_filter(filter)) return invalid_argument("unknown filter '" + filter + "'");
    filter_args.positional.assign(a.positional.begin() + 1, a.positional.end());
  }
  Json out = Json::array();
  for (const Value& item : items) {
    Value mapped;
    if (attribute) {
      ES_ASSIGN_OR_RETURN(mapped, get_attribute(item, *attribute));
      if (mapped.is_undefined()) {
        if (const Value* fallback = a.find(99, "default")) mapped = *fallback;
      }
    } else {
      ES_ASSIGN_OR_RETURN(mapped, apply_filter(filter, item, filter_args));
    }
    ES_ASSIGN_OR_RETURN(Json j, to_json(mapped));
    out.push_back(std::move(j));
  }
  return Value::from_json(std::move(out));
}

StatusOr<Value> filter_unique(const Value& v, const CallArgs&) {
  ES_ASSIGN_OR_RETURN(Value list, filter_list(v, CallArgs()));
  Json out = Json::array();
  for (const Json& item : list.json()) {
    bool seen = false;
    for (const Json& kept : out) seen = seen || python_json_equal(kept, item);
    if (!seen) out.push_back(item);
  }
  return Value::from_json(std::move(out));
}

StatusOr<Value> filter_sort(const Value& v, const CallArgs& a) {
  ES_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
  const bool reverse = bool_arg(a, 0, "reverse", false);
  const bool case_sensitive = bool_arg(a, 1, "case_sensitive", false);
  ES_ASSIGN_OR_RETURN(auto attribute, string_arg(a, 2, "attribute", "sort"));
  std::vector<std::pair<Value, Value>> keyed;
  for (const Value& item : items) {
    Value key = item;
    if (attribute) {
      ES_ASSIGN_OR_RETURN(key, get_attribute(item, *attribute));
    }
    if (key.is_string() && !case_sensitive) key = str_value(ascii_case(key.str(), false));
    keyed.emplace_back(key, item);
  }
  Status failure = Status::Ok();
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    auto less = reverse ? python_less(y.first, x.first) : python_less(x.first, y.first);
    if (!less.ok()) failure = less.status();
    return less.ok() && *less;
  });
  ES_RETURN_IF_ERROR(failure);
  Json out = Json::array();
  for (const auto& [key, item] : keyed) {
    ES_ASSIGN_OR_RETURN(Json j, to_json(item));
    out.push_back(std::move(j));
  }
  return Value::from_json(std::move(out));
}

StatusOr<Value> filter_indent(const Value& v, const CallArgs& a) {
  if (!v.is_string()) return type_error("indent", v);
  std::string pad(4, ' ');
  if (const Value* width = a.find(0, "width")) {
    if (width->is_string()) {
      pad = width->str();
    } else if (width->is_integer()) {
      pad = std::string(static_cast<size_t>(std::max<int64_t>(0, width->as_int())), ' ');
    } else {
      return type_error("indent width", *width);
    }
  }
  const bool first = bool_arg(a, 1, "first", false);
  const bool blank = bool_arg(a, 2, "blank", false);
  std::vector<std::string> lines = py_split(v.str(), std::string("\n"), -1);
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out += '\n';
    const bool indent_line = (i > 0 || first) && (blank || !py_strip(lines[i], std::nullopt, true, true).empty());
    if (indent_line) out += pad;
    out += lines[i];
  }
  return str_value(out);
}

StatusOr<Value> filter_round(const Value& v, const CallArgs& a) {
  if (!v.is_number()) return type_error("round", v);
  const Value* precision = a.find(0, "precision");
  const int64_t digits = precision && precision->is_integer() ? precision->as_int() : 0;
  ES_ASSIGN_OR_RETURN(auto method, string_arg(a, 1, "method", "round"));
  const double scale = std::pow(10.0, static_cast<double>(digits));
  const double x = v.as_double() * scale;
  const std::string m = method.value_or("common");
  double r = m == "ceil" ? std::ceil(x) : m == "floor" ? std::floor(x) : std::round(x);
  if (m != "common" && m != "ceil" && m != "floor") return invalid_argument("round: unknown method '" + m + "'");
  return Value::from_json(Json(r / scale));
}

const std::map<std::string, Filter>& filters() {
  static const std::map<std::string, Filter>* const kFilters = new std::map<std::string, Filter>{
      {"trim", filter_trim}, {"tojson", filter_tojson}, {"length", filter_length},
      {"count", filter_length}, {"string", filter_string}, {"int", filter_int},
      {"float", filter_float}, {"lower", filter_lower}, {"upper", filter_upper},
      {"title", filter_title}, {"capitalize", filter_capitalize}, {"first", filter_first},
      {"last", filter_last}, {"join", filter_join}, {"default", filter_default},
      {"d", filter_default}, {"list", filter_list}, {"items", filter_items},
      {"reverse", filter_reverse}, {"replace", filter_replace}, {"abs", filter_abs},
      {"safe", filter_safe}, {"escape", filter_escape}, {"e", filter_escape},
      {"select", filter_select}, {"reject", filter_reject}, {"selectattr", filter_selectattr},
      {"rejectattr", filter_rejectattr}, {"map", filter_map}, {"unique", filter_unique},
      {"sort", filter_sort}, {"indent", filter_indent}, {"round", filter_round},
  };
  return *kFilters;
}

// ---- Tests -------------------------------------------------------------------------------------

StatusOr<bool> compare_test(const Value& v, const CallArgs& a, const std::string& op) {
  const Value* other = a.find(0, "other");
  if (other == nullptr) return invalid_argument("test '" + op + "' needs an argument");
  if (op == "eq") return python_equal(v, *other);
  if (op == "ne") return !python_equal(v, *other);
  if (op == "lt") return python_less(v, *other);
  if (op == "gt") return python_less(*other, v);
  ES_ASSIGN_OR_RETURN(bool less, op == "le" ? python_less(*other, v) : python_less(v, *other));
  return !less;
}

const std::map<std::string, Test>& tests() {
  static const std::map<std::string, Test>* const kTests = new std::map<std::string, Test>{
      {"defined", [](const Value& v, const CallArgs&) -> StatusOr<bool> { return !v.is_undefined(); }},
      {"undefined", [](const Value& v, const CallArgs&) -> StatusOr<bool> { return v.is_undefined(); }},
      {"none", [](const Value& v, const CallArgs&) -> StatusOr<bool> { return v.is_none(); }},
      {"string", [](const Value& v, const CallArgs&) -> StatusOr<bool> { return v.is_string(); }},
      {"number", [](const Value& v, const CallArgs&) -> StatusOr<bool> { return v.is_number(); }},
      {"integer", [](const Value& v, const CallArgs&) -> StatusOr<bool> { return v.is_integer(); }},
      {"float", [](const Value& v, const CallArgs&) -> StatusOr<bool> { return v.is_float(); }},
      {"boolean", [](const Value& v, const CallArgs&) -> StatusOr<bool> { return v.is_bool(); }},
      {"mapping", [](const Value& v, const CallArgs&) -> StatusOr<bool> { return v.is_dict(); }},
      {"callable", [](const Value& v, const CallArgs&) -> StatusOr<bool> { return v.is_callable(); }},
      {"iterable", [](const Value& v, const CallArgs&) -> StatusOr<bool> {
         return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
       }},
      {"sequence", [](const Value& v, const CallArgs&) -> StatusOr<bool> {
         return v.is_string() || v.is_list() || v.is_dict();
       }},
      {"true", [](const Value& v, const CallArgs&) -> StatusOr<bool> { return v.is_bool() && v.json().get<bool>(); }},
      {"false", [](const Value& v, const CallArgs&) -> StatusOr<bool> { return v.is_bool() && !v.json().get<bool>(); }},
      {"odd", [](const Value& v, const CallArgs&) -> StatusOr<bool> {
         if (!v.is_number()) return type_error("odd", v);
         return v.as_int() % 2 != 0;
       }},
      {"even", [](const Value& v, const CallArgs&) -> StatusOr<bool> {
         if (!v.is_number()) return type_error("even", v);
         return v.as_int() % 2 == 0;
       }},
      {"divisibleby", [](const Value& v, const CallArgs& a) -> StatusOr<bool> {
         const Value* n = a.find(0, "num");
         if (!v.is_number() || n == nullptr || !n->is_number() || n->as_int() == 0) {
           return invalid_argument("divisibleby needs two numbers, the divisor non-zero");
         }
         return v.as_int() % n->as_int() == 0;
       }},
      {"eq", [](const Value& v, const CallArgs& a) { return compare_test(v, a, "eq"); }},
      {"equalto", [](const Value& v, const CallArgs& a) { return compare_test(v, a, "eq"); }},
      {"ne", [](const Value& v, const CallArgs& a) { return compare_test(v, a, "ne"); }},
      {"lt", [](const Value& v, const CallArgs& a) { return compare_test(v, a, "lt"); }},
      {"le", [](const Value& v, const CallArgs& a) { return compare_test(v, a, "le"); }},
      {"gt", [](const Value& v, const CallArgs& a) { return compare_test(v, a, "gt"); }},
      {"ge", [](const Value& v, const CallArgs& a) { return compare_test(v, a, "ge"); }},
      {"sameas", [](const Value& v, const CallArgs& a) -> StatusOr<bool> {
         const Value* other = a.find(0, "other");
         if (other == nullptr) return invalid_argument("sameas needs an argument");
         if (v.is_json() && other->is_json() && v.json().type() == other->json().type()) {
           return v.json() == other->json() && (v.is_none() || v.is_bool() || &v.json() == &other->json());
         }
         return python_equal(v, *other) && !v.is_json();
       }},
      {"in", [](const Value& v, const CallArgs& a) -> StatusOr<bool> {
         const Value* seq = a.find(0, "seq");
         if (seq == nullptr) return invalid_argument("in needs an argument");
         if (seq->is_string()) {
           if (!v.is_string()) return type_error("'in <string>'", v);
           return seq->str().find(v.str()) != std::string::npos;
         }
         if (seq->is_dict()) return v.is_string() && seq->json().contains(v.str());
         ES_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(*seq));
         return std::any_of(items.begin(), items.end(), [&](const Value& x) { return python_equal(x, v); });
       }},
      {"lower", [](const Value& v, const CallArgs&) -> StatusOr<bool> {
         return v.is_string() && ascii_case(v.str(), false) == v.str();
       }},
      {"upper", [](const Value& v, const CallArgs&) -> StatusOr<bool> {
         return v.is_string() && ascii_case(v.str(), true) == v.str();
       }},
  };
  return *kTests;
}

}  // namespace

bool is_known_filter(const std::string& name) { return filters().count(name) > 0; }
bool is_known_test(const std::string& name) { return tests().count(name) > 0; }

StatusOr<Value> apply_filter(const std::string& name, const Value& operand, const CallArgs& args) {
  auto it = filters().find(name);
  if (it == filters().end()) return invalid_argument("unknown filter '" + name + "'");
  auto result = it->second(operand, args);
  if (!result.ok()) return result.status().with_prefix("filter '" + name + "'");
  return result;
}

StatusOr<bool> apply_test(const std::string& name, const Value& operand, const CallArgs& args) {
  auto it = tests().find(name);
  if (it == tests().end()) return invalid_argument("unknown test '" + name + "'");
  return it->second(operand, args);
}

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
  return Value::undefined("'" + object.type_name() + " object' has no item " + to_output_string(key));
}

StatusOr<Value> slice_value(const Value& object, const Value* start, const Value* stop,
                            const Value* step) {
  auto as_index = [](const Value* v, const char* what) -> StatusOr<std::optional<int64_t>> {
    if (v == nullptr || v->is_none()) return std::optional<int64_t>();
    if (!v->is_integer()) return invalid_argument(std::string("slice ") + what + " must be an integer");
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
    for (auto it = value.json().begin(); it != value.json().end(); ++it) items.push_back(str_value(it.key()));
    return items;
  }
  if (value.is_string()) {
    for (char32_t c : decode_utf8(value.str())) items.push_back(str_value(encode_utf8(std::u32string(1, c))));
    return items;
  }
  return invalid_argument("'" + value.type_name() + "' object is not iterable");
}

void add_builtin_globals(const std::tm& now, std::vector<std::pair<std::string, Value>>& globals) {
  globals.emplace_back("raise_exception", Value::from_callable("raise_exception", [](const CallArgs& a) -> StatusOr<Value> {
    const Value* message = a.find(0, "message");
    return invalid_argument("raise_exception: " + (message ? to_output_string(*message) : std::string()));
  }));
  globals.emplace_back("strftime_now", Value::from_callable("strftime_now", [now](const CallArgs& a) -> StatusOr<Value> {
    ES_ASSIGN_OR_RETURN(std::string format, required_string(a, 0, "format", "strftime_now()"));
    if (format.empty()) return str_value("");
    char buffer[512];
    const size_t n = std::strftime(buffer, sizeof(buffer), format.c_str(), &now);
    if (n == 0) return invalid_argument("strftime_now(): format '" + format + "' gives no text");
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
  globals.emplace_back("dict", Value::from_callable("dict", [](const CallArgs& a) -> StatusOr<Value> {
    Json out = Json::object();
    for (const Value& positional : a.positional) {
      if (!positional.is_dict()) return type_error("dict()", positional);
      for (auto it = positional.json().begin(); it != positional.json().end(); ++it) out[it.key()] = it.value();
    }
    for (const auto& [key, value] : a.keyword) {
      ES_ASSIGN_OR_RETURN(out[key], to_json(value));
    }
    return Value::from_json(std::move(out));
  }));
  globals.emplace_back("range", Value::from_callable("range", [](const CallArgs& a) -> StatusOr<Value> {
    std::vector<int64_t> bounds;
    for (const Value& v : a.positional) {
      if (!v.is_integer()) return type_error("range()", v);
      bounds.push_back(v.as_int());
    }
    if (bounds.empty() || bounds.size() > 3) return invalid_argument("range() takes 1 to 3 integers");
    const int64_t begin = bounds.size() == 1 ? 0 : bounds[0];
    const int64_t end = bounds.size() == 1 ? bounds[0] : bounds[1];
    const int64_t step = bounds.size() == 3 ? bounds[2] : 1;
    if (step == 0) return invalid_argument("range() step cannot be zero");
    constexpr int64_t kMaxRange = 1 << 20;
    Json out = Json::array();
    for (int64_t i = begin; step > 0 ? i < end : i > end; i += step) {
      if (static_cast<int64_t>(out.size()) >= kMaxRange) return invalid_argument("range() is too long");
      out.push_back(i);
    }
    return Value::from_json(std::move(out));
  }));
}

}  // namespace earnserve::jinja
