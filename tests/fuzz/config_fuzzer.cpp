// libFuzzer target over the config.json loader (model/config.h): the architecture fields, the
// rope scaling (transformers 4 and 5 layouts) and the `earn` object. The input is the file. Any
// crash or sanitizer report, or an error that does not name config.json, is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "model/config.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fz = earnserve::fuzz;
  const auto& dir = fz::scratch_dir();
  fz::write_file(dir / "config.json", std::string_view(reinterpret_cast<const char*>(data), size));
  auto config = earnserve::load_model_config(dir.string());
  if (!config.ok()) fz::check_names_file(config.status().to_string(), "config.json");
  return 0;
}
