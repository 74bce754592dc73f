// Pins the public API of //async (coroutines, the gRPC call awaitable, asio)
// to the exact signatures other code relies on: if one changes, this file
// stops compiling.
#include <asio/cancellation_signal.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "async/asio.h"
#include "async/call.h"
#include "async/coro.h"
#include "context/version.h"
#include "gtest/gtest.h"
#include "proto/echo.grpc.pb.h"

namespace reqctx {
namespace {

// What version 0.1 promises (context/version.h, CHANGELOG.md): changing a
// signature pinned in this file means a new minor version and a CHANGELOG
// entry, and then this assertion too.
static_assert(REQCTX_VERSION_MAJOR == 0 && REQCTX_VERSION_MINOR == 1,
              "signatures pinned for reqctx 0.1");

// Awaitables.
static_assert(std::is_same_v<decltype(&Sleep),
                             SleepAwaiter (*)(const Context&, absl::Duration)>);
static_assert(std::is_same_v<decltype(static_cast<DoneAwaiter (*)(const Context&)>(&Done)),
                             DoneAwaiter (*)(const Context&)>);
static_assert(std::is_same_v<
              decltype(static_cast<DoneForAwaiter (*)(const Context&, absl::Duration)>(&Done)),
              DoneForAwaiter (*)(const Context&, absl::Duration)>);
static_assert(std::is_same_v<decltype(&SleepAwaiter::await_resume),
                             absl::Status (SleepAwaiter::*)() const>);
static_assert(std::is_same_v<decltype(&DoneAwaiter::await_resume),
                             absl::Status (DoneAwaiter::*)() const>);
static_assert(std::is_same_v<decltype(&DoneForAwaiter::await_resume),
                             bool (DoneForAwaiter::*)() const>);

// Task: move-only; Loop: not copyable.
static_assert(!std::is_copy_constructible_v<Task<int>>);
static_assert(std::is_nothrow_move_constructible_v<Task<int>>);
static_assert(std::is_same_v<decltype(&Task<int>::valid), bool (Task<int>::*)() const>);
static_assert(!std::is_copy_constructible_v<Loop>);
static_assert(std::is_same_v<decltype(&Loop::Spawn), void (Loop::*)(Task<void>)>);
static_assert(std::is_same_v<decltype(&Loop::Run), void (Loop::*)()>);
static_assert(std::is_same_v<decltype(&Loop::RunFor), bool (Loop::*)(absl::Duration)>);
static_assert(std::is_same_v<decltype(&RunSync<int>), int (*)(Task<int>)>);
static_assert(std::is_same_v<decltype(&WhenAll<int>),
                             Task<std::vector<int>> (*)(std::vector<Task<int>>)>);

// Call: a unary method of a generated stub's async interface.
using echo::v1::Echo;
using EchoCall = decltype(Call(std::declval<Context>(),
                               std::declval<std::unique_ptr<Echo::Stub>&>(),
                               &Echo::Stub::async::Echo,
                               std::declval<echo::v1::EchoRequest>()));
static_assert(std::is_same_v<EchoCall, Task<absl::StatusOr<echo::v1::EchoResponse>>>);

// asio.
static_assert(std::is_constructible_v<AsioCancellation, const Context&,
                                      asio::io_context::executor_type>);
static_assert(!std::is_copy_constructible_v<AsioCancellation>);
static_assert(std::is_same_v<decltype(&AsioCancellation::slot),
                             asio::cancellation_slot (AsioCancellation::*)()>);
static_assert(std::is_same_v<decltype(&WithCancellationSlot),
                             std::pair<Context, CancelFunc> (*)(
                                 const Context&, asio::cancellation_slot,
                                 asio::cancellation_type)>);
static_assert(std::is_same_v<decltype(&ContextFromCancellationState),
                             asio::awaitable<std::pair<Context, CancelFunc>> (*)(
                                 Context, asio::cancellation_type)>);

TEST(AsyncApiSignatureTest, Compiles) {
  EXPECT_TRUE(RunSync([]() -> Task<bool> { co_return true; }()));
}

}  // namespace
}  // namespace reqctx
