#include "core/cli_args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace earnserve::cli {

StatusOr<CliArgs> CliArgs::parse(const std::vector<std::string>& args,
                                 const std::set<std::string>& value_options,
                                 const std::set<std::string>& flag_options) {
  CliArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i];
    std::optional<std::string> inline_value;
    if (size_t eq = name.find('='); name.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (flag_options.count(name)) {
      if (inline_value) return invalid_argument("option " + name + " takes no value");
      out.flags_.insert(name);
    } else if (value_options.count(name)) {
      if (inline_value) {
        out.values_[name] = *inline_value;
      } else {
        if (i + 1 >= args.size()) return invalid_argument("option " + name + " needs a value");
        out.values_[name] = args[++i];
      }
    } else {
      return invalid_argument("unknown option '" + name + "'");
    }
  }
  return out;
}

std::optional<std::string> CliArgs::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string CliArgs::get_or(const std::string& name, const std::string& fallback) const {
  return get(name).value_or(fallback);
}

StatusOr<int64_t> CliArgs::get_int(const std::string& name, int64_t fallback) const {
  std::optional<std::string> v = get(name);
  if (!v) return fallback;
  errno = 0;
  char* end = nullptr;
  long long x = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno == ERANGE) {
    return invalid_argument("option " + name + " expects an integer, got '" + *v + "'");
  }
  return static_cast<int64_t>(x);
}

StatusOr<double> CliArgs::get_double(const std::string& name, double fallback) const {
  std::optional<std::string> v = get(name);
  if (!v) return fallback;
  char* end = nullptr;
  double x = std::strtod(v->c_str(), &end);
  if (v->empty() || *end != '\0' || !std::isfinite(x)) {
    return invalid_argument("option " + name + " expects a number, got '" + *v + "'");
  }
  return x;
}

}  // namespace earnserve::cli
