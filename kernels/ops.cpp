// Argument checks and device dispatch for every op. The CUDA branch exists only in builds with
// the CUDA backend; elsewhere a CUDA tensor reaching an op is a "built without CUDA" failure.
#include "kernels/ops.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/panel_gemm.h"
#ifdef EARNSERVE_WITH_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace earnserve::ops {
namespace {

bool is_float_weight(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16;
}

void check_tensor(const char* op, const char* name, const Tensor& t, DType dtype, int ndim) {
  ES_CHECK(t.defined()) << op << ": " << name << " is undefined";
  ES_CHECK(t.dtype() == dtype) << op << ": " << name << " must be " << dtype_name(dtype) << ", got "
                               << t.debug_string();
  ES_CHECK(t.ndim() == ndim) << op << ": " << name << " must have " << ndim << " dims, got "
                             << t.debug_string();
}

void check_weight(const char* op, const char* name, const Tensor& t, int ndim) {
  ES_CHECK(t.defined()) << op << ": " << name << " is undefined";
  ES_CHECK(is_float_weight(t.dtype()))
      << op << ": " << name << " must be f32, bf16 or f16, got " << t.debug_string();
  ES_CHECK(t.ndim() == ndim) << op << ": " << name << " must have " << ndim << " dims, got "
                             << t.debug_string();
}

// A linear weight: a float matrix without scales, or (CPU only) an i8 matrix with one f32 scale
// per row.
void check_linear_weight(const char* op, const LinearWeight& w) {
  if (w.weight.defined() && w.weight.dtype() == DType::kI8) {
    ES_CHECK(w.weight.ndim() == 2)
        << op << ": weight must have 2 dims, got " << w.weight.debug_string();
    ES_CHECK(w.weight.is_cpu()) << op << ": int8 weights are CPU-only";
    check_tensor(op, "scale", w.scale, DType::kF32, 1);
    ES_CHECK(w.scale.is_cpu()) << op << ": scale must be on cpu, got " << w.scale.debug_string();
    ES_CHECK(w.scale.dim(0) == w.weight.dim(0))
        << op << ": scale " << w.scale.debug_string() << " vs weight " << w.weight.debug_string();
    return;
  }
  check_weight(op, "weight", w.weight, 2);
  ES_CHECK(!w.scale.defined()) << op << ": a " << dtype_name(w.weight.dtype())
                               << " weight takes no scale";
  if (w.panels) {
    ES_CHECK(w.weight.is_cpu() && cpu::panel_dtype_supported(w.weight.dtype()))
        << op << ": weights in panels are CPU f32, bf16 or int8, got " << w.weight.debug_string();
  }
}

void check_same_device(const char* op, const Tensor& first,
                       std::initializer_list<const Tensor*> rest) {
  for (const Tensor* t : rest) {
    if (!t->defined()) continue;
    ES_CHECK(t->device() == first.device())
        << op << ": all tensors must be on " << device_name(first.device()) << ", got "
        << t->debug_string();
  }
}

void check_dim(const char* op, const char* what, int64_t actual, int64_t expected) {
  ES_CHECK(actual == expected) << op << ": " << what << " is " << actual << ", expected "
                               << expected;
}

// softmax and log_softmax: x, out: [rows, cols] f32 on one device.
void check_row_softmax(const char* op, const Tensor& x, const Tensor& out) {
  check_tensor(op, "x", x, DType::kF32, 2);
  check_tensor(op, "out", out, DType::kF32, 2);
  check_same_device(op, x, {&out});
  ES_CHECK(out.shape() == x.shape())
      << op << ": out " << out.debug_string() << " vs x " << x.debug_string();
}

// Runs the CPU or CUDA body of an op depending on where `t` lives.
template <typename CpuFn, typename CudaFn>
void dispatch(const char* op, const Tensor& t, CpuFn&& cpu_fn, CudaFn&& cuda_fn) {
  if (t.device() == Device::kCPU) {
    cpu_fn();
    return;
  }
#ifdef EARNSERVE_WITH_CUDA
  cuda_fn();
#else
  (void)cuda_fn;
  ES_CHECK(false) << op << ": tensor on cuda but this build was built without CUDA";
#endif
}

}  // namespace

