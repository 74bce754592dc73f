// docs/async.md "asio": a Context cancels asio operations, and an
// asio cancellation cancels a Context.
#include <asio/bind_cancellation_slot.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cstdio>
#include <optional>

#include "async/asio.h"  // //async:asio
#include "context/context.h"

asio::awaitable<void> Handler(std::optional<reqctx::Context>* seen) {
  // A Context canceled when this coroutine's asio cancellation is triggered.
  auto [ctx, cancel] = co_await reqctx::ContextFromCancellationState(reqctx::Background());
  *seen = ctx;
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer forever(executor, std::chrono::hours(1));
  co_await forever.async_wait(asio::use_awaitable);
}

int main() {
  asio::io_context io;
  auto [ctx, cancel] =
      reqctx::WithTimeout(reqctx::Background(), absl::Milliseconds(50));

  // Context -> asio: the timer wait ends with operation_aborted at ctx's deadline.
  asio::steady_timer timer(io, std::chrono::hours(1));
  reqctx::AsioCancellation on_done(ctx, io.get_executor());
  timer.async_wait(on_done.Bind([](std::error_code ec) {
    std::printf("timer: %s\n", ec.message().c_str());
  }));

  // asio -> Context: the same deadline, through co_spawn's cancellation slot.
  // Had the deadline passed before the coroutine first ran, asio would end it
  // with operation_aborted without running its body (`seen` stays empty).
  std::optional<reqctx::Context> seen;
  bool aborted = false;
  reqctx::AsioCancellation on_done2(ctx, io.get_executor());
  asio::co_spawn(io, Handler(&seen),
                 on_done2.Bind([&](std::exception_ptr e) { aborted = e != nullptr; }));

  io.run_for(std::chrono::seconds(10));
  std::printf("handler's context: %s\n",
              seen ? seen->Err().ToString().c_str() : "never started (canceled first)");
  return (seen ? seen->Err().code() == absl::StatusCode::kCancelled : aborted) ? 0 : 1;
}
