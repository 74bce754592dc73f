// //async:asio: a Context bound to asio's per-operation cancellation, both
// ways. Sockets are on 127.0.0.1; every wait is bounded (io.run_for).
#include "async/asio.h"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

constexpr auto kBound = std::chrono::seconds(20);  // No wait is longer.
constexpr auto kForever = std::chrono::hours(1);   // Only a cancel ends it.

TEST(AsioCancellation, TimerIsCanceledWhenTheContextIsDone) {
  asio::io_context io;
  absl::Time start = absl::Now();
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(30));
  asio::steady_timer timer(io, kForever);
  AsioCancellation binding(ctx, io.get_executor());
  std::optional<std::error_code> result;
  timer.async_wait(binding.Bind([&](std::error_code ec) { result = ec; }));
  io.run_for(kBound);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(*result, asio::error::operation_aborted);
  // Not before the deadline (2 ms for the clocks' granularity).
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(28));
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
}

TEST(AsioCancellation, CancelFromAnotherThreadWhileTheIoThreadWaits) {
  asio::io_context io;
  auto [ctx, cancel] = WithCancel(Background());
  asio::steady_timer timer(io, kForever);
  AsioCancellation binding(ctx, io.get_executor());
  std::optional<std::error_code> result;
  timer.async_wait(binding.Bind([&](std::error_code ec) { result = ec; }));
  // The canceler starts once the io thread runs: a posted handler starts it.
  std::thread canceler;
  asio::post(io, [&canceler, c = cancel] {
    canceler = std::thread([c] { c(); });
  });
  io.run_for(kBound);
  canceler.join();
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(*result, asio::error::operation_aborted);
}

TEST(AsioCancellation, ALiveContextLetsTheOperationFinishNormally) {
  asio::io_context io;
  auto [ctx, cancel] = WithCancel(Background());
  asio::steady_timer timer(io, std::chrono::milliseconds(5));
  std::optional<std::error_code> result;
  {
    AsioCancellation binding(ctx, io.get_executor());
    timer.async_wait(binding.Bind([&](std::error_code ec) { result = ec; }));
    io.run_for(kBound);
  }
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(*result);  // Success.
  cancel();  // The binding is gone: nothing is posted, nothing runs.
  io.restart();
  EXPECT_EQ(io.poll(), 0u);
}

// A socket read on loopback that never completes (the peer never writes)
// ends when the Context's deadline passes.
TEST(AsioCancellation, SocketReadThatNeverCompletesEndsWithTheContext) {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(
      io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  asio::ip::tcp::socket client(io);
  client.connect(acceptor.local_endpoint());
  asio::ip::tcp::socket server = acceptor.accept();

  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(30));
  AsioCancellation binding(ctx, io.get_executor());
  char buf[16];
  std::optional<std::error_code> result;
  server.async_read_some(asio::buffer(buf), binding.Bind(
      [&](std::error_code ec, std::size_t) { result = ec; }));
  io.run_for(kBound);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(*result, asio::error::operation_aborted);
  EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kDeadlineExceeded);
  // The sockets still work after the canceled read.
  asio::write(client, asio::buffer("x", 1));
  EXPECT_EQ(server.read_some(asio::buffer(buf)), 1u);
}

asio::awaitable<void> WaitForever(asio::steady_timer* timer) {
  co_await timer->async_wait(asio::use_awaitable);
}

TEST(AsioCancellation, CoSpawnedAwaitableIsCanceled) {
  asio::io_context io;
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(20));
  asio::steady_timer timer(io, kForever);
  AsioCancellation binding(ctx, io.get_executor());
  std::optional<std::exception_ptr> result;
  asio::co_spawn(io, WaitForever(&timer),
                 binding.Bind([&](std::exception_ptr e) { result = e; }));
  io.run_for(kBound);
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(*result);
  try {
    std::rethrow_exception(*result);
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), asio::error::operation_aborted);
  }
}

