// ControlChannel: the TCP connections over which rank 0 (the engine) drives its tensor-parallel
// worker ranks: one connection per worker, carrying versioned, length-prefixed binary messages.
// What the messages mean is the caller's business (scheduler/parallel/tp_messages.h); this file
// only frames them, bounds every send and receive by a deadline, and tells a closed peer apart.
//
// Frame, integers little-endian:
//   u32 magic 'ESCC' (0x43435345), u16 protocol version, u16 message type, u64 payload size,
//   payload.
// A frame with another magic, another version or a payload over kMaxControlPayloadBytes is an
// error naming the peer and what was wrong (e.g. two different earnserve builds).
//
// Built on Boost.Asio (header-only, Debian libboost-dev): name resolution, connect, accept, reads
// and writes are Asio operations, and every deadline is the same mechanism: the operation is
// started asynchronously on the connection's own io_context, which runs until the operation
// completes or the deadline passes (io_context::run_until); on expiry the operation is cancelled.
// One portable library for sockets, timers and cancellation instead of hand-written poll() loops.
// The traffic is still one request stream per worker driven by one thread, so each call blocks
// its caller until done. Connections have TCP keepalive on, so a peer whose host vanishes is
// noticed even while idle.
//
// After a failed send or receive the connection is out of step and must be dropped.
//
// Ownership: each object owns its socket. Thread-compatible: one thread uses a connection at a
// time.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace earnserve {

inline constexpr uint32_t kControlMagic = 0x43435345;  // "ESCC"
inline constexpr uint16_t kControlProtocolVersion = 1;
inline constexpr uint64_t kMaxControlPayloadBytes = uint64_t{1} << 30;

struct ControlMessage {
  uint16_t type = 0;
  std::vector<char> payload;
};

using ControlDeadline = std::chrono::steady_clock::time_point;

// No deadline: wait until a message arrives or the peer goes away.
inline ControlDeadline no_control_deadline() { return ControlDeadline::max(); }

class ControlConnection {
 public:
  // Connects to addr:port, retrying while nobody listens yet, until `deadline`.
  static StatusOr<std::unique_ptr<ControlConnection>> connect(const std::string& addr, int port,
                                                              ControlDeadline deadline);
  ~ControlConnection();
  ControlConnection(const ControlConnection&) = delete;
  ControlConnection& operator=(const ControlConnection&) = delete;

  // UNAVAILABLE when the peer is gone, DEADLINE_EXCEEDED when it does not take the bytes in time.
  Status send(const ControlMessage& message, ControlDeadline deadline);
  // The next message. UNAVAILABLE when the peer closed the connection, DEADLINE_EXCEEDED, or
  // DATA_LOSS for a frame that is not ours (magic, version, size).
  StatusOr<ControlMessage> receive(ControlDeadline deadline);
  // True when receive() would not block: a message (or part of one), or the peer's close.
  bool has_input() const;

  const std::string& peer() const { return peer_; }

  struct Impl;  // the Asio io_context and socket (control_channel.cpp)

 private:
  friend class ControlListener;
  // Takes ownership of a connected socket; `peer` names it in messages.
  ControlConnection(std::unique_ptr<Impl> impl, std::string peer);

  // Constant after construction
  std::unique_ptr<Impl> impl_;
  std::string peer_;
};

class ControlListener {
 public:
  // Listens on addr:port (port 0 picks a free one, see port()).
  static StatusOr<std::unique_ptr<ControlListener>> listen(const std::string& addr, int port);
  ~ControlListener();
  ControlListener(const ControlListener&) = delete;
  ControlListener& operator=(const ControlListener&) = delete;

  int port() const { return port_; }
  // The next incoming connection, or DEADLINE_EXCEEDED.
  StatusOr<std::unique_ptr<ControlConnection>> accept(ControlDeadline deadline);

  struct Impl;  // the Asio io_context and acceptor (control_channel.cpp)

 private:
  ControlListener(std::unique_ptr<Impl> impl, int port, std::string endpoint);

  // Constant after construction
  std::unique_ptr<Impl> impl_;
  int port_;
  std::string endpoint_;
};

}  // namespace earnserve
