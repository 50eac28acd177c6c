// libFuzzer target over the recommendation loader (scheduler/recommendation/): the input is
// recommendation.json, catalogue.json and titles.tsv cut at 0x00 bytes, written to a model
// directory and loaded with the tiny-rec tokenizer (the catalogue's item tokens must be in its
// vocabulary). Any crash or sanitizer report, or an error that does not name the file (under the
// model directory), is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "scheduler/recommendation/recommendation.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fz = earnserve::fuzz;
  const earnserve::Tokenizer& tokenizer = *fz::tiny_rec_context().tokenizer;
  const auto& dir = fz::scratch_dir();
  const auto parts = fz::split_input(data, size, '\0', 3);
  const char* names[] = {"recommendation.json", "catalogue.json", "titles.tsv"};
  for (size_t i = 0; i < parts.size(); ++i) fz::write_file(dir / names[i], parts[i]);
  auto spec = earnserve::RecommendationSpec::load(dir.string(), tokenizer);
  if (!spec.ok()) fz::check_names_file(spec.status().to_string(), dir.string());
  return 0;
}