TEST(AsioCancellation, AlreadyDoneContextCancelsTheOperationStartedAtOnce) {
  asio::io_context io;
  auto [ctx, cancel] = WithCancel(Background());
  cancel();
  asio::steady_timer timer(io, kForever);
  AsioCancellation binding(ctx, io.get_executor());
  std::optional<std::error_code> result;
  timer.async_wait(binding.Bind([&](std::error_code ec) { result = ec; }));
  io.run_for(kBound);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(*result, asio::error::operation_aborted);
}

// asio -> Context: the signal bound to co_spawn's handler cancels the
// Context derived inside the coroutine, and the coroutine's pending
// operation still ends with operation_aborted.
asio::awaitable<void> DeriveAndWait(asio::steady_timer* timer, Context* out,
                                    asio::cancellation_signal* signal) {
  auto [ctx, cancel] = co_await ContextFromCancellationState(Background());
  *out = ctx;
  // Emitted once this coroutine is suspended in the wait below (the io
  // context is single-threaded: the posted handler runs after it).
  auto executor = co_await asio::this_coro::executor;
  asio::post(executor,
             [signal] { signal->emit(asio::cancellation_type::terminal); });
  co_await timer->async_wait(asio::use_awaitable);
}

TEST(ContextFromCancellationState, AsioCancellationCancelsTheContext) {
  asio::io_context io;
  asio::steady_timer timer(io, kForever);
  asio::cancellation_signal signal;
  Context derived;
  std::optional<std::exception_ptr> result;
  asio::co_spawn(io, DeriveAndWait(&timer, &derived, &signal),
                 asio::bind_cancellation_slot(
                     signal.slot(), [&](std::exception_ptr e) { result = e; }));
  io.run_for(kBound);
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(*result);  // The wait was aborted.
  EXPECT_EQ(derived.Err().code(), absl::StatusCode::kCancelled);
}

TEST(WithCancellationSlot, EmitCancelsOnlyForAcceptedTypes) {
  asio::cancellation_signal signal;
  auto [ctx, cancel] = WithCancellationSlot(Background(), signal.slot(),
                                            asio::cancellation_type::terminal);
  signal.emit(asio::cancellation_type::partial);  // Not accepted.
  EXPECT_TRUE(ctx.Err().ok());
  signal.emit(asio::cancellation_type::terminal);
  EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kCancelled);

  // A parent's cancel still reaches the child; an unconnected slot is fine.
  auto [parent, cancel_parent] = WithCancel(Background());
  auto [child, cancel_child] =
      WithCancellationSlot(parent, asio::cancellation_slot());
  cancel_parent();
  EXPECT_EQ(child.Err().code(), absl::StatusCode::kCancelled);
}

// Many bindings canceled from another thread while the io thread runs:
// every operation ends exactly once, aborted.
TEST(AsioCancellation, ManyOperationsCanceledFromAnotherThread) {
  constexpr int kOps = reqctx::testing::PlainOrSanitized(500, 50);
  asio::io_context io;
  auto [ctx, cancel] = WithCancel(Background());
  std::vector<std::unique_ptr<asio::steady_timer>> timers;
  std::vector<std::unique_ptr<AsioCancellation>> bindings;
  std::atomic<int> aborted{0}, other{0};
  for (int i = 0; i < kOps; ++i) {
    timers.push_back(std::make_unique<asio::steady_timer>(io, kForever));
    bindings.push_back(std::make_unique<AsioCancellation>(ctx, io.get_executor()));
    timers.back()->async_wait(bindings.back()->Bind([&](std::error_code ec) {
      (ec == asio::error::operation_aborted ? aborted : other).fetch_add(1);
    }));
  }
  std::thread canceler;
  asio::post(io, [&canceler, c = cancel] {
    canceler = std::thread([c] { c(); });
  });
  io.run_for(kBound);
  canceler.join();
  EXPECT_EQ(aborted.load(), kOps);
  EXPECT_EQ(other.load(), 0);
}

}  // namespace
}  // namespace reqctx
