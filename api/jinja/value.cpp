#include "api/jinja/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace earnserve::jinja {

const Value* CallArgs::find(size_t index, const std::string& name) const {
  if (index < positional.size()) return &positional[index];
  for (const auto& [key, value] : keyword) {
    if (key == name) return &value;
  }
  return nullptr;
}

Value* Namespace::find(const std::string& name) {
  for (auto& [key, value] : attributes) {
    if (key == name) return &value;
  }
  return nullptr;
}

Value Value::undefined(std::string hint) {
  Value v;
  v.hint_ = std::move(hint);
  return v;
}

Value Value::from_json(Json json) {
  Value v;
  v.kind_ = Kind::kJson;
  v.json_ = std::make_shared<const Json>(std::move(json));
  return v;
}

Value Value::alias(const Value& parent, const Json& child) {
  Value v;
  v.kind_ = Kind::kJson;
  v.json_ = std::shared_ptr<const Json>(parent.json_, &child);
  return v;
}

Value Value::from_namespace(std::shared_ptr<Namespace> ns) {
  Value v;
  v.kind_ = Kind::kNamespace;
  v.ns_ = std::move(ns);
  return v;
}

Value Value::from_callable(std::string name, NativeFunction function) {
  Value v;
  v.kind_ = Kind::kCallable;
  v.callable_ = std::make_shared<const Callable>(Callable{std::move(name), std::move(function)});
  return v;
}

int64_t Value::as_int() const {
  if (json_->is_boolean()) return json_->get<bool>() ? 1 : 0;
  if (json_->is_number_float()) return static_cast<int64_t>(json_->get<double>());
  if (json_->is_number_unsigned()) return static_cast<int64_t>(json_->get<uint64_t>());
  return json_->get<int64_t>();
}

double Value::as_double() const {
  if (json_->is_boolean()) return json_->get<bool>() ? 1.0 : 0.0;
  return json_->get<double>();
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
      return false;
    case Kind::kNamespace:
    case Kind::kCallable:
      return true;
    case Kind::kJson:
      break;
  }
  const Json& j = *json_;
  if (j.is_null()) return false;
  if (j.is_boolean()) return j.get<bool>();
  if (j.is_number_float()) return j.get<double>() != 0.0;
  if (j.is_number()) return as_int() != 0;
  if (j.is_string()) return !j.get_ref<const std::string&>().empty();
  return !j.empty();
}

std::string Value::type_name() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "undefined";
    case Kind::kNamespace:
      return "namespace";
    case Kind::kCallable:
      return "function";
    case Kind::kJson:
      break;
  }
  const Json& j = *json_;
  if (j.is_null()) return "none";
  if (j.is_boolean()) return "bool";
  if (j.is_number_float()) return "float";
  if (j.is_number()) return "int";
  if (j.is_string()) return "str";
  if (j.is_array()) return "list";
  return "dict";
}

Value str_value(std::string s) { return Value::from_json(Json(std::move(s))); }
Value int_value(int64_t v) { return Value::from_json(Json(v)); }
Value bool_value(bool v) { return Value::from_json(Json(v)); }

Status type_error(const std::string& what, const Value& value) {
  if (value.is_undefined()) return invalid_argument(value.undefined_hint());
  return invalid_argument(what + " does not accept a value of type '" + value.type_name() + "'");
}

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

// ---- UTF-8 ------------------------------------------------------------------------------------

std::u32string decode_utf8(const std::string& text) {
  std::u32string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto b = static_cast<unsigned char>(text[i]);
    int length = b < 0x80           ? 1
                 : (b >> 5) == 0x6  ? 2
                 : (b >> 4) == 0xE  ? 3
                 : (b >> 3) == 0x1E ? 4
                                    : 0;
    if (length == 0 || i + length > text.size()) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    char32_t c = length == 1 ? b : length == 2 ? (b & 0x1F) : length == 3 ? (b & 0x0F) : (b & 0x07);
    bool valid = true;
    for (int k = 1; k < length; ++k) {
      const auto cont = static_cast<unsigned char>(text[i + k]);
      if ((cont >> 6) != 0x2) valid = false;
      c = (c << 6) | (cont & 0x3F);
    }
    if (!valid) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(c);
    i += length;
  }
  return out;
}

