// A small parser for `--name value` and `--flag` command-line options, with typed getters that
// report a clear error for a missing or malformed value. Not thread-safe; one per command.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/status.h"

namespace earnserve::cli {

class CliArgs {
 public:
  // `value_options`: options that take a value; `flag_options`: options that do not.
  static StatusOr<CliArgs> parse(const std::vector<std::string>& args,
                                 const std::set<std::string>& value_options,
                                 const std::set<std::string>& flag_options);

  bool has(const std::string& name) const { return values_.count(name) || flags_.count(name); }
  std::optional<std::string> get(const std::string& name) const;
  std::string get_or(const std::string& name, const std::string& fallback) const;
  StatusOr<int64_t> get_int(const std::string& name, int64_t fallback) const;
  StatusOr<double> get_double(const std::string& name, double fallback) const;
  bool flag(const std::string& name) const { return flags_.count(name) > 0; }

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> flags_;
};

}  // namespace earnserve::cli
