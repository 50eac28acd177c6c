#include "api/jinja/filters.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "api/jinja/builtins.h"
#include "api/jinja/strings.h"

namespace earnserve::jinja {
namespace {

using Filter = StatusOr<Value> (*)(const Value& operand, const CallArgs& args);
using Test = StatusOr<bool> (*)(const Value& operand, const CallArgs& args);

// ---- Filters
// -------------------------------------------------------------------------------------

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
    options.separators =
        std::make_pair(seps->json()[0].get<std::string>(), seps->json()[1].get<std::string>());
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

StatusOr<Value> filter_string(const Value& v, const CallArgs&) {
  return str_value(to_output_string(v));
}

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

StatusOr<Value> string_filter(const char* name, const Value& v,
                              std::string (*fn)(const std::string&)) {
  if (!v.is_string()) return type_error(name, v);
  return str_value(fn(v.str()));
}
std::string to_lower(const std::string& s) { return ascii_case(s, false); }
std::string to_upper(const std::string& s) { return ascii_case(s, true); }
StatusOr<Value> filter_lower(const Value& v, const CallArgs&) {
  return string_filter("lower", v, to_lower);
}
StatusOr<Value> filter_upper(const Value& v, const CallArgs&) {
  return string_filter("upper", v, to_upper);
}
StatusOr<Value> filter_title(const Value& v, const CallArgs&) {
  return string_filter("title", v, py_title);
}
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
  Json out = Json::array();
  for (auto it = v.json().begin(); it != v.json().end(); ++it)
    out.push_back(Json::array({it.key(), it.value()}));
  return Value::from_json(std::move(out));
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
  return str_value(
      py_replace(v.str(), old_text, new_text, count && count->is_number() ? count->as_int() : -1));
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
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
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
    if (!a.positional[next_arg].is_string())
      return invalid_argument("select: the test name must be a string");
    test = a.positional[next_arg++].str();
    if (!is_known_test(test)) return invalid_argument("unknown test '" + test + "'");
  }
  CallArgs test_args;
  test_args.positional.assign(a.positional.begin() + std::min(next_arg, a.positional.size()),
                              a.positional.end());
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

StatusOr<Value> filter_select(const Value& v, const CallArgs& a) {
  return select_items(v, a, false, false);
}
StatusOr<Value> filter_reject(const Value& v, const CallArgs& a) {
  return select_items(v, a, false, true);
}
StatusOr<Value> filter_selectattr(const Value& v, const CallArgs& a) {
  return select_items(v, a, true, false);
}
StatusOr<Value> filter_rejectattr(const Value& v, const CallArgs& a) {
  return select_items(v, a, true, true);
}

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
    const bool indent_line =
        (i > 0 || first) && (blank || !py_strip(lines[i], std::nullopt, true, true).empty());
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
  if (m != "common" && m != "ceil" && m != "floor")
    return invalid_argument("round: unknown method '" + m + "'");
  return Value::from_json(Json(r / scale));
}

const std::map<std::string, Filter>& filters() {
  static const std::map<std::string, Filter>* const kFilters = new std::map<std::string, Filter>{
      {"trim", filter_trim},
      {"tojson", filter_tojson},
      {"length", filter_length},
      {"count", filter_length},
      {"string", filter_string},
      {"int", filter_int},
      {"float", filter_float},
      {"lower", filter_lower},
      {"upper", filter_upper},
      {"title", filter_title},
      {"capitalize", filter_capitalize},
      {"first", filter_first},
      {"last", filter_last},
      {"join", filter_join},
      {"default", filter_default},
      {"d", filter_default},
      {"list", filter_list},
      {"items", filter_items},
      {"reverse", filter_reverse},
      {"replace", filter_replace},
      {"abs", filter_abs},
      {"safe", filter_safe},
      {"escape", filter_escape},
      {"e", filter_escape},
      {"select", filter_select},
      {"reject", filter_reject},
      {"selectattr", filter_selectattr},
      {"rejectattr", filter_rejectattr},
      {"map", filter_map},
      {"unique", filter_unique},
      {"sort", filter_sort},
      {"indent", filter_indent},
      {"round", filter_round},
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

}  // namespace earnserve::jinja