std::string encode_utf8(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (c >> 12)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (c >> 18)));
      out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// ---- Python text forms ------------------------------------------------------------------------

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, then Python's layout: positional for 1e-4 <= |x| < 1e16.
  char buffer[64];
  auto result =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific);
  std::string sci(buffer, result.ptr);
  const size_t e_pos = sci.find('e');
  std::string mantissa = sci.substr(0, e_pos);
  const int exponent = std::stoi(sci.substr(e_pos + 1));
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits.push_back(c);
  }
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out += "0." + std::string(-exponent - 1, '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exponent + 1) {
      out += digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exp_text[16];
  std::snprintf(exp_text, sizeof(exp_text), "e%c%02d", exponent < 0 ? '-' : '+',
                std::abs(exponent));
  return out + exp_text;
}

namespace {

std::string repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == quote || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\r') {
      out += "\\r";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      char hex[16];
      std::snprintf(hex, sizeof(hex), "\\x%02x", c);
      out += hex;
    } else {
      out += ch;
    }
  }
  out += quote;
  return out;
}

std::string number_string(const Json& j) {
  if (j.is_number_float()) return python_float_repr(j.get<double>());
  if (j.is_number_unsigned()) return std::to_string(j.get<uint64_t>());
  return std::to_string(j.get<int64_t>());
}

void append_json_string(const std::string& s, bool ensure_ascii, std::string& out) {
  out += '"';
  const std::u32string code_points = ensure_ascii ? decode_utf8(s) : std::u32string();
  auto escape_unit = [&out](unsigned unit) {
    char hex[16];
    std::snprintf(hex, sizeof(hex), "\\u%04x", unit);
    out += hex;
  };
  auto append_one = [&](char32_t c, const std::string* raw) {
    switch (c) {
      case '"':
        out += "\\\"";
        return;
      case '\\':
        out += "\\\\";
        return;
      case '\n':
        out += "\\n";
        return;
      case '\r':
        out += "\\r";
        return;
      case '\t':
        out += "\\t";
        return;
      case '\b':
        out += "\\b";
        return;
      case '\f':
        out += "\\f";
        return;
      default:
        break;
    }
    if (c < 0x20) {
      escape_unit(c);
    } else if (ensure_ascii && c > 0x7E) {
      if (c >= 0x10000) {
        const char32_t v = c - 0x10000;
        escape_unit(0xD800 + (v >> 10));
        escape_unit(0xDC00 + (v & 0x3FF));
      } else {
        escape_unit(c);
      }
    } else if (raw != nullptr) {
      out += *raw;
    } else {
      out += static_cast<char>(c);
    }
  };
  if (ensure_ascii) {
    for (char32_t c : code_points) append_one(c, nullptr);
  } else {
    std::string one(1, ' ');
    for (char ch : s) {
      one[0] = ch;
      append_one(static_cast<unsigned char>(ch), &one);
    }
  }
  out += '"';
}

void dump_json(const Json& j, const JsonDumpOptions& options, const std::string& item_sep,
               const std::string& key_sep, int depth, std::string& out) {
  auto newline = [&](int level) {
    if (!options.indent) return;
    out += '\n';
    out.append(static_cast<size_t>(*options.indent) * level, ' ');
  };
  if (j.is_null()) {
    out += "null";
  } else if (j.is_boolean()) {
    out += j.get<bool>() ? "true" : "false";
  } else if (j.is_number_float()) {
    const double d = j.get<double>();
    out += std::isnan(d)   ? "NaN"
           : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity")
                           : python_float_repr(d);
  } else if (j.is_number()) {
    out += number_string(j);
  } else if (j.is_string()) {
    append_json_string(j.get_ref<const std::string&>(), options.ensure_ascii, out);
  } else if (j.is_array()) {
    if (j.empty()) {
      out += "[]";
      return;
    }
    out += '[';
    bool first = true;
    for (const Json& item : j) {
      if (!first) out += item_sep;
      first = false;
      newline(depth + 1);
      dump_json(item, options, item_sep, key_sep, depth + 1, out);
    }
    newline(depth);
    out += ']';
  } else {
    if (j.empty()) {
      out += "{}";
      return;
    }
    std::vector<std::pair<const std::string*, const Json*>> items;
    for (auto it = j.begin(); it != j.end(); ++it) items.emplace_back(&it.key(), &it.value());
    if (options.sort_keys) {
      std::stable_sort(items.begin(), items.end(),
                       [](const auto& a, const auto& b) { return *a.first < *b.first; });
    }
    out += '{';
    bool first = true;
    for (const auto& [key, value] : items) {
      if (!first) out += item_sep;
      first = false;
      newline(depth + 1);
      append_json_string(*key, options.ensure_ascii, out);
      out += key_sep;
      dump_json(*value, options, item_sep, key_sep, depth + 1, out);
    }
    newline(depth);
    out += '}';
  }
}

}  // namespace

