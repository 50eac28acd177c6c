#include "api/jinja/strings.h"

#include "api/jinja/value.h"

namespace earnserve::jinja {

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

std::string py_replace(const std::string& s, const std::string& old_text,
                       const std::string& new_text, int64_t count) {
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

namespace {
bool ascii_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
}  // namespace

std::string py_title(const std::string& s) {
  std::string out = s;
  bool previous_cased = false;
  for (char& c : out) {
    if (ascii_alpha(c)) {
      c = previous_cased ? ascii_case(std::string(1, c), false)[0]
                         : ascii_case(std::string(1, c), true)[0];
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

}  // namespace earnserve::jinja
