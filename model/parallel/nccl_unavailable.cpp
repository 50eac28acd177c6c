// create_nccl_communicator in builds without CUDA: links, and says why it cannot work.

#include "model/parallel/communicator.h"

namespace earnserve {

StatusOr<std::unique_ptr<Communicator>> create_nccl_communicator(const RendezvousOptions& options,
                                                                 int cuda_device) {
  return unimplemented(
      "nccl communicator: earnserve was built without CUDA (configure with "
      "-DEARNSERVE_CUDA=ON)");
}

}  // namespace earnserve
