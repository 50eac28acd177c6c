#include "model/parallel/tcp_store.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "core/logging.h"

namespace earnserve {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint8_t kOpSet = 1;
constexpr uint8_t kOpGet = 2;
// Rendezvous keys and values are addresses and ids; anything far larger is a stray client.
constexpr uint32_t kMaxKeyBytes = 64 * 1024;
constexpr uint32_t kMaxValueBytes = 16 * 1024 * 1024;
constexpr size_t kHeaderBytes = 1 + 4;

std::string errno_text() { return std::strerror(errno); }

std::string endpoint_name(const std::string& addr, int port) {
  return addr + ":" + std::to_string(port);
}

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, 1 << 30));
}

void put_u32(std::vector<char>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

StatusOr<addrinfo*> resolve(const std::string& addr, int port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* result = nullptr;
  const std::string service = std::to_string(port);
  int rc = getaddrinfo(addr.empty() ? nullptr : addr.c_str(), service.c_str(), &hints, &result);
  if (rc != 0) {
    return unavailable("store " + endpoint_name(addr, port) +
                       ": cannot resolve address: " + gai_strerror(rc));
  }
  return result;
}

// Sends all of `data` before `deadline`.
Status send_all(int fd, const std::vector<char>& data, Clock::time_point deadline,
                const std::string& endpoint) {
  size_t sent = 0;
  while (sent < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    int rc = poll(&p, 1, remaining_ms(deadline));
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) return deadline_exceeded("store " + endpoint + ": timed out sending a request");
    if (rc < 0) return unavailable("store " + endpoint + ": poll failed: " + errno_text());
    ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return unavailable("store " + endpoint + ": send failed: " + errno_text());
    sent += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Receives exactly `size` bytes into `out` before `deadline`.
Status recv_all(int fd, char* out, size_t size, Clock::time_point deadline,
                const std::string& endpoint) {
  size_t got = 0;
  while (got < size) {
    pollfd p{fd, POLLIN, 0};
    int rc = poll(&p, 1, remaining_ms(deadline));
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) return deadline_exceeded("store " + endpoint + ": timed out waiting for a reply");
    if (rc < 0) return unavailable("store " + endpoint + ": poll failed: " + errno_text());
    ssize_t n = ::recv(fd, out + got, size - got, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return unavailable("store " + endpoint + ": recv failed: " + errno_text());
    if (n == 0) return unavailable("store " + endpoint + ": the server closed the connection");
    got += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// A connection on the server side: bytes received but not yet answered.
struct ServerConnection {
  int fd;
  std::vector<char> pending;
};

// Answers every complete request in `conn.pending`. False when the peer must be dropped.
bool answer_requests(ServerConnection& conn, std::map<std::string, std::vector<char>>& table) {
  size_t pos = 0;
  const std::vector<char>& in = conn.pending;
  std::vector<char> replies;
  while (true) {
    if (in.size() - pos < kHeaderBytes) break;
    const uint8_t op = static_cast<uint8_t>(in[pos]);
    const uint32_t key_size = get_u32(&in[pos + 1]);
    if ((op != kOpSet && op != kOpGet) || key_size > kMaxKeyBytes) return false;
    if (in.size() - pos < kHeaderBytes + key_size + 4) break;
    const uint32_t value_size = get_u32(&in[pos + kHeaderBytes + key_size]);
    if (value_size > kMaxValueBytes) return false;
    const size_t total = kHeaderBytes + key_size + 4 + value_size;
    if (in.size() - pos < total) break;
    std::string key(&in[pos + kHeaderBytes], key_size);
    const char* value = &in[pos + kHeaderBytes + key_size + 4];
    if (op == kOpSet) {
      table[key].assign(value, value + value_size);
      replies.push_back(1);
      put_u32(replies, 0);
    } else {
      auto it = table.find(key);
      replies.push_back(it == table.end() ? 0 : 1);
      const std::vector<char> empty;
      const std::vector<char>& found = it == table.end() ? empty : it->second;
      put_u32(replies, static_cast<uint32_t>(found.size()));
      replies.insert(replies.end(), found.begin(), found.end());
    }
    pos += total;
  }
  conn.pending.erase(conn.pending.begin(), conn.pending.begin() + static_cast<ptrdiff_t>(pos));
  if (replies.empty()) return true;
  // Replies are small and clients read them at once; a client that stalls this long is dropped.
  return send_all(conn.fd, replies, Clock::now() + std::chrono::seconds(10), "client").ok();
}

}  // namespace

Status validate_rendezvous_options(const RendezvousOptions& options) {
  if (options.world_size < 1) {
    return invalid_argument("rendezvous: world_size must be at least 1, got " +
                            std::to_string(options.world_size));
  }
  if (options.rank < 0 || options.rank >= options.world_size) {
    return invalid_argument("rendezvous: rank " + std::to_string(options.rank) +
                            " is outside [0, " + std::to_string(options.world_size) + ")");
  }
  if (options.master_port < 1 || options.master_port > 65535) {
    return invalid_argument("rendezvous: master_port " + std::to_string(options.master_port) +
                            " is outside [1, 65535]");
  }
  if (options.master_addr.empty()) return invalid_argument("rendezvous: master_addr is empty");
  if (options.timeout.count() <= 0) {
    return invalid_argument("rendezvous: timeout must be positive, got " +
                            std::to_string(options.timeout.count()) + " ms");
  }
  return Status::Ok();
}

// ---- TcpStoreServer ------------------------------------------------------------------------

StatusOr<std::unique_ptr<TcpStoreServer>> TcpStoreServer::start(const std::string& addr, int port) {
  ES_ASSIGN_OR_RETURN(addrinfo * info, resolve(addr, port, /*passive=*/true));
  std::string last_error = "no usable address";
  int fd = -1;
  for (addrinfo* ai = info; ai != nullptr; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_error = errno_text();
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 128) == 0) break;
    last_error = errno_text();
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(info);
  if (fd < 0) {
    return unavailable("store " + endpoint_name(addr, port) + ": cannot listen: " + last_error);
  }
  sockaddr_storage bound{};
  socklen_t bound_size = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_size);
  const int bound_port =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  int wake[2];
  if (pipe2(wake, O_CLOEXEC) != 0) {
    ::close(fd);
    return internal_error("store: pipe2 failed: " + errno_text());
  }
  return std::unique_ptr<TcpStoreServer>(new TcpStoreServer(fd, wake[0], wake[1], bound_port));
}

TcpStoreServer::TcpStoreServer(int listen_fd, int wake_read_fd, int wake_write_fd, int port)
    : listen_fd_(listen_fd),
      wake_read_fd_(wake_read_fd),
      wake_write_fd_(wake_write_fd),
      port_(port) {
  thread_ = std::thread([this] { serve(); });
}

TcpStoreServer::~TcpStoreServer() {
  char byte = 0;
  while (::write(wake_write_fd_, &byte, 1) < 0 && errno == EINTR) {
  }
  thread_.join();
  ::close(listen_fd_);
  ::close(wake_read_fd_);
  ::close(wake_write_fd_);
}

void TcpStoreServer::serve() {
  std::map<std::string, std::vector<char>> table;
  std::vector<ServerConnection> conns;
  std::vector<pollfd> fds;
  while (true) {
    fds.assign({{wake_read_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}});
    for (const ServerConnection& c : conns) fds.push_back({c.fd, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      ES_LOG(Error) << "store server: poll failed: " << errno_text();
      break;
    }
    if (fds[0].revents != 0) break;
    if (fds[1].revents & POLLIN) {
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conns.push_back({fd, {}});
      }
    }
    // Only the connections polled above, which are the first fds.size() - 2 of conns.
    std::vector<bool> drop(conns.size(), false);
    for (size_t i = 2; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      ServerConnection& conn = conns[i - 2];
      char buf[64 * 1024];
      ssize_t n = ::recv(conn.fd, buf, sizeof(buf), 0);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) {
        drop[i - 2] = true;
        continue;
      }
      conn.pending.insert(conn.pending.end(), buf, buf + n);
      if (!answer_requests(conn, table)) drop[i - 2] = true;
    }
    for (size_t i = conns.size(); i-- > 0;) {
      if (!drop[i]) continue;
      ::close(conns[i].fd);
      conns.erase(conns.begin() + static_cast<ptrdiff_t>(i));
    }
  }
  for (const ServerConnection& c : conns) ::close(c.fd);
}