#ifdef EARNSERVE_WITH_CUDA
#define ES_DISPATCH(op, t, ...) \
  dispatch(                     \
      #op, t, [&] { cpu::op(__VA_ARGS__); }, [&] { cuda::op(__VA_ARGS__); })
#else
#define ES_DISPATCH(op, t, ...) \
  dispatch(                     \
      #op, t, [&] { cpu::op(__VA_ARGS__); }, [] {})
#endif

void embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  embedding(LinearWeight{table, Tensor()}, ids, out);
}

void embedding(const LinearWeight& table, const Tensor& ids, Tensor& out) {
  check_linear_weight("embedding", table);
  check_tensor("embedding", "ids", ids, DType::kI32, 1);
  check_tensor("embedding", "out", out, DType::kF32, 2);
  check_same_device("embedding", table.weight, {&ids, &out});
  check_dim("embedding", "out rows", out.dim(0), ids.dim(0));
  check_dim("embedding", "out cols", out.dim(1), table.weight.dim(1));
  dispatch(
      "embedding", table.weight, [&] { cpu::embedding(table, ids, out); },
      [&] {
#ifdef EARNSERVE_WITH_CUDA
        cuda::embedding(table.weight, ids, out);
#endif
      });
}

void gather_linear_rows(const LinearWeight& w, const Tensor& ids, LinearWeight& out) {
  if (w.weight.dtype() != DType::kI8) {
    ES_CHECK(!out.panels && !out.scale.defined())
        << "gather_linear_rows: rows of a " << dtype_name(w.weight.dtype())
        << " weight are a plain f32 matrix";
    embedding(w, ids, out.weight);
    return;
  }
  check_linear_weight("gather_linear_rows", w);
  check_linear_weight("gather_linear_rows", out);
  check_tensor("gather_linear_rows", "ids", ids, DType::kI32, 1);
  ES_CHECK(ids.is_cpu() && !out.panels) << "gather_linear_rows: int8 rows are CPU, row-major";
  check_dim("gather_linear_rows", "out rows", out.weight.dim(0), ids.dim(0));
  check_dim("gather_linear_rows", "out cols", out.weight.dim(1), w.weight.dim(1));
  cpu::gather_linear_rows_i8(w, ids, out);
}

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  check_tensor("rms_norm", "x", x, DType::kF32, 2);
  check_weight("rms_norm", "weight", weight, 1);
  check_tensor("rms_norm", "out", out, DType::kF32, 2);
  check_same_device("rms_norm", x, {&weight, &out});
  check_dim("rms_norm", "weight size", weight.dim(0), x.dim(1));
  ES_CHECK(out.shape() == x.shape())
      << "rms_norm: out " << out.debug_string() << " vs x " << x.debug_string();
  ES_DISPATCH(rms_norm, x, x, weight, eps, out);
}

void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  check_tensor("add_rms_norm", "residual", residual, DType::kF32, 2);
  check_tensor("add_rms_norm", "x", x, DType::kF32, 2);
  check_weight("add_rms_norm", "weight", weight, 1);
  check_tensor("add_rms_norm", "out", out, DType::kF32, 2);
  check_same_device("add_rms_norm", x, {&residual, &weight, &out});
  check_dim("add_rms_norm", "weight size", weight.dim(0), x.dim(1));
  ES_CHECK(residual.shape() == x.shape() && out.shape() == x.shape())
      << "add_rms_norm: residual " << residual.debug_string() << ", x " << x.debug_string()
      << ", out " << out.debug_string() << " must have one shape";
  ES_CHECK(residual.raw_data() != x.raw_data() || x.numel() == 0)
      << "add_rms_norm: residual must not alias x";
  ES_DISPATCH(add_rms_norm, x, residual, x, weight, eps, out);
}

