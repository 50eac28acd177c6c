// TcpStore: the key-value store that ranks of a tensor-parallel group meet through. Rank 0 hosts a
// TcpStoreServer at master_addr:master_port; every rank (rank 0 included) talks to it through a
// TcpStoreClient. Gloo exchanges its pair addresses through it and NCCL its ncclUniqueId.
//
// Wire format, one request and one reply per round trip, integers little-endian:
//   request: u8 op (1 = set, 2 = get), u32 key size, key, u32 value size, value (empty for get)
//   reply:   u8 found (1) or missing (0), u32 value size, value
// A get never blocks on the server; TcpStoreClient::wait polls until the keys exist or the
// deadline passes, so a rank that never shows up gives DEADLINE_EXCEEDED, never a hang.
//
// Ownership: TcpStore owns its client and, on rank 0, the server. Thread-safety: TcpStoreServer
// serves from its own thread; TcpStoreClient and TcpStore are thread-safe (one request at a time).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/status.h"

namespace earnserve {

// Where and how the ranks of one group meet.
struct RendezvousOptions {
  // Address and port of the store that rank 0 hosts; every rank connects there.
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int rank = 0;
  int world_size = 1;
  // The address this rank's collective transport listens on (a hostname or IP that the other
  // ranks can reach), or, when `iface` is set, the network interface to take it from. Both empty:
  // the machine's hostname.
  std::string hostname;
  std::string iface;
  // Bound on the whole rendezvous and on each collective.
  std::chrono::milliseconds timeout{30000};
};

// Checks rank, world size, port and timeout; the message names the bad field.
Status validate_rendezvous_options(const RendezvousOptions& options);

class TcpStoreServer {
 public:
  // Listens on addr:port (port 0 picks a free one, see port()).
  static StatusOr<std::unique_ptr<TcpStoreServer>> start(const std::string& addr, int port);
  ~TcpStoreServer();
  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;

  int port() const { return port_; }

 private:
  TcpStoreServer(int listen_fd, int wake_read_fd, int wake_write_fd, int port);
  void serve();

  // Constant after construction
  int listen_fd_;
  int wake_read_fd_;
  int wake_write_fd_;
  int port_;
  // Touched by the serving thread only.
  std::thread thread_;
};

class TcpStoreClient {
 public:
  // Connects to addr:port, retrying while nobody listens yet, until `deadline`.
  static StatusOr<std::unique_ptr<TcpStoreClient>> connect(
      const std::string& addr, int port, std::chrono::steady_clock::time_point deadline);
  ~TcpStoreClient();
  TcpStoreClient(const TcpStoreClient&) = delete;
  TcpStoreClient& operator=(const TcpStoreClient&) = delete;

  Status set(const std::string& key, const std::vector<char>& value,
             std::chrono::steady_clock::time_point deadline);
  // NOT_FOUND when the key is not set (yet).
  StatusOr<std::vector<char>> get(const std::string& key,
                                  std::chrono::steady_clock::time_point deadline);
  // Returns once every key is set; DEADLINE_EXCEEDED naming the first missing key otherwise.
  Status wait(const std::vector<std::string>& keys, std::chrono::steady_clock::time_point deadline);

 private:
  TcpStoreClient(int fd, std::string endpoint) : endpoint_(std::move(endpoint)), fd_(fd) {}
  // One request/reply round trip. Guarded by mu_.
  StatusOr<std::vector<char>> round_trip(uint8_t op, const std::string& key,
                                         const std::vector<char>& value,
                                         std::chrono::steady_clock::time_point deadline);

  // Constant after construction
  std::string endpoint_;  // "addr:port", for messages
  // Guarded by mu_
  std::mutex mu_;
  int fd_;
};

// The store of one rendezvous: rank 0 starts the server, then every rank connects.
class TcpStore {
 public:
  // The deadline of every later call is `options.timeout` after this call began.
  static StatusOr<std::unique_ptr<TcpStore>> open(const RendezvousOptions& options);

  TcpStoreClient& client() { return *client_; }
  std::chrono::steady_clock::time_point deadline() const { return deadline_; }

 private:
  TcpStore() = default;

  // Constant after construction
  std::chrono::steady_clock::time_point deadline_;
  std::unique_ptr<TcpStoreServer> server_;  // rank 0 only; outlives the client below
  std::unique_ptr<TcpStoreClient> client_;
};

}  // namespace earnserve
