#include "model/parallel/control_channel.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio.hpp>
#include <optional>
#include <thread>

namespace earnserve {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

struct ControlConnection::Impl {
  asio::io_context io;
  tcp::socket socket{io};
};

struct ControlListener::Impl {
  asio::io_context io;
  tcp::acceptor acceptor{io};
};

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kHeaderBytes = 4 + 2 + 2 + 8;
// Keepalive probes: a silent peer is dropped after about 10 + 3 * 5 seconds.
constexpr int kKeepIdleS = 10;
constexpr int kKeepIntervalS = 5;
constexpr int kKeepCount = 3;

std::string endpoint_name(const std::string& addr, int port) {
  return addr + ":" + std::to_string(port);
}

void put_le(std::vector<char>& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

// Runs one asynchronous operation to its end or to `deadline`. `start` initiates it on `io`'s
// objects with the completion handler it is given; `cancel` aborts it. Returns the operation's
// error, or nullopt when the deadline passed first (the operation is then cancelled and its
// handler has run before this returns, so nothing refers to the caller's buffers any more).
template <typename Start, typename Cancel>
std::optional<error_code> run_until(asio::io_context& io, ControlDeadline deadline, Start start,
                                    Cancel cancel) {
  io.restart();
  std::optional<error_code> result;
  start([&result](const error_code& ec, auto&&...) { result = ec; });
  if (deadline == ControlDeadline::max()) {
    io.run();
  } else {
    io.run_until(deadline);
  }
  if (result) return result;
  cancel();
  io.restart();
  io.run();  // the cancelled handler
  return std::nullopt;
}

bool peer_went_away(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::error::connection_aborted;
}

void configure_socket(tcp::socket& socket) {
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  socket.set_option(asio::socket_base::keep_alive(true), ignored);
  // The keepalive timings have no portable Asio option: set them on the native socket.
  const int fd = socket.native_handle();
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &kKeepIdleS, sizeof(kKeepIdleS));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &kKeepIntervalS, sizeof(kKeepIntervalS));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &kKeepCount, sizeof(kKeepCount));
}

StatusOr<tcp::resolver::results_type> resolve(asio::io_context& io, const std::string& addr,
                                              int port, bool passive) {
  tcp::resolver resolver(io);
  error_code ec;
  auto flags = passive ? tcp::resolver::passive : tcp::resolver::flags();
  auto results = resolver.resolve(addr, std::to_string(port), flags, ec);
  if (ec) {
    return unavailable("control channel " + endpoint_name(addr, port) +
                       ": cannot resolve address: " + ec.message());
  }
  return results;
}

}  // namespace

// ---- ControlConnection ------------------------------------------------------------------------

