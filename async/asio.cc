// The asio -> Context direction (see asio.h).
#include "async/asio.h"

#include <utility>

namespace reqctx {

std::pair<Context, CancelFunc> WithCancellationSlot(
    const Context& parent, asio::cancellation_slot slot,
    asio::cancellation_type accept) {
  auto [ctx, cancel] = WithCancel(parent);
  if (slot.is_connected()) {
    slot.emplace<internal::CancelContextFilter>(
        internal::CancelContextFilter{cancel, accept});
  }
  return {std::move(ctx), std::move(cancel)};
}

asio::awaitable<std::pair<Context, CancelFunc>> ContextFromCancellationState(
    Context parent, asio::cancellation_type accept) {
  auto [ctx, cancel] = WithCancel(parent);
  // Named, not built inside the co_await expression: g++ 12 destroys
  // brace-initialized and lambda temporaries of a co_await expression twice.
  internal::CancelContextFilter in_filter{cancel, accept};
  auto out_filter = [accept](asio::cancellation_type type) {
    return type & accept;
  };
  co_await asio::this_coro::reset_cancellation_state(std::move(in_filter),
                                                     std::move(out_filter));
  co_return std::pair<Context, CancelFunc>(std::move(ctx), std::move(cancel));
}

}  // namespace reqctx