void gather_rows(const Tensor& x, const Tensor& indices, Tensor& out) {
  check_tensor("gather_rows", "x", x, DType::kF32, 2);
  check_tensor("gather_rows", "indices", indices, DType::kI32, 1);
  check_tensor("gather_rows", "out", out, DType::kF32, 2);
  check_same_device("gather_rows", x, {&indices, &out});
  check_dim("gather_rows", "out rows", out.dim(0), indices.dim(0));
  check_dim("gather_rows", "out cols", out.dim(1), x.dim(1));
  ES_CHECK(out.raw_data() != x.raw_data() || out.numel() == 0)
      << "gather_rows: out must not alias x";
  ES_DISPATCH(gather_rows, x, x, indices, out);
}

void add_inplace(Tensor& y, const Tensor& x) {
  ES_CHECK(y.defined() && x.defined()) << "add_inplace: undefined tensor";
  ES_CHECK(y.dtype() == DType::kF32 && x.dtype() == DType::kF32)
      << "add_inplace: needs f32, got " << y.debug_string() << " and " << x.debug_string();
  ES_CHECK(y.shape() == x.shape())
      << "add_inplace: shapes differ: " << y.debug_string() << " vs " << x.debug_string();
  check_same_device("add_inplace", y, {&x});
  ES_DISPATCH(add_inplace, y, y, x);
}

void rope(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& inv_freq) {
  check_tensor("rope", "q", q, DType::kF32, 3);
  check_tensor("rope", "k", k, DType::kF32, 3);
  check_tensor("rope", "positions", positions, DType::kI32, 1);
  check_tensor("rope", "inv_freq", inv_freq, DType::kF32, 1);
  check_same_device("rope", q, {&k, &positions, &inv_freq});
  check_dim("rope", "k tokens", k.dim(0), q.dim(0));
  check_dim("rope", "positions", positions.dim(0), q.dim(0));
  check_dim("rope", "k head_dim", k.dim(2), q.dim(2));
  ES_CHECK(q.dim(2) % 2 == 0) << "rope: head_dim " << q.dim(2) << " is odd";
  check_dim("rope", "inv_freq size", inv_freq.dim(0), q.dim(2) / 2);
  ES_DISPATCH(rope, q, q, k, positions, inv_freq);
}

void silu_and_mul(const Tensor& gate_up, Tensor& out) {
  check_tensor("silu_and_mul", "gate_up", gate_up, DType::kF32, 2);
  check_tensor("silu_and_mul", "out", out, DType::kF32, 2);
  check_same_device("silu_and_mul", gate_up, {&out});
  check_dim("silu_and_mul", "out rows", out.dim(0), gate_up.dim(0));
  check_dim("silu_and_mul", "gate_up cols", gate_up.dim(1), 2 * out.dim(1));
  ES_DISPATCH(silu_and_mul, gate_up, gate_up, out);
}

bool can_pack_linear(const LinearWeight& w) {
  if (w.panels || !w.weight.defined() || !w.weight.is_cpu() || w.weight.ndim() != 2) return false;
  if (w.weight.dtype() == DType::kI8) {
    // int8 panels have their fast kernel on the avx512 path only (AVX512-VNNI); elsewhere the
    // row-major GEMV stays faster.
    return w.scale.defined() && w.weight.dim(1) % 4 == 0 &&
           cpu::best_cpu_isa() == cpu::CpuIsa::kAvx512;
  }
  return !w.scale.defined() && cpu::panel_dtype_supported(w.weight.dtype());
}

