// ControlConnection / ControlListener: messages arrive whole and in order, every wait is bounded by
// its deadline, a closed peer is UNAVAILABLE, and frames from another protocol version or from
// something that is not earnserve are DATA_LOSS naming the problem.
#include "model/parallel/control_channel.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "tests/parallel/test_ports.h"

namespace earnserve {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

ControlDeadline in(milliseconds ms) { return steady_clock::now() + ms; }

struct Pair {
  std::unique_ptr<ControlListener> listener;
  std::unique_ptr<ControlConnection> client;
  std::unique_ptr<ControlConnection> server;
};

Pair connected_pair() {
  Pair p;
  auto listener = ControlListener::listen("127.0.0.1", 0);
  EXPECT_TRUE(listener.ok()) << listener.status().to_string();
  p.listener = std::move(listener).value();
  auto client = ControlConnection::connect("127.0.0.1", p.listener->port(), in(milliseconds(5000)));
  EXPECT_TRUE(client.ok()) << client.status().to_string();
  p.client = std::move(client).value();
  auto server = p.listener->accept(in(milliseconds(5000)));
  EXPECT_TRUE(server.ok()) << server.status().to_string();
  p.server = std::move(server).value();
  return p;
}

// A raw socket connected to `port`, for writing frames by hand.
int raw_connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

std::vector<char> header(uint32_t magic, uint16_t version, uint16_t type, uint64_t size) {
  std::vector<char> h;
  for (int i = 0; i < 4; ++i) h.push_back(static_cast<char>(magic >> (8 * i)));
  for (int i = 0; i < 2; ++i) h.push_back(static_cast<char>(version >> (8 * i)));
  for (int i = 0; i < 2; ++i) h.push_back(static_cast<char>(type >> (8 * i)));
  for (int i = 0; i < 8; ++i) h.push_back(static_cast<char>(size >> (8 * i)));
  return h;
}

TEST(ControlChannelTest, DeliversMessagesWholeAndInOrderBothWays) {
  Pair p = connected_pair();
  std::vector<char> big(3 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  // A payload larger than the socket buffers: the reader must run while the writer sends.
  std::thread writer([&] {
    ASSERT_TRUE(p.client->send({7, big}, in(milliseconds(10000))).ok());
    ASSERT_TRUE(p.client->send({8, {}}, in(milliseconds(10000))).ok());
  });
  auto first = p.server->receive(in(milliseconds(10000)));
  auto second = p.server->receive(in(milliseconds(10000)));
  writer.join();
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  ASSERT_TRUE(second.ok()) << second.status().to_string();
  EXPECT_EQ(first->type, 7);
  EXPECT_EQ(first->payload, big);
  EXPECT_EQ(second->type, 8);
  EXPECT_TRUE(second->payload.empty());

  ASSERT_TRUE(p.server->send({3, {'o', 'k'}}, in(milliseconds(1000))).ok());
  auto reply = p.client->receive(in(milliseconds(1000)));
  ASSERT_TRUE(reply.ok()) << reply.status().to_string();
  EXPECT_EQ(reply->type, 3);
  EXPECT_EQ(std::string(reply->payload.begin(), reply->payload.end()), "ok");
}

TEST(ControlChannelTest, ReceiveGivesDeadlineExceededWhenNothingArrives) {
  Pair p = connected_pair();
  EXPECT_FALSE(p.server->has_input());
  const auto start = steady_clock::now();
  auto message = p.server->receive(in(milliseconds(200)));
  EXPECT_EQ(message.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_GE(steady_clock::now() - start, milliseconds(150));
}

TEST(ControlChannelTest, ClosedPeerIsUnavailableAndShowsAsInput) {
  Pair p = connected_pair();
  p.client.reset();
  EXPECT_TRUE(p.server->has_input());
  auto message = p.server->receive(no_control_deadline());
  EXPECT_EQ(message.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(message.status().message().find("closed the connection"), std::string::npos)
      << message.status().message();
}

TEST(ControlChannelTest, RejectsAnotherProtocolVersionNamingBoth) {
  auto listener = ControlListener::listen("127.0.0.1", 0);
  ASSERT_TRUE(listener.ok());
  int fd = raw_connect((*listener)->port());
  auto server = (*listener)->accept(in(milliseconds(5000)));
  ASSERT_TRUE(server.ok());
  std::vector<char> frame = header(kControlMagic, kControlProtocolVersion + 1, 1, 0);
  ASSERT_EQ(::write(fd, frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  auto message = (*server)->receive(in(milliseconds(5000)));
  EXPECT_EQ(message.status().code(), StatusCode::kDataLoss);
  const std::string& text = message.status().message();
  EXPECT_NE(text.find("version " + std::to_string(kControlProtocolVersion + 1)), std::string::npos)
      << text;
  EXPECT_NE(text.find("same earnserve build"), std::string::npos) << text;
  ::close(fd);
}

TEST(ControlChannelTest, RejectsForeignBytesAndOversizedFrames) {
  auto listener = ControlListener::listen("127.0.0.1", 0);
  ASSERT_TRUE(listener.ok());
  for (const auto& [frame, expected] : std::vector<std::pair<std::vector<char>, std::string>>{
           {header(0x20544547, kControlProtocolVersion, 1, 0), "not an earnserve control message"},
           {header(kControlMagic, kControlProtocolVersion, 1, kMaxControlPayloadBytes + 1),
            "exceeds the limit"}}) {
    int fd = raw_connect((*listener)->port());
    auto server = (*listener)->accept(in(milliseconds(5000)));
    ASSERT_TRUE(server.ok());
    ASSERT_EQ(::write(fd, frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
    auto message = (*server)->receive(in(milliseconds(5000)));
    EXPECT_EQ(message.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(message.status().message().find(expected), std::string::npos)
        << message.status().message();
    ::close(fd);
  }
}

TEST(ControlChannelTest, ConnectRetriesUntilSomebodyListensAndGivesUpAtTheDeadline) {
  const int port = free_loopback_port();
  auto nobody = ControlConnection::connect("127.0.0.1", port, in(milliseconds(300)));
  EXPECT_EQ(nobody.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(nobody.status().message().find(std::to_string(port)), std::string::npos);

  std::unique_ptr<ControlListener> late;
  std::thread listen_later([&] {
    std::this_thread::sleep_for(milliseconds(200));
    auto listener = ControlListener::listen("127.0.0.1", port);
    ASSERT_TRUE(listener.ok()) << listener.status().to_string();
    late = std::move(listener).value();
  });
  auto conn = ControlConnection::connect("127.0.0.1", port, in(milliseconds(5000)));
  listen_later.join();
  EXPECT_TRUE(conn.ok()) << conn.status().to_string();
}

TEST(ControlChannelTest, AcceptGivesDeadlineExceededWithoutWorkers) {
  auto listener = ControlListener::listen("127.0.0.1", 0);
  ASSERT_TRUE(listener.ok());
  auto conn = (*listener)->accept(in(milliseconds(100)));
  EXPECT_EQ(conn.status().code(), StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace earnserve
