// Argument checks shared by the Communicator implementations, so that Gloo and NCCL reject the
// same bad calls with the same messages before any rank starts talking. Stateless, thread-safe.
#pragma once

#include "core/status.h"
#include "core/tensor.h"

namespace earnserve {

// `t` is defined and lives on `device`; `op` and `backend` name the call in the message.
Status check_collective_tensor(const Tensor& t, Device device, const char* backend, const char* op);

// in:  [n, ...]  (at least one dimension)
// out: [world_size * n, ...] with in's dtype on in's device; allocated when undefined.
Status prepare_all_gather_output(const Tensor& in, Tensor& out, int world_size,
                                 const char* backend);

// 0 <= root < world_size.
Status check_broadcast_root(int root, int world_size, const char* backend);

}  // namespace earnserve