StatusOr<std::unique_ptr<ControlConnection>> ControlConnection::connect(const std::string& addr,
                                                                        int port,
                                                                        ControlDeadline deadline) {
  const std::string endpoint = endpoint_name(addr, port);
  std::string error = "no usable address";
  while (true) {
    auto impl = std::make_unique<Impl>();
    ES_ASSIGN_OR_RETURN(tcp::resolver::results_type endpoints,
                        resolve(impl->io, addr, port, /*passive=*/false));
    std::optional<error_code> ec = run_until(
        impl->io, deadline,
        [&](auto handler) { asio::async_connect(impl->socket, endpoints, std::move(handler)); },
        [&] {
          error_code ignored;
          impl->socket.close(ignored);
        });
    if (ec && !*ec) {
      configure_socket(impl->socket);
      return std::unique_ptr<ControlConnection>(new ControlConnection(std::move(impl), endpoint));
    }
    error = ec ? ec->message() : "timed out";
    if (Clock::now() >= deadline) {
      return deadline_exceeded("control channel " + endpoint + ": cannot connect: " + error);
    }
    // Rank 0 may not listen yet.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

ControlConnection::ControlConnection(std::unique_ptr<Impl> impl, std::string peer)
    : impl_(std::move(impl)), peer_(std::move(peer)) {}

ControlConnection::~ControlConnection() = default;

Status ControlConnection::send(const ControlMessage& message, ControlDeadline deadline) {
  std::vector<char> frame;
  frame.reserve(kHeaderBytes + message.payload.size());
  put_le(frame, kControlMagic, 4);
  put_le(frame, kControlProtocolVersion, 2);
  put_le(frame, message.type, 2);
  put_le(frame, message.payload.size(), 8);
  frame.insert(frame.end(), message.payload.begin(), message.payload.end());
  tcp::socket& socket = impl_->socket;
  std::optional<error_code> ec = run_until(
      impl_->io, deadline,
      [&](auto handler) { asio::async_write(socket, asio::buffer(frame), std::move(handler)); },
      [&] {
        error_code ignored;
        socket.cancel(ignored);
      });
  if (!ec) return deadline_exceeded("control channel to " + peer_ + ": timed out sending");
  if (*ec) return unavailable("control channel to " + peer_ + ": send failed: " + ec->message());
  return Status::Ok();
}

namespace {

// Receives exactly `size` bytes before `deadline`.
Status receive_exactly(ControlConnection::Impl& impl, char* out, size_t size,
                       ControlDeadline deadline, const std::string& peer) {
  if (size == 0) return Status::Ok();
  std::optional<error_code> ec = run_until(
      impl.io, deadline,
      [&](auto handler) {
        asio::async_read(impl.socket, asio::buffer(out, size), std::move(handler));
      },
      [&] {
        error_code ignored;
        impl.socket.cancel(ignored);
      });
  if (!ec) {
    return deadline_exceeded("control channel to " + peer + ": no message before the deadline");
  }
  if (peer_went_away(*ec)) {
    return unavailable("control channel to " + peer + ": the peer closed the connection");
  }
  if (*ec) return unavailable("control channel to " + peer + ": " + ec->message());
  return Status::Ok();
}

}  // namespace

StatusOr<ControlMessage> ControlConnection::receive(ControlDeadline deadline) {
  char header[kHeaderBytes];
  ES_RETURN_IF_ERROR(receive_exactly(*impl_, header, kHeaderBytes, deadline, peer_));
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
  ES_RETURN_IF_ERROR(receive_exactly(*impl_, message.payload.data(), size, deadline, peer_));
  return message;
}

bool ControlConnection::has_input() const {
  // A read-readiness wait that must already be satisfied: poll() runs only what is ready.
  bool ready = false;
  impl_->io.restart();
  impl_->socket.async_wait(tcp::socket::wait_read, [&ready](const error_code& ec) { ready = !ec; });
  impl_->io.poll();
  if (!ready) {
    error_code ignored;
    impl_->socket.cancel(ignored);
    impl_->io.restart();
    impl_->io.run();
  }
  return ready;
}

// ---- ControlListener --------------------------------------------------------------------------

ControlListener::ControlListener(std::unique_ptr<Impl> impl, int port, std::string endpoint)
    : impl_(std::move(impl)), port_(port), endpoint_(std::move(endpoint)) {}

StatusOr<std::unique_ptr<ControlListener>> ControlListener::listen(const std::string& addr,
                                                                   int port) {
  auto impl = std::make_unique<Impl>();
  ES_ASSIGN_OR_RETURN(tcp::resolver::results_type endpoints,
                      resolve(impl->io, addr, port, /*passive=*/true));
  std::string last_error = "no usable address";
  bool listening = false;
  for (const auto& entry : endpoints) {
    error_code ec;
    tcp::acceptor& a = impl->acceptor;
    a.open(entry.endpoint().protocol(), ec);
    if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) a.bind(entry.endpoint(), ec);
    if (!ec) a.listen(128, ec);
    if (!ec) {
      listening = true;
      break;
    }
    last_error = ec.message();
    error_code ignored;
    a.close(ignored);
  }
  const std::string endpoint = endpoint_name(addr, port);
  if (!listening) {
    return unavailable("control channel " + endpoint + ": cannot listen: " + last_error);
  }
  const int bound_port = impl->acceptor.local_endpoint().port();
  return std::unique_ptr<ControlListener>(
      new ControlListener(std::move(impl), bound_port, endpoint_name(addr, bound_port)));
}

ControlListener::~ControlListener() = default;

StatusOr<std::unique_ptr<ControlConnection>> ControlListener::accept(ControlDeadline deadline) {
  while (true) {
    // The connection gets its own io_context; the acceptor's runs the accept.
    auto conn = std::make_unique<ControlConnection::Impl>();
    tcp::endpoint peer;
    std::optional<error_code> ec = run_until(
        impl_->io, deadline,
        [&](auto handler) { impl_->acceptor.async_accept(conn->socket, peer, std::move(handler)); },
        [&] {
          error_code ignored;
          impl_->acceptor.cancel(ignored);
        });
    if (!ec) {
      return deadline_exceeded("control channel " + endpoint_ +
                               ": no worker connected before the deadline");
    }
    if (*ec == asio::error::connection_aborted || *ec == asio::error::interrupted ||
        *ec == asio::error::try_again) {
      continue;
    }
    if (*ec)
      return unavailable("control channel " + endpoint_ + ": accept failed: " + ec->message());
    configure_socket(conn->socket);
    const std::string name = peer.address().to_string() + ":" + std::to_string(peer.port());
    return std::unique_ptr<ControlConnection>(new ControlConnection(std::move(conn), name));
  }
}

}  // namespace earnserve
