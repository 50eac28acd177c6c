#include "api/cli/tp_args.h"

namespace earnserve::cli {
namespace {

Status check_port(const char* name, int64_t port) {
  if (port < 1 || port > 65535) {
    return invalid_argument(std::string(name) + " must be in [1, 65535], got " +
                            std::to_string(port));
  }
  return Status::Ok();
}

}  // namespace

const std::set<std::string>& tensor_parallel_value_options() {
  static const std::set<std::string> kOptions = {
      "--tensor-parallel-size", "--nnodes",    "--node-rank",    "--master-addr",
      "--master-port",          "--node-addr", "--tp-timeout-s", "--tp-control-port"};
  return kOptions;
}

std::string tensor_parallel_help() {
  return "tensor parallelism (docs/tensor_parallel.md):\n"
         "  --tensor-parallel-size N     split the model over N ranks (default 1); rank 0 runs\n"
         "                               the engine, the other ranks are worker processes\n"
         "  --nnodes N, --node-rank K    N machines; run the same command on each with its K\n"
         "                               (default 1 and 0); node K starts its N-th of the ranks\n"
         "  --master-addr A              node 0's address (default 127.0.0.1; required when\n"
         "                               --nnodes > 1)\n"
         "  --master-port P              rendezvous port on node 0 (P+1: control channel);\n"
         "                               default 29500, or free ports on one machine\n"
         "  --node-addr A                this node's address for the collectives (default: its\n"
         "                               hostname; 127.0.0.1 on one machine)\n"
         "  --tp-timeout-s S             bound on the rendezvous, every step message and every\n"
         "                               collective; a rank that dies or hangs fails the engine\n"
         "                               within about S seconds (default 30)\n";
}

StatusOr<NodeLayout> node_layout_from_args(const CliArgs& args) {
  NodeLayout layout;
  ES_ASSIGN_OR_RETURN(int64_t size, args.get_int("--tensor-parallel-size", 1));
  ES_ASSIGN_OR_RETURN(int64_t nnodes, args.get_int("--nnodes", 1));
  ES_ASSIGN_OR_RETURN(int64_t node_rank, args.get_int("--node-rank", 0));
  if (size < 1 || size > 1024) {
    return invalid_argument("--tensor-parallel-size must be in [1, 1024], got " +
                            std::to_string(size));
  }
  if (nnodes < 1 || size % nnodes != 0) {
    return invalid_argument("--nnodes must be at least 1 and divide --tensor-parallel-size " +
                            std::to_string(size) + ", got " + std::to_string(nnodes));
  }
  if (node_rank < 0 || node_rank >= nnodes) {
    return invalid_argument("--node-rank must be in [0, " + std::to_string(nnodes) + "), got " +
                            std::to_string(node_rank));
  }
  if (nnodes > 1 && !args.has("--master-addr")) {
    return invalid_argument("--nnodes " + std::to_string(nnodes) +
                            " needs --master-addr (node 0's address)");
  }
  layout.nnodes = static_cast<int>(nnodes);
  layout.node_rank = static_cast<int>(node_rank);
  layout.ranks_per_node = static_cast<int>(size / nnodes);
  layout.explicit_master_port = args.has("--master-port");
  return layout;
}

StatusOr<TensorParallelOptions> tensor_parallel_from_args(const CliArgs& args) {
  ES_ASSIGN_OR_RETURN(NodeLayout layout, node_layout_from_args(args));
  TensorParallelOptions tp;
  tp.size = layout.nnodes * layout.ranks_per_node;
  tp.master_addr = args.get_or("--master-addr", tp.master_addr);
  if (tp.master_addr.empty()) return invalid_argument("--master-addr must not be empty");
  ES_ASSIGN_OR_RETURN(int64_t port, args.get_int("--master-port", tp.master_port));
  ES_RETURN_IF_ERROR(check_port("--master-port", port));
  tp.master_port = static_cast<int>(port);
  ES_ASSIGN_OR_RETURN(int64_t control, args.get_int("--tp-control-port", port + 1));
  ES_RETURN_IF_ERROR(check_port("--tp-control-port", control));
  tp.control_port = static_cast<int>(control);
  tp.hostname = args.get_or("--node-addr", layout.nnodes == 1 ? "127.0.0.1" : "");
  ES_ASSIGN_OR_RETURN(double timeout_s, args.get_double("--tp-timeout-s", 30.0));
  if (!(timeout_s > 0) || timeout_s > 24 * 3600) {
    return invalid_argument("--tp-timeout-s must be in (0, 86400], got " +
                            std::to_string(timeout_s));
  }
  tp.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  tp.gpus_per_node = layout.ranks_per_node;
  return tp;
}

}  // namespace earnserve::cli
