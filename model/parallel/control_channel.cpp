#include "model/parallel/control_channel.h"

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
#include <thread>

namespace earnserve {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kHeaderBytes = 4 + 2 + 2 + 8;
// Keepalive probes: a silent peer is dropped after about 10 + 3 * 5 seconds.
constexpr int kKeepIdleS = 10;
constexpr int kKeepIntervalS = 5;
constexpr int kKeepCount = 3;

std::string errno_text() { return std::strerror(errno); }

std::string endpoint_name(const std::string& addr, int port) {
  return addr + ":" + std::to_string(port);
}

// Milliseconds to wait in poll(): -1 (forever) without a deadline.
int poll_timeout_ms(ControlDeadline deadline) {
  if (deadline == ControlDeadline::max()) return -1;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, 1 << 30));
}

void put_le(std::vector<char>& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
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
    return unavailable("control channel " + endpoint_name(addr, port) +
                       ": cannot resolve address: " + gai_strerror(rc));
  }
  return result;
}

void configure_socket(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &kKeepIdleS, sizeof(kKeepIdleS));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &kKeepIntervalS, sizeof(kKeepIntervalS));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &kKeepCount, sizeof(kKeepCount));
}

// One non-blocking connect attempt bounded by `deadline`; the socket on success, -1 otherwise
// (with the reason in `error`).
int try_connect(const addrinfo* ai, ControlDeadline deadline, std::string& error) {
  int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
  if (fd < 0) {
    error = errno_text();
    return -1;
  }
  if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      error = errno_text();
      ::close(fd);
      return -1;
    }
    pollfd p{fd, POLLOUT, 0};
    int rc;
    do {
      rc = poll(&p, 1, poll_timeout_ms(deadline));
    } while (rc < 0 && errno == EINTR);
    int so_error = 0;
    socklen_t size = sizeof(so_error);
    if (rc <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &size) != 0 || so_error != 0) {
      error = rc == 0 ? "timed out" : std::strerror(so_error != 0 ? so_error : errno);
      ::close(fd);
      return -1;
    }
  }
  const int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  configure_socket(fd);
  return fd;
}

}  // namespace

// ---- ControlConnection ------------------------------------------------------------------------