void pack_linear(LinearWeight& w) {
  ES_CHECK(can_pack_linear(w)) << "pack_linear: " << w.weight.debug_string();
  // Matrices of 2 MiB or more in 2 MiB pages: decode reads every panel once per token, front to
  // back (measured on a Zen 4, five interleaved rounds: bf16 decode medians 28.9 -> 30.8 tok/s,
  // f32 14.9 -> 18.1). Smaller ones would round up to a whole 2 MiB page each.
  const size_t bytes = static_cast<size_t>(w.weight.numel()) * dtype_size(w.weight.dtype());
  StatusOr<Tensor> packed = bytes >= (size_t{2} << 20)
                                ? Tensor::cpu_huge_pages(w.weight.shape(), w.weight.dtype())
                                : Tensor::empty(w.weight.shape(), w.weight.dtype());
  ES_CHECK(packed.ok()) << "pack_linear: " << packed.status().to_string();
  cpu::pack_panels(w.weight.raw_data(), w.weight.dtype(), w.weight.dim(0), w.weight.dim(1),
                   packed->raw_data());
  w.weight = std::move(packed).value();
  w.panels = true;
}

bool weight_panels_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("EARNSERVE_WEIGHT_PANELS");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return enabled;
}

void linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out) {
  linear(x, LinearWeight{weight, Tensor()}, bias, out);
}

void linear(const Tensor& x, const LinearWeight& w, const Tensor& bias, Tensor& out) {
  const Tensor& weight = w.weight;
  check_tensor("linear", "x", x, DType::kF32, 2);
  check_linear_weight("linear", w);
  check_tensor("linear", "out", out, DType::kF32, 2);
  check_same_device("linear", x, {&weight, &bias, &out});
  check_dim("linear", "weight in_features", weight.dim(1), x.dim(1));
  check_dim("linear", "out rows", out.dim(0), x.dim(0));
  check_dim("linear", "out cols", out.dim(1), weight.dim(0));
  if (bias.defined()) {
    check_weight("linear", "bias", bias, 1);
    check_dim("linear", "bias size", bias.dim(0), weight.dim(0));
  }
  ES_CHECK(out.raw_data() != x.raw_data() || out.numel() == 0) << "linear: out must not alias x";
  dispatch(
      "linear", x, [&] { cpu::linear(x, w, bias, out); },
      [&] {
#ifdef EARNSERVE_WITH_CUDA
        cuda::linear(x, weight, bias, out);
#endif
      });
}

void reshape_and_cache(const Tensor& key, const Tensor& value, Tensor& key_cache,
                       Tensor& value_cache, const Tensor& slot_mapping) {
  check_tensor("reshape_and_cache", "key", key, DType::kF32, 3);
  check_tensor("reshape_and_cache", "value", value, DType::kF32, 3);
  check_tensor("reshape_and_cache", "key_cache", key_cache, DType::kF32, 4);
  check_tensor("reshape_and_cache", "value_cache", value_cache, DType::kF32, 4);
  check_tensor("reshape_and_cache", "slot_mapping", slot_mapping, DType::kI32, 1);
  check_same_device("reshape_and_cache", key, {&value, &key_cache, &value_cache, &slot_mapping});
  ES_CHECK(value.shape() == key.shape())
      << "reshape_and_cache: value " << value.debug_string() << " vs key " << key.debug_string();
  ES_CHECK(value_cache.shape() == key_cache.shape())
      << "reshape_and_cache: value_cache " << value_cache.debug_string() << " vs key_cache "
      << key_cache.debug_string();
  check_dim("reshape_and_cache", "slot_mapping size", slot_mapping.dim(0), key.dim(0));
  check_dim("reshape_and_cache", "cache num_kv_heads", key_cache.dim(2), key.dim(1));
  check_dim("reshape_and_cache", "cache head_dim", key_cache.dim(3), key.dim(2));
  ES_DISPATCH(reshape_and_cache, key, key, value, key_cache, value_cache, slot_mapping);
}

