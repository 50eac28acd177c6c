#include "api/cli/tp_launcher.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "api/cli/engine_args.h"
#include "api/cli/tp_args.h"
#include "core/logging.h"
#include "core/threading.h"

namespace earnserve::cli {
namespace {

// How long the workers get to exit after the engine told them to.
constexpr std::chrono::seconds kExitGrace{5};

// Two distinct free loopback ports, chosen by the kernel.
StatusOr<std::pair<int, int>> free_port_pair() {
  int fds[2] = {-1, -1};
  int ports[2] = {0, 0};
  Status status = Status::Ok();
  for (int i = 0; i < 2 && status.ok(); ++i) {
    fds[i] = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof(addr);
    if (fds[i] < 0 || ::bind(fds[i], reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        getsockname(fds[i], reinterpret_cast<sockaddr*>(&addr), &size) != 0) {
      status = unavailable("tensor parallelism: cannot pick a free loopback port");
    } else {
      ports[i] = ntohs(addr.sin_port);
    }
  }
  for (int fd : fds) {
    if (fd >= 0) ::close(fd);
  }
  ES_RETURN_IF_ERROR(status);
  return std::make_pair(ports[0], ports[1]);
}

// The worker command line of `rank`: the options a worker reads (api/cli/cmd_worker.cpp).
std::vector<std::string> worker_args(const EngineOptions& o, int rank, int threads) {
  const TensorParallelOptions& tp = o.tensor_parallel;
  std::vector<std::string> a = {"earnserve",
                                "worker",
                                "--rank",
                                std::to_string(rank),
                                "--model",
                                o.model_dir,
                                "--weight-dtype",
                                weight_dtype_option(o.weight_dtype),
                                "--block-size",
                                std::to_string(o.block_size),
                                "--earn-block-size",
                                std::to_string(o.earn_block_size),
                                "--kv-cache-memory",
                                std::to_string(o.kv_cache_memory_bytes),
                                "--threads",
                                std::to_string(threads),
                                "--tensor-parallel-size",
                                std::to_string(tp.size),
                                "--master-addr",
                                tp.master_addr,
                                "--master-port",
                                std::to_string(tp.master_port),
                                "--tp-control-port",
                                std::to_string(tp.resolved_control_port()),
                                "--tp-timeout-s",
                                std::to_string(static_cast<double>(tp.timeout.count()) / 1000.0)};
  if (!tp.hostname.empty()) {
    a.push_back("--node-addr");
    a.push_back(tp.hostname);
  }
  return a;
}

StatusOr<pid_t> spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return unavailable("tensor parallelism: cannot start a worker process (fork)");
  if (pid == 0) {
    // Only async-signal-safe calls until exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

LocalRanks::~LocalRanks() {
  const auto deadline = std::chrono::steady_clock::now() + kExitGrace;
  while (!children_.empty() && std::chrono::steady_clock::now() < deadline) {
    for (auto it = children_.begin(); it != children_.end();) {
      int status = 0;
      if (waitpid(it->second, &status, WNOHANG) == it->second) {
        it = children_.erase(it);
      } else {
        ++it;
      }
    }
    if (!children_.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (const auto& [rank, pid] : children_) {
    ES_LOG(Warning) << "tensor parallelism: rank " << rank << " did not exit; killing it";
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
}

int LocalRanks::wait_all() {
  int code = 0;
  for (const auto& [rank, pid] : children_) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
    code = 1;
    if (WIFSIGNALED(status)) {
      ES_LOG(Error) << "tensor parallelism: rank " << rank << " was killed by signal "
                    << WTERMSIG(status);
    } else {
      ES_LOG(Error) << "tensor parallelism: rank " << rank << " exited with status "
                    << WEXITSTATUS(status);
    }
  }
  children_.clear();
  return code;
}

std::variant<std::unique_ptr<LocalRanks>, int> start_tensor_parallel(const std::string& command,
                                                                     const CliArgs& args,
                                                                     EngineOptions& options) {
  auto fail = [&](const Status& s) {
    std::fprintf(stderr, "earnserve %s: %s\n", command.c_str(), s.message().c_str());
    return 1;
  };
  TensorParallelOptions& tp = options.tensor_parallel;
  if (tp.size == 1) return std::unique_ptr<LocalRanks>();
  StatusOr<NodeLayout> layout = node_layout_from_args(args);
  if (!layout.ok()) return fail(layout.status());
  if (layout->nnodes == 1 && !layout->explicit_master_port) {
    StatusOr<std::pair<int, int>> ports = free_port_pair();
    if (!ports.ok()) return fail(ports.status());
    tp.master_port = ports->first;
    tp.control_port = ports->second;
  }
  int threads = num_threads();
  if (!args.has("--threads")) {
    threads = std::max(1, num_threads() / layout->ranks_per_node);
    set_num_threads(threads);
  }
  const int first = layout->node_rank * layout->ranks_per_node;
  std::vector<std::pair<int, pid_t>> children;
  for (int rank = std::max(first, 1); rank < first + layout->ranks_per_node; ++rank) {
    StatusOr<pid_t> pid = spawn(worker_args(options, rank, threads));
    if (!pid.ok()) {
      LocalRanks started(std::move(children));
      return fail(pid.status());
    }
    children.emplace_back(rank, *pid);
  }
  auto ranks = std::make_unique<LocalRanks>(std::move(children));
  if (layout->node_rank == 0) return ranks;
  std::printf("earnserve %s: node %d runs tensor-parallel ranks %d..%d for %s:%d\n",
              command.c_str(), layout->node_rank, first, first + layout->ranks_per_node - 1,
              tp.master_addr.c_str(), tp.master_port);
  std::fflush(stdout);
  return ranks->wait_all();
}

}  // namespace earnserve::cli