std::string python_repr(const Json& j) {
  if (j.is_null()) return "None";
  if (j.is_boolean()) return j.get<bool>() ? "True" : "False";
  if (j.is_number()) return number_string(j);
  if (j.is_string()) return repr_string(j.get_ref<const std::string&>());
  std::string out;
  if (j.is_array()) {
    out += '[';
    bool first = true;
    for (const Json& item : j) {
      if (!first) out += ", ";
      first = false;
      out += python_repr(item);
    }
    return out + ']';
  }
  out += '{';
  bool first = true;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!first) out += ", ";
    first = false;
    out += repr_string(it.key()) + ": " + python_repr(it.value());
  }
  return out + '}';
}

std::string to_output_string(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return "";
    case Value::Kind::kCallable:
      return "<function " + value.callable().name + ">";
    case Value::Kind::kNamespace: {
      auto json = to_json(value);
      return "<Namespace " + (json.ok() ? python_repr(*json) : std::string("{...}")) + ">";
    }
    case Value::Kind::kJson:
      break;
  }
  if (value.is_string()) return value.str();
  return python_repr(value.json());
}

std::string python_json_dumps(const Json& json, const JsonDumpOptions& options) {
  std::string item_sep = options.indent ? "," : ", ";
  std::string key_sep = ": ";
  if (options.separators) {
    item_sep = options.separators->first;
    key_sep = options.separators->second;
  }
  std::string out;
  dump_json(json, options, item_sep, key_sep, 0, out);
  return out;
}

StatusOr<Json> to_json(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kJson:
      return value.json();
    case Value::Kind::kNamespace: {
      Json out = Json::object();
      for (const auto& [key, item] : value.ns().attributes) {
        ES_ASSIGN_OR_RETURN(out[key], to_json(item));
      }
      return out;
    }
    case Value::Kind::kUndefined:
      return invalid_argument(value.undefined_hint());
    case Value::Kind::kCallable:
      break;
  }
  return invalid_argument("a function is not JSON data");
}

bool python_json_equal(const Json& a, const Json& b) {
  const bool a_num = a.is_number() || a.is_boolean();
  const bool b_num = b.is_number() || b.is_boolean();
  if (a_num && b_num) {
    const Value va = Value::from_json(a), vb = Value::from_json(b);
    if (a.is_number_float() || b.is_number_float()) return va.as_double() == vb.as_double();
    return va.as_int() == vb.as_int();
  }
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!python_json_equal(a[i], b[i])) return false;
    }
    return true;
  }
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it) {
      auto other = b.find(it.key());
      if (other == b.end() || !python_json_equal(it.value(), *other)) return false;
    }
    return true;
  }
  return a == b;
}

bool python_equal(const Value& a, const Value& b) {
  if (a.is_json() && b.is_json()) return python_json_equal(a.json(), b.json());
  if (a.is_undefined() && b.is_undefined()) return true;
  if (a.is_namespace() && b.is_namespace()) return &a.ns() == &b.ns();
  if (a.is_callable() && b.is_callable()) return &a.callable() == &b.callable();
  return false;
}

StatusOr<bool> python_less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() < b.as_double();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.str() < b.str();
  if (a.is_list() && b.is_list()) {
    const Json& x = a.json();
    const Json& y = b.json();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (python_json_equal(x[i], y[i])) continue;
      return python_less(Value::alias(a, x[i]), Value::alias(b, y[i]));
    }
    return x.size() < y.size();
  }
  return invalid_argument("'<' not supported between instances of '" + a.type_name() + "' and '" +
                          b.type_name() + "'");
}

}  // namespace earnserve::jinja