namespace {

// The shared-prefix fields of paged_attention. Shapes are checked on every device; the values
// only for CPU tensors, since reading device memory here would synchronise every call.
void check_prefixes(const PagedAttentionArgs& args) {
  const char* op = "paged_attention";
  ES_CHECK(args.seq_prefix.defined() == args.prefix_lens.defined())
      << op << ": seq_prefix and prefix_lens must be given together";
  if (!args.seq_prefix.defined()) return;
  check_tensor(op, "seq_prefix", args.seq_prefix, DType::kI32, 1);
  check_tensor(op, "prefix_lens", args.prefix_lens, DType::kI32, 1);
  check_same_device(op, args.query, {&args.seq_prefix, &args.prefix_lens});
  const int64_t num_seqs = args.seq_lens.dim(0);
  check_dim(op, "seq_prefix size", args.seq_prefix.dim(0), num_seqs);
  if (args.query.device() != Device::kCPU) return;

  const int64_t num_prefixes = args.prefix_lens.dim(0);
  const int64_t block_size = args.key_cache.dim(1);
  const int64_t max_blocks = args.block_tables.dim(1);
  const int32_t* prefix_lens = args.prefix_lens.data<int32_t>();
  for (int64_t p = 0; p < num_prefixes; ++p) {
    ES_CHECK(prefix_lens[p] > 0 && prefix_lens[p] % block_size == 0 &&
             prefix_lens[p] <= max_blocks * block_size)
        << op << ": prefix_lens[" << p << "] = " << prefix_lens[p]
        << " is not a positive multiple of block_size " << block_size << " within " << max_blocks
        << " blocks";
  }
  const int32_t* seq_prefix = args.seq_prefix.data<int32_t>();
  const int32_t* seq_lens = args.seq_lens.data<int32_t>();
  const int32_t* query_start_loc = args.query_start_loc.data<int32_t>();
  const int32_t* tables = args.block_tables.data<int32_t>();
  std::vector<int64_t> first_member(static_cast<size_t>(num_prefixes), -1);
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int32_t p = seq_prefix[s];
    ES_CHECK(-1 <= p && p < num_prefixes)
        << op << ": seq_prefix[" << s << "] = " << p << " outside [-1, " << num_prefixes << ")";
    if (p < 0) continue;
    const int64_t context = seq_lens[s] - (query_start_loc[s + 1] - query_start_loc[s]);
    ES_CHECK(context >= prefix_lens[p])
        << op << ": sequence " << s << " has " << context << " KV entries before its queries, "
        << "fewer than its prefix " << p << " of " << prefix_lens[p];
    if (first_member[p] < 0) {
      first_member[p] = s;
      continue;
    }
    const int32_t* first_table = tables + first_member[p] * max_blocks;
    ES_CHECK(
        std::equal(first_table, first_table + prefix_lens[p] / block_size, tables + s * max_blocks))
        << op << ": sequences " << first_member[p] << " and " << s << " share prefix " << p
        << " but their block tables differ within its first " << prefix_lens[p] / block_size
        << " blocks";
  }
}

// The tree field of paged_attention: shape on every device, values only for CPU tensors.
void check_tree(const PagedAttentionArgs& args) {
  const char* op = "paged_attention";
  if (!args.query_parents.defined()) return;
  check_tensor(op, "query_parents", args.query_parents, DType::kI32, 1);
  check_same_device(op, args.query, {&args.query_parents});
  const int64_t num_tokens = args.query.dim(0);
  check_dim(op, "query_parents size", args.query_parents.dim(0), num_tokens);
  if (args.query.device() != Device::kCPU) return;

  const int32_t* parents = args.query_parents.data<int32_t>();
  const int32_t* query_start_loc = args.query_start_loc.data<int32_t>();
  for (int64_t s = 0; s + 1 < args.query_start_loc.dim(0); ++s) {
    const int64_t begin = query_start_loc[s];
    const int64_t end = query_start_loc[s + 1];
    ES_CHECK(0 <= begin && begin <= end && end <= num_tokens)
        << op << ": query_start_loc rows [" << begin << ", " << end << ") of sequence " << s
        << " outside [0, " << num_tokens << "]";
    for (int64_t row = begin; row < end; ++row) {
      ES_CHECK(-1 <= parents[row] && parents[row] < row - begin)
          << op << ": query_parents[" << row << "] = " << parents[row] << ", but query "
          << row - begin << " of sequence " << s << " needs a parent in [-1, " << row - begin
          << ")";
    }
  }
}

}  // namespace

