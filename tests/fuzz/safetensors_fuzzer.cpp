// libFuzzer target over the safetensors loader (model/safetensors.h): the header, dtypes, shapes
// and data offsets of one file, and the sharded layout (model.safetensors.index.json naming its
// shards). The first byte picks the layout; a sharded input is the index, then each shard, cut at
// 0xFF bytes. Any crash or sanitizer report, or an error that does not name its file, is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/logging.h"
#include "model/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

constexpr char kSeparator = '\xff';

// Touches every byte a loaded tensor claims, so an offset past the mapping is reported.
void read_all(const earnserve::Tensor& t) {
  const auto* bytes = static_cast<const uint8_t*>(t.raw_data());
  uint8_t sum = 0;
  for (size_t i = 0; i < t.nbytes(); ++i) sum ^= bytes[i];
  (void)sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  namespace fz = earnserve::fuzz;
  const auto& dir = fz::scratch_dir();
  if ((data[0] & 1) == 0) {
    const std::string path = (dir / "model.safetensors").string();
    fz::write_file(path, std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
    auto file = earnserve::SafetensorsFile::open(path);
    if (!file.ok()) {
      fz::check_names_file(file.status().to_string(), path);
      return 0;
    }
    for (const auto& [name, tensor] : (*file)->tensors()) read_all(tensor);
    return 0;
  }
  const auto parts = fz::split_input(data + 1, size - 1, kSeparator, 3);
  fz::write_file(dir / "model.safetensors.index.json", parts[0]);
  for (size_t i = 1; i < parts.size(); ++i) {
    fz::write_file(dir / ("model-0000" + std::to_string(i) + "-of-00002.safetensors"), parts[i]);
  }
  auto tensors = earnserve::load_safetensors_dir(dir.string());
  if (!tensors.ok()) {
    fz::check_names_file(tensors.status().to_string(), dir.string());
    return 0;
  }
  for (const auto& [name, t] : *tensors) read_all(t.tensor);
  return 0;
}