// ---- TcpStoreClient ------------------------------------------------------------------------

StatusOr<std::unique_ptr<TcpStoreClient>> TcpStoreClient::connect(const std::string& addr, int port,
                                                                  Clock::time_point deadline) {
  const std::string endpoint = endpoint_name(addr, port);
  std::string last_error = "no usable address";
  auto backoff = std::chrono::milliseconds(5);
  while (true) {
    ES_ASSIGN_OR_RETURN(addrinfo * info, resolve(addr, port, /*passive=*/false));
    for (addrinfo* ai = info; ai != nullptr; ai = ai->ai_next) {
      int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0) {
        last_error = errno_text();
        continue;
      }
      if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        freeaddrinfo(info);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        return std::unique_ptr<TcpStoreClient>(new TcpStoreClient(fd, endpoint));
      }
      last_error = errno_text();
      ::close(fd);
    }
    freeaddrinfo(info);
    // Rank 0 may not be listening yet: retry until the deadline.
    if (Clock::now() + backoff >= deadline) {
      return deadline_exceeded("store " + endpoint + ": nobody accepted a connection before the " +
                               "timeout (last error: " + last_error + ")");
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(100));
  }
}

TcpStoreClient::~TcpStoreClient() { ::close(fd_); }

StatusOr<std::vector<char>> TcpStoreClient::round_trip(uint8_t op, const std::string& key,
                                                       const std::vector<char>& value,
                                                       Clock::time_point deadline) {
  if (key.size() > kMaxKeyBytes || value.size() > kMaxValueBytes) {
    return invalid_argument("store " + endpoint_ + ": key or value of '" + key + "' too large");
  }
  std::vector<char> request;
  request.reserve(kHeaderBytes + key.size() + 4 + value.size());
  request.push_back(static_cast<char>(op));
  put_u32(request, static_cast<uint32_t>(key.size()));
  request.insert(request.end(), key.begin(), key.end());
  put_u32(request, static_cast<uint32_t>(value.size()));
  request.insert(request.end(), value.begin(), value.end());

  std::lock_guard<std::mutex> lock(mu_);
  ES_RETURN_IF_ERROR(send_all(fd_, request, deadline, endpoint_));
  char header[kHeaderBytes];
  ES_RETURN_IF_ERROR(recv_all(fd_, header, sizeof(header), deadline, endpoint_));
  const uint32_t size = get_u32(header + 1);
  if (size > kMaxValueBytes) {
    return data_loss("store " + endpoint_ + ": reply of " + std::to_string(size) + " bytes");
  }
  std::vector<char> reply(size);
  ES_RETURN_IF_ERROR(recv_all(fd_, reply.data(), size, deadline, endpoint_));
  if (header[0] == 0) return not_found("store " + endpoint_ + ": key '" + key + "' is not set");
  return reply;
}