StatusOr<std::unique_ptr<ControlConnection>> ControlConnection::connect(const std::string& addr,
                                                                        int port,
                                                                        ControlDeadline deadline) {
  const std::string endpoint = endpoint_name(addr, port);
  std::string error = "no usable address";
  while (true) {
    ES_ASSIGN_OR_RETURN(addrinfo * info, resolve(addr, port, /*passive=*/false));
    int fd = -1;
    for (addrinfo* ai = info; ai != nullptr && fd < 0; ai = ai->ai_next) {
      fd = try_connect(ai, deadline, error);
    }
    freeaddrinfo(info);
    if (fd >= 0) return std::make_unique<ControlConnection>(fd, endpoint);
    if (Clock::now() >= deadline) {
      return deadline_exceeded("control channel " + endpoint + ": cannot connect: " + error);
    }
    // Rank 0 may not listen yet.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

ControlConnection::ControlConnection(int fd, std::string peer) : fd_(fd), peer_(std::move(peer)) {}

ControlConnection::~ControlConnection() { ::close(fd_); }

Status ControlConnection::send(const ControlMessage& message, ControlDeadline deadline) {
  std::vector<char> frame;
  frame.reserve(kHeaderBytes + message.payload.size());
  put_le(frame, kControlMagic, 4);
  put_le(frame, kControlProtocolVersion, 2);
  put_le(frame, message.type, 2);
  put_le(frame, message.payload.size(), 8);
  frame.insert(frame.end(), message.payload.begin(), message.payload.end());
  size_t sent = 0;
  while (sent < frame.size()) {
    pollfd p{fd_, POLLOUT, 0};
    int rc = poll(&p, 1, poll_timeout_ms(deadline));
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) return deadline_exceeded("control channel to " + peer_ + ": timed out sending");
    if (rc < 0) return unavailable("control channel to " + peer_ + ": poll failed: " + errno_text());
    ssize_t n = ::send(fd_, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return unavailable("control channel to " + peer_ + ": send failed: " + errno_text());
    sent += static_cast<size_t>(n);
  }
  return Status::Ok();
}

namespace {

// Receives exactly `size` bytes before `deadline`.
Status receive_exactly(int fd, char* out, size_t size, ControlDeadline deadline,
                       const std::string& peer) {
  size_t got = 0;
  while (got < size) {
    pollfd p{fd, POLLIN, 0};
    int rc = poll(&p, 1, poll_timeout_ms(deadline));
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) {
      return deadline_exceeded("control channel to " + peer + ": no message before the deadline");
    }
    if (rc < 0) return unavailable("control channel to " + peer + ": poll failed: " + errno_text());
    ssize_t n = ::recv(fd, out + got, size - got, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return unavailable("control channel to " + peer + ": " + errno_text());
    if (n == 0) return unavailable("control channel to " + peer + ": the peer closed the connection");
    got += static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

StatusOr<ControlMessage> ControlConnection::receive(ControlDeadline deadline) {
  char header[kHeaderBytes];
  ES_RETURN_IF_ERROR(receive_exactly(fd_, header, kHeaderBytes, deadline, peer_));
  const uint32_t magic = static_cast<uint32_t>(get_le(header, 4));
  const uint16_t version = static_cast<uint16_t>(get_le(header + 4, 2));
  const uint64_t size = get_le(header + 8, 8);
  if (magic != kControlMagic) {
    return data_loss("control channel to " + peer_ +
                     ": received bytes that are not an earnserve control message");
  }
  if (version != kControlProtocolVersion) {
    return data_loss("control channel to " + peer_ + ": the peer speaks control protocol version " +
                     std::to_string(version) + ", this build speaks version " +
                     std::to_string(kControlProtocolVersion) +
                     " (run the same earnserve build on every rank)");
  }
  if (size > kMaxControlPayloadBytes) {
    return data_loss("control channel to " + peer_ + ": a message of " + std::to_string(size) +
                     " bytes exceeds the limit of " + std::to_string(kMaxControlPayloadBytes));
  }
  ControlMessage message;
  message.type = static_cast<uint16_t>(get_le(header + 6, 2));
  message.payload.resize(size);
  ES_RETURN_IF_ERROR(receive_exactly(fd_, message.payload.data(), size, deadline, peer_));
  return message;
}

bool ControlConnection::has_input() const {
  pollfd p{fd_, POLLIN, 0};
  return poll(&p, 1, 0) > 0;
}

// ---- ControlListener --------------------------------------------------------------------------

StatusOr<std::unique_ptr<ControlListener>> ControlListener::listen(const std::string& addr,
                                                                   int port) {
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
  const std::string endpoint = endpoint_name(addr, port);
  if (fd < 0) return unavailable("control channel " + endpoint + ": cannot listen: " + last_error);
  sockaddr_storage bound{};
  socklen_t bound_size = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_size);
  const int bound_port =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return std::unique_ptr<ControlListener>(
      new ControlListener(fd, bound_port, endpoint_name(addr, bound_port)));
}

ControlListener::~ControlListener() { ::close(fd_); }

StatusOr<std::unique_ptr<ControlConnection>> ControlListener::accept(ControlDeadline deadline) {
  while (true) {
    pollfd p{fd_, POLLIN, 0};
    int rc = poll(&p, 1, poll_timeout_ms(deadline));
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) {
      return deadline_exceeded("control channel " + endpoint_ +
                               ": no worker connected before the deadline");
    }
    if (rc < 0) return unavailable("control channel " + endpoint_ + ": poll failed: " + errno_text());
    sockaddr_storage peer{};
    socklen_t size = sizeof(peer);
    int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &size, SOCK_CLOEXEC);
    if (fd < 0 && (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)) continue;
    if (fd < 0) return unavailable("control channel " + endpoint_ + ": accept failed: " + errno_text());
    char host[NI_MAXHOST] = "?";
    char service[NI_MAXSERV] = "?";
    getnameinfo(reinterpret_cast<sockaddr*>(&peer), size, host, sizeof(host), service,
                sizeof(service), NI_NUMERICHOST | NI_NUMERICSERV);
    configure_socket(fd);
    return std::make_unique<ControlConnection>(fd, std::string(host) + ":" + service);
  }
}

}  // namespace earnserve
