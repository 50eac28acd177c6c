#include "scheduler/parallel/tp_options.h"

namespace earnserve {

StatusOr<std::unique_ptr<Communicator>> join_communicator(const TensorParallelOptions& options,
                                                          int rank, Device device) {
  const RendezvousOptions rendezvous = options.rendezvous(rank);
  if (device == Device::kCUDA) {
    return create_nccl_communicator(rendezvous, rank % options.gpus_per_node);
  }
  return create_gloo_communicator(rendezvous);
}

}  // namespace earnserve