void paged_attention(const PagedAttentionArgs& args, Tensor& out) {
  const char* op = "paged_attention";
  check_tensor(op, "query", args.query, DType::kF32, 3);
  check_tensor(op, "key_cache", args.key_cache, DType::kF32, 4);
  check_tensor(op, "value_cache", args.value_cache, DType::kF32, 4);
  check_tensor(op, "block_tables", args.block_tables, DType::kI32, 2);
  check_tensor(op, "seq_lens", args.seq_lens, DType::kI32, 1);
  check_tensor(op, "query_start_loc", args.query_start_loc, DType::kI32, 1);
  check_tensor(op, "out", out, DType::kF32, 3);
  check_same_device(op, args.query,
                    {&args.key_cache, &args.value_cache, &args.block_tables, &args.seq_lens,
                     &args.query_start_loc, &out});
  ES_CHECK(args.value_cache.shape() == args.key_cache.shape())
      << op << ": value_cache " << args.value_cache.debug_string() << " vs key_cache "
      << args.key_cache.debug_string();
  ES_CHECK(out.shape() == args.query.shape())
      << op << ": out " << out.debug_string() << " vs query " << args.query.debug_string();
  const int64_t num_heads = args.query.dim(1);
  const int64_t num_kv_heads = args.key_cache.dim(2);
  ES_CHECK(num_kv_heads > 0 && num_heads % num_kv_heads == 0)
      << op << ": num_heads " << num_heads << " is not a multiple of num_kv_heads " << num_kv_heads;
  check_dim(op, "key_cache head_dim", args.key_cache.dim(3), args.query.dim(2));
  const int64_t num_seqs = args.seq_lens.dim(0);
  check_dim(op, "block_tables rows", args.block_tables.dim(0), num_seqs);
  check_dim(op, "query_start_loc size", args.query_start_loc.dim(0), num_seqs + 1);
  ES_CHECK(out.raw_data() != args.query.raw_data() || out.numel() == 0)
      << op << ": out must not alias query";
  check_prefixes(args);
  check_tree(args);
  ES_DISPATCH(paged_attention, args.query, args, out);
}

void softmax(const Tensor& x, Tensor& out) {
  check_row_softmax("softmax", x, out);
  ES_DISPATCH(softmax, x, x, out);
}

void log_softmax(const Tensor& x, Tensor& out) {
  check_row_softmax("log_softmax", x, out);
  ES_DISPATCH(log_softmax, x, x, out);
}

void argmax(const Tensor& x, Tensor& out) {
  check_tensor("argmax", "x", x, DType::kF32, 2);
  check_tensor("argmax", "out", out, DType::kI32, 1);
  check_same_device("argmax", x, {&out});
  check_dim("argmax", "out size", out.dim(0), x.dim(0));
  ES_CHECK(x.dim(1) > 0 || x.dim(0) == 0) << "argmax: rows have no columns";
  ES_DISPATCH(argmax, x, x, out);
}

void top_k(const Tensor& x, int k, Tensor& values, Tensor& indices) {
  check_tensor("top_k", "x", x, DType::kF32, 2);
  check_tensor("top_k", "values", values, DType::kF32, 2);
  check_tensor("top_k", "indices", indices, DType::kI32, 2);
  check_same_device("top_k", x, {&values, &indices});
  ES_CHECK(0 <= k && k <= x.dim(1)) << "top_k: k " << k << " outside [0, " << x.dim(1) << "]";
  ES_CHECK(values.dim(0) == x.dim(0) && values.dim(1) == k)
      << "top_k: values " << values.debug_string() << ", expected [" << x.dim(0) << ", " << k
      << "]";
  ES_CHECK(indices.shape() == values.shape())
      << "top_k: indices " << indices.debug_string() << " vs values " << values.debug_string();
  ES_DISPATCH(top_k, x, x, k, values, indices);
}

}  // namespace earnserve::ops