Status TcpStoreClient::set(const std::string& key, const std::vector<char>& value,
                           Clock::time_point deadline) {
  return round_trip(kOpSet, key, value, deadline).status();
}

StatusOr<std::vector<char>> TcpStoreClient::get(const std::string& key,
                                                Clock::time_point deadline) {
  return round_trip(kOpGet, key, {}, deadline);
}

Status TcpStoreClient::wait(const std::vector<std::string>& keys, Clock::time_point deadline) {
  auto backoff = std::chrono::milliseconds(1);
  for (const std::string& key : keys) {
    while (true) {
      StatusOr<std::vector<char>> value = get(key, deadline);
      if (value.ok()) break;
      if (value.status().code() == StatusCode::kDeadlineExceeded) {
        // The deadline passed while a get was in flight (a loaded machine): still the wait's
        // timeout, named by its key.
        return deadline_exceeded("store " + endpoint_ + ": key '" + key +
                                 "' was not set before the timeout (" + value.status().message() +
                                 ")");
      }
      if (value.status().code() != StatusCode::kNotFound) return value.status();
      if (Clock::now() + backoff >= deadline) {
        return deadline_exceeded("store " + endpoint_ + ": key '" + key +
                                 "' was not set before the timeout");
      }
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(20));
    }
  }
  return Status::Ok();
}

// ---- TcpStore ------------------------------------------------------------------------------

StatusOr<std::unique_ptr<TcpStore>> TcpStore::open(const RendezvousOptions& options) {
  ES_RETURN_IF_ERROR(validate_rendezvous_options(options));
  std::unique_ptr<TcpStore> store(new TcpStore());
  store->deadline_ = Clock::now() + options.timeout;
  if (options.rank == 0) {
    ES_ASSIGN_OR_RETURN(store->server_,
                        TcpStoreServer::start(options.master_addr, options.master_port));
  }
  ES_ASSIGN_OR_RETURN(
      store->client_,
      TcpStoreClient::connect(options.master_addr, options.master_port, store->deadline_));
  return store;
}

}  // namespace earnserve
