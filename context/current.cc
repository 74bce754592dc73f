#include "context/current.h"

#include <utility>

namespace reqctx {
namespace {
thread_local Context t_current;  // Background until a ScopedContext is live.
}  // namespace

Context Current() { return t_current; }

ScopedContext::ScopedContext(Context ctx)
    : previous_(std::exchange(t_current, std::move(ctx))) {}

ScopedContext::~ScopedContext() { t_current = std::move(previous_); }

}  // namespace reqctx
