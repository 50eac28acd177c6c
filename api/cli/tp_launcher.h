// Starting the worker ranks of a tensor-parallel engine on this machine. Every model-loading
// command (generate, eval, batch, serve) calls start_tensor_parallel() after parsing: with
// --tensor-parallel-size N on node K of --nnodes M it starts ranks [K * N/M, (K + 1) * N/M) of this
// binary as `earnserve worker --rank r ...` (a hidden command, api/cli/cmd_worker.cpp), except
// rank 0, which is the engine in this process. On node 0 the command then creates its Engine
// (rank 0); on other nodes it waits for its workers and exits with their status.
//
// One machine (M = 1) picks two free loopback ports for the rendezvous and the control channel
// unless --master-port is given. Workers die with this process (PR_SET_PDEATHSIG) and also exit
// when rank 0's control connection closes. Each rank gets cores / (N/M) CPU threads unless
// --threads is given.
//
// LocalRanks owns the child processes; not thread-safe (the command's main thread).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "core/cli_args.h"
#include "scheduler/engine.h"

namespace earnserve::cli {

class LocalRanks {
 public:
  explicit LocalRanks(std::vector<std::pair<int, pid_t>> children)
      : children_(std::move(children)) {}
  // Waits a few seconds for the workers to exit (the engine has told them to), then kills them.
  ~LocalRanks();
  LocalRanks(const LocalRanks&) = delete;
  LocalRanks& operator=(const LocalRanks&) = delete;

  // Waits for every worker; 0 when all exited 0, else 1 (each failure is logged).
  int wait_all();

 private:
  // (rank, pid) of each started worker not reaped yet.
  std::vector<std::pair<int, pid_t>> children_;
};

// Starts this node's workers and completes options.tensor_parallel (ports, threads). Returns the
// workers (none without tensor parallelism) when this process should go on as rank 0, or the
// exit code to return: 1 after an error printed as "earnserve <command>: ...", or the workers'
// status on a node other than 0.
std::variant<std::unique_ptr<LocalRanks>, int> start_tensor_parallel(const std::string& command,
                                                                     const CliArgs& args,
                                                                     EngineOptions& options);

}  // namespace earnserve::cli
