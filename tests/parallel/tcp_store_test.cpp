#include "model/parallel/tcp_store.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "tests/parallel/test_ports.h"

namespace earnserve {
namespace {

using Clock = std::chrono::steady_clock;

Clock::time_point in_ms(int ms) { return Clock::now() + std::chrono::milliseconds(ms); }

TEST(TcpStoreTest, SetThenGetReturnsTheValueToEveryClient) {
  auto server = TcpStoreServer::start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  const int port = (*server)->port();
  auto a = TcpStoreClient::connect("127.0.0.1", port, in_ms(5000));
  auto b = TcpStoreClient::connect("127.0.0.1", port, in_ms(5000));
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<char> value = {'x', '\0', 'y'};
  std::vector<char> big(100000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  ASSERT_TRUE((*a)->set("k", value, in_ms(5000)).ok());
  ASSERT_TRUE((*a)->set("big", big, in_ms(5000)).ok());
  ASSERT_TRUE((*a)->set("empty", {}, in_ms(5000)).ok());
  auto got = (*b)->get("k", in_ms(5000));
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(*got, value);
  auto got_big = (*b)->get("big", in_ms(5000));
  ASSERT_TRUE(got_big.ok());
  EXPECT_EQ(*got_big, big);
  auto got_empty = (*b)->get("empty", in_ms(5000));
  ASSERT_TRUE(got_empty.ok());
  EXPECT_TRUE(got_empty->empty());
  EXPECT_TRUE((*b)->wait({"k", "big", "empty"}, in_ms(5000)).ok());
}

TEST(TcpStoreTest, MissingKeyIsNotFoundAndWaitTimesOut) {
  auto server = TcpStoreServer::start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok());
  auto client = TcpStoreClient::connect("127.0.0.1", (*server)->port(), in_ms(5000));
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*client)->get("nope", in_ms(5000)).status().code(), StatusCode::kNotFound);
  Status s = (*client)->wait({"nope"}, in_ms(200));
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.to_string();
  EXPECT_NE(s.message().find("'nope'"), std::string::npos) << s.message();
}

// A deadline that passes while a get is in flight (what a loaded machine does to a short wait)
// is still the wait's timeout and names the key, not a bare "timed out waiting for a reply".
TEST(TcpStoreTest, WaitWhoseDeadlinePassesDuringAGetNamesTheKey) {
  auto server = TcpStoreServer::start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok());
  auto client = TcpStoreClient::connect("127.0.0.1", (*server)->port(), in_ms(5000));
  ASSERT_TRUE(client.ok());
  Status s = (*client)->wait({"nope"}, in_ms(0));
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.to_string();
  EXPECT_NE(s.message().find("'nope'"), std::string::npos) << s.message();
}

TEST(TcpStoreTest, WaitReturnsWhenAnotherClientSetsTheKey) {
  auto server = TcpStoreServer::start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok());
  const int port = (*server)->port();
  std::thread setter([port] {
    auto c = TcpStoreClient::connect("127.0.0.1", port, in_ms(5000));
    ES_CHECK(c.ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ES_CHECK_OK((*c)->set("late", {'1'}, in_ms(5000)));
  });
  auto client = TcpStoreClient::connect("127.0.0.1", port, in_ms(5000));
  ASSERT_TRUE(client.ok());
  EXPECT_TRUE((*client)->wait({"late"}, in_ms(10000)).ok());
  setter.join();
}

TEST(TcpStoreTest, ConnectWithoutServerGivesDeadlineExceeded) {
  const int port = free_loopback_port();
  auto client = TcpStoreClient::connect("127.0.0.1", port, in_ms(300));
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kDeadlineExceeded) << client.status().to_string();
  EXPECT_NE(client.status().message().find("127.0.0.1:" + std::to_string(port)), std::string::npos);
}

TEST(TcpStoreTest, ClientConnectsToAServerThatStartsLater) {
  const int port = free_loopback_port();
  std::unique_ptr<TcpStoreServer> server;
  std::thread starter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto s = TcpStoreServer::start("127.0.0.1", port);
    ES_CHECK(s.ok()) << s.status().to_string();
    server = std::move(s).value();
  });
  auto client = TcpStoreClient::connect("127.0.0.1", port, in_ms(10000));
  starter.join();
  ASSERT_TRUE(client.ok()) << client.status().to_string();
  EXPECT_TRUE((*client)->set("a", {'b'}, in_ms(5000)).ok());
}

TEST(TcpStoreTest, GarbageFromOneClientDoesNotStopTheServer) {
  auto server = TcpStoreServer::start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok());
  const int port = (*server)->port();
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const char junk[] = "\x07\xff\xff\xff\xffGET / HTTP/1.1\r\n\r\n";
  ASSERT_GT(::send(fd, junk, sizeof(junk), MSG_NOSIGNAL), 0);
  char byte;
  EXPECT_EQ(::recv(fd, &byte, 1, 0), 0);  // the server hangs up on it
  ::close(fd);
  auto client = TcpStoreClient::connect("127.0.0.1", port, in_ms(5000));
  ASSERT_TRUE(client.ok());
  EXPECT_TRUE((*client)->set("still", {'u', 'p'}, in_ms(5000)).ok());
  auto got = (*client)->get("still", in_ms(5000));
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(std::string(got->begin(), got->end()), "up");
}

TEST(TcpStoreTest, PortInUseIsAnError) {
  auto first = TcpStoreServer::start("127.0.0.1", 0);
  ASSERT_TRUE(first.ok());
  auto second = TcpStoreServer::start("127.0.0.1", (*first)->port());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("cannot listen"), std::string::npos);
}

TEST(TcpStoreTest, BadRendezvousOptionsNameTheField) {
  RendezvousOptions options;
  options.world_size = 2;
  options.rank = 2;
  Status s = validate_rendezvous_options(options);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("rank 2"), std::string::npos) << s.message();
  options.rank = 0;
  options.master_port = 70000;
  EXPECT_NE(validate_rendezvous_options(options).message().find("master_port"), std::string::npos);
  options.master_port = 1234;
  options.timeout = std::chrono::milliseconds(0);
  EXPECT_NE(validate_rendezvous_options(options).message().find("timeout"), std::string::npos);
  options.timeout = std::chrono::milliseconds(10);
  options.world_size = 0;
  EXPECT_NE(validate_rendezvous_options(options).message().find("world_size"), std::string::npos);
  EXPECT_FALSE(TcpStore::open(options).ok());
}

}  // namespace
}  // namespace earnserve
