// Reading Hugging Face safetensors checkpoints without copying: each file is memory-mapped
// read-only, its JSON header validated in full, and each tensor returned as a CPU Tensor view
// into the mapping. The views hold the mapping alive, so a SafetensorsFile may be dropped while
// its tensors are in use. Sharded checkpoints (model.safetensors.index.json) are read through
// their weight_map. Every error names the file. Immutable after open(); thread-safe to read.
//
// File layout: u64 little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32"|"BF16"|"F16", "shape": [...], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {...}}
// and then the data section, to which the offsets are relative.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace earnserve {

class SafetensorsFile {
 public:
  // Maps and validates `path`: header length within the file, valid JSON, known dtypes, shape *
  // itemsize == end - begin, offsets within the data section.
  static StatusOr<std::shared_ptr<const SafetensorsFile>> open(const std::string& path);

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // Tensor views by name, sorted by name.
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }

 private:
  struct Mapping;
  SafetensorsFile() = default;

  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  std::map<std::string, Tensor> tensors_;
};

// One tensor of a checkpoint and the file it came from (for error messages).
struct CheckpointTensor {
  Tensor tensor;
  std::string file;
};

// All tensors of the checkpoint in `model_dir`: model.safetensors.index.json's weight_map when
// present (every listed tensor must be in the shard the map names), else model.safetensors.
StatusOr<std::map<std::string, CheckpointTensor>> load_safetensors_dir(
    const std::string& model_dir);

}  // namespace earnserve
