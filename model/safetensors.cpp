#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace earnserve {

// A read-only private mapping of a whole file, unmapped with its last owner.
struct SafetensorsFile::Mapping {
  void* base = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (base != nullptr) munmap(base, size);
  }
};

SafetensorsFile::~SafetensorsFile() = default;

namespace {

using Json = nlohmann::json;

// A header larger than this is treated as corrupt rather than parsed (real headers are < 10 MB).
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

StatusOr<DType> parse_dtype(const std::string& name) {
  if (name == "F32") return DType::kF32;
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  return unimplemented("unsupported dtype '" + name + "' (supported: F32, BF16, F16)");
}

// Checks one header entry and returns its tensor view. `data` is the start of the data section.
StatusOr<Tensor> parse_entry(const std::string& name, const Json& entry, char* data,
                             uint64_t data_size, const std::shared_ptr<void>& keep_alive) {
  auto bad = [&](const std::string& problem) {
    return invalid_argument("tensor '" + name + "': " + problem);
  };
  if (!entry.is_object()) return bad("header entry is not an object");
  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) return bad("missing string 'dtype'");
  StatusOr<DType> dtype = parse_dtype(dtype_it->get<std::string>());
  if (!dtype.ok())
    return Status(dtype.status().code(), "tensor '" + name + "': " + dtype.status().message());

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) return bad("missing list 'shape'");
  Shape shape;
  uint64_t numel = 1;
  for (const Json& d : *shape_it) {
    if (!d.is_number_unsigned())
      return bad("shape " + shape_it->dump() + " is not a list of sizes");
    uint64_t dim = d.get<uint64_t>();
    if (dim > data_size || (dim != 0 && numel > data_size / dim)) {
      return bad("shape " + shape_it->dump() + " is larger than the data section");
    }
    numel *= dim;
    shape.push_back(static_cast<int64_t>(dim));
  }

  auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return bad("missing 'data_offsets' [begin, end]");
  }
  uint64_t begin = (*offsets_it)[0].get<uint64_t>();
  uint64_t end = (*offsets_it)[1].get<uint64_t>();
  if (begin > end || end > data_size) {
    return bad("data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
               "] outside the data section of " + std::to_string(data_size) + " bytes");
  }
  uint64_t expected = numel * dtype_size(*dtype);
  if (end - begin != expected) {
    return bad("shape " + shape_to_string(shape) + " of " + dtype_name(*dtype) + " needs " +
               std::to_string(expected) + " bytes but data_offsets span " +
               std::to_string(end - begin));
  }
  char* ptr = data + begin;
  if (reinterpret_cast<uintptr_t>(ptr) % dtype_size(*dtype) != 0) {
    // Misaligned data (legal in the format, never written by the reference writer): copy it.
    Tensor copy = Tensor::cpu(shape, *dtype);
    if (expected > 0) std::memcpy(copy.raw_data(), ptr, expected);
    return copy;
  }
  return Tensor::from_blob(ptr, shape, *dtype, Device::kCPU, keep_alive);
}

StatusOr<Json> read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return not_found(path + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  Json json = Json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return invalid_argument(path + ": not valid JSON");
  return json;
}

}  // namespace

StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return not_found(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return internal_error(path + ": cannot stat: " + std::strerror(err));
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->size = static_cast<size_t>(st.st_size);
  if (mapping->size < 8) {
    ::close(fd);
    return data_loss(path + ": truncated: " + std::to_string(mapping->size) +
                     " bytes, less than the 8-byte header length");
  }
  void* base = mmap(nullptr, mapping->size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);
  if (base == MAP_FAILED)
    return internal_error(path + ": mmap failed: " + std::strerror(map_errno));
  mapping->base = base;

  const auto* bytes = static_cast<const unsigned char*>(base);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  uint64_t file_size = mapping->size;
  if (header_size > file_size - 8 || header_size > kMaxHeaderBytes) {
    return data_loss(path + ": header length " + std::to_string(header_size) +
                     " exceeds the file (" + std::to_string(file_size) +
                     " bytes): truncated or corrupt");
  }
  const char* header_begin = static_cast<const char*>(base) + 8;
  Json header = Json::parse(header_begin, header_begin + header_size, nullptr,
                            /*allow_exceptions=*/false);
  if (header.is_discarded()) return invalid_argument(path + ": header is not valid JSON");
  if (!header.is_object()) return invalid_argument(path + ": header is not a JSON object");

  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = mapping;
  char* data = static_cast<char*>(base) + 8 + header_size;
  uint64_t data_size = file_size - 8 - header_size;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    StatusOr<Tensor> tensor = parse_entry(name, entry, data, data_size, mapping);
    if (!tensor.ok()) return tensor.status().with_prefix(path);
    file->tensors_.emplace(name, std::move(tensor).value());
  }
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

StatusOr<std::map<std::string, CheckpointTensor>> load_safetensors_dir(
    const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) {
    return not_found(model_dir + ": model directory does not exist");
  }
  std::map<std::string, CheckpointTensor> out;
  std::string index_path = (fs::path(model_dir) / "model.safetensors.index.json").string();
  std::string single_path = (fs::path(model_dir) / "model.safetensors").string();
  if (fs::exists(index_path, ec)) {
    ES_ASSIGN_OR_RETURN(Json index, read_json_file(index_path));
    auto map_it = index.is_object() ? index.find("weight_map") : index.end();
    if (map_it == index.end() || !map_it->is_object()) {
      return invalid_argument(index_path + ": missing object 'weight_map'");
    }
    std::map<std::string, std::shared_ptr<const SafetensorsFile>> shards;
    for (const auto& [name, shard] : map_it->items()) {
      if (!shard.is_string()) {
        return invalid_argument(index_path + ": weight_map['" + name + "'] is not a file name");
      }
      std::string shard_name = shard.get<std::string>();
      if (shard_name.empty() || fs::path(shard_name).is_absolute() ||
          shard_name.find("..") != std::string::npos) {
        return invalid_argument(index_path + ": weight_map['" + name +
                                "'] names an invalid file '" + shard_name + "'");
      }
      auto it = shards.find(shard_name);
      if (it == shards.end()) {
        ES_ASSIGN_OR_RETURN(auto file,
                            SafetensorsFile::open((fs::path(model_dir) / shard_name).string()));
        it = shards.emplace(shard_name, std::move(file)).first;
      }
      auto t = it->second->tensors().find(name);
      if (t == it->second->tensors().end()) {
        return not_found(index_path + ": tensor '" + name + "' is not in its shard " + shard_name);
      }
      out.emplace(name, CheckpointTensor{t->second, it->second->path()});
    }
    return out;
  }
  if (!fs::exists(single_path, ec)) {
    return not_found(model_dir + ": no model.safetensors or model.safetensors.index.json");
  }
  ES_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(single_path));
  for (const auto& [name, tensor] : file->tensors()) {
    out.emplace(name, CheckpointTensor{tensor, file->path()});
  }
  return out;
}

}  // namespace earnserve
