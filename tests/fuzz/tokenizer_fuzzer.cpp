// libFuzzer target over the tokenizer.json loader (model/tokenizer/tokenizer.h): the model
// (BPE vocab and merges), normalizer, pre-tokenizer, decoder, post-processor and added tokens.
// The input is the file; a tokenizer that loads encodes and decodes a fixed text. Any crash or
// sanitizer report, or an error that does not name tokenizer.json, is a bug.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fz = earnserve::fuzz;
  const auto& dir = fz::scratch_dir();
  const std::string path = (dir / "tokenizer.json").string();
  fz::write_file(path, std::string_view(reinterpret_cast<const char*>(data), size));
  auto tokenizer = earnserve::Tokenizer::from_file(path);
  if (!tokenizer.ok()) {
    fz::check_names_file(tokenizer.status().to_string(), "tokenizer.json");
    return 0;
  }
  const std::vector<int32_t> ids =
      (*tokenizer)->encode("Hello wörld <|im_start|> 12 3\n\tend", /*add_special_tokens=*/true);
  (void)(*tokenizer)->decode(ids, /*skip_special_tokens=*/false);
  return 0;
}
