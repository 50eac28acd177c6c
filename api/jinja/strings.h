// Python's str methods that chat templates call (strip, split, replace, case changes), on UTF-8
// text with Python's code point and whitespace rules. Case changes map ASCII letters only.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace earnserve::jinja {

// str.strip / lstrip / rstrip: `chars` (code points) or Python whitespace.
std::string py_strip(const std::string& s, const std::optional<std::string>& chars, bool left,
                     bool right);
// str.split(sep, maxsplit); no `sep` splits on whitespace runs. REQUIRES: sep is not empty.
std::vector<std::string> py_split(const std::string& s, const std::optional<std::string>& sep,
                                  int64_t max_split);
// str.replace(old, new, count); count < 0 replaces all.
std::string py_replace(const std::string& s, const std::string& old_text,
                       const std::string& new_text, int64_t count);
std::string ascii_case(const std::string& s, bool upper);
std::string py_title(const std::string& s);
std::string py_capitalize(const std::string& s);

}  // namespace earnserve::jinja
