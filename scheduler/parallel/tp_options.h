// TensorParallelOptions: how the engine's tensor-parallel group is laid out and where its ranks
// meet. Rank 0 is the engine (scheduler, block manager, sampling); ranks 1..size-1 are worker
// processes (scheduler/parallel/tp_worker.h) that hold their shard of the weights and KV heads and
// run every step's forward with it. Rank 0 hosts two endpoints at master_addr: the communicator's
// rendezvous store (master_port, model/parallel/tcp_store.h) and the control channel over which it
// sends each step's inputs (control_port, model/parallel/control_channel.h).
//
// A plain value type, and join_communicator(): the one place that picks a rank's collective
// backend.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "core/status.h"
#include "core/tensor.h"
#include "model/parallel/communicator.h"
#include "model/parallel/tcp_store.h"

namespace earnserve {

struct TensorParallelOptions {
  int size = 1;  // 1: no tensor parallelism
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int control_port = 0;  // 0: master_port + 1
  // The address this rank's collective transport listens on, reachable by the other ranks (empty:
  // the machine's hostname; one machine uses 127.0.0.1).
  std::string hostname;
  // Bounds the rendezvous, every control message and every collective: a rank that dies or stops
  // answering fails the engine within about this long.
  std::chrono::milliseconds timeout{30000};
  // GPUs per node when the engine runs on CUDA: rank r uses GPU r % gpus_per_node.
  int gpus_per_node = 1;

  int resolved_control_port() const { return control_port > 0 ? control_port : master_port + 1; }

  RendezvousOptions rendezvous(int rank) const {
    RendezvousOptions r;
    r.master_addr = master_addr;
    r.master_port = master_port;
    r.rank = rank;
    r.world_size = size;
    r.hostname = hostname;
    r.timeout = timeout;
    return r;
  }
};

// Joins the group's communicator as rank `rank`: NCCL on GPU rank % gpus_per_node for CUDA
// engines, Gloo for CPU ones. Returns once every rank has joined (or options.timeout passed).
StatusOr<std::unique_ptr<Communicator>> join_communicator(const TensorParallelOptions& options,
                                                          int rank, Device device);

}  // namespace earnserve
