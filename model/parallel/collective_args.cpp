#include "model/parallel/collective_args.h"

#include <string>

namespace earnserve {

Status check_collective_tensor(const Tensor& t, Device device, const char* backend,
                               const char* op) {
  const std::string where = std::string(backend) + " " + op;
  if (!t.defined()) return invalid_argument(where + ": undefined tensor");
  if (t.device() != device) {
    return invalid_argument(where + ": tensor is on " + device_name(t.device()) + ", " + backend +
                            " needs " + device_name(device) + " tensors");
  }
  return Status::Ok();
}

Status prepare_all_gather_output(const Tensor& in, Tensor& out, int world_size,
                                 const char* backend) {
  const std::string where = std::string(backend) + " all_gather";
  if (in.ndim() == 0) return invalid_argument(where + ": input has no dimension to gather along");
  Shape expected = in.shape();
  expected[0] *= world_size;
  if (!out.defined()) {
    ES_ASSIGN_OR_RETURN(out, Tensor::empty(expected, in.dtype(), in.device()));
    return Status::Ok();
  }
  if (out.shape() != expected || out.dtype() != in.dtype() || out.device() != in.device()) {
    return invalid_argument(where + ": output is " + dtype_name(out.dtype()) +
                            shape_to_string(out.shape()) + " on " + device_name(out.device()) +
                            ", expected " + dtype_name(in.dtype()) + shape_to_string(expected) +
                            " on " + device_name(in.device()));
  }
  return Status::Ok();
}

Status check_broadcast_root(int root, int world_size, const char* backend) {
  if (root < 0 || root >= world_size) {
    return invalid_argument(std::string(backend) + " broadcast: root " + std::to_string(root) +
                            " is outside [0, " + std::to_string(world_size) + ")");
  }
  return Status::Ok();
}

}  // namespace earnserve
