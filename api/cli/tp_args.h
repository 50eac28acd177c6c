// The tensor-parallel options of every model-loading command (and of the hidden `worker`
// command): --tensor-parallel-size, --nnodes, --node-rank, --master-addr, --master-port,
// --node-addr, --tp-timeout-s, and --tp-control-port, parsed into TensorParallelOptions and the
// node layout that api/cli/tp_launcher.h starts processes from. Stateless; thread-compatible.
#pragma once

#include <set>
#include <string>

#include "core/cli_args.h"
#include "scheduler/parallel/tp_options.h"

namespace earnserve::cli {

const std::set<std::string>& tensor_parallel_value_options();
std::string tensor_parallel_help();

// Where this process's node sits: ranks [node_rank * ranks_per_node, ... + ranks_per_node).
struct NodeLayout {
  int nnodes = 1;
  int node_rank = 0;
  int ranks_per_node = 1;
  bool explicit_master_port = false;  // --master-port given (one node picks free ports otherwise)
};

// Errors name the option: sizes below 1, a size that --nnodes does not divide, a node rank
// outside [0, nnodes), several nodes without --master-addr, ports outside [1, 65535].
StatusOr<TensorParallelOptions> tensor_parallel_from_args(const CliArgs& args);
StatusOr<NodeLayout> node_layout_from_args(const CliArgs& args);

}  // namespace earnserve::cli
