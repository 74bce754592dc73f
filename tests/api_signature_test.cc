// Pins the public API of //context to the exact signatures other code relies
// on: if one changes, this file stops compiling.
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "context/version.h"
#include "gtest/gtest.h"

namespace reqctx {
namespace {

// What version 0.1 promises (context/version.h, CHANGELOG.md): changing a
// signature pinned in this file means a new minor version and a CHANGELOG
// entry, and then this assertion too.
static_assert(REQCTX_VERSION_MAJOR == 0 && REQCTX_VERSION_MINOR == 1,
              "signatures pinned for reqctx 0.1");

inline constexpr Key<int> kConstexprKey("constexpr");  // constexpr ctor.
static_assert(!std::is_convertible_v<std::string_view, Key<int>>,
              "Key's constructor is explicit");

// Free functions.
static_assert(std::is_same_v<decltype(&Background), Context (*)()>);
static_assert(std::is_same_v<decltype(&TODO), Context (*)()>);
static_assert(std::is_same_v<decltype(&WithCancel),
                             std::pair<Context, CancelFunc> (*)(const Context&)>);
static_assert(
    std::is_same_v<decltype(&WithCancelCause),
                   std::pair<Context, CancelCauseFunc> (*)(const Context&)>);
static_assert(std::is_same_v<decltype(&WithDeadline),
                             std::pair<Context, CancelFunc> (*)(const Context&,
                                                                absl::Time)>);
static_assert(
    std::is_same_v<decltype(&WithTimeout),
                   std::pair<Context, CancelFunc> (*)(const Context&,
                                                      absl::Duration)>);
static_assert(std::is_same_v<decltype(&WithDeadlineCause),
                             std::pair<Context, CancelFunc> (*)(
                                 const Context&, absl::Time, absl::Status)>);
static_assert(std::is_same_v<decltype(&WithTimeoutCause),
                             std::pair<Context, CancelFunc> (*)(
                                 const Context&, absl::Duration, absl::Status)>);
static_assert(std::is_same_v<decltype(&WithValue<int>),
                             Context (*)(const Context&, const Key<int>&, int)>);
static_assert(std::is_same_v<decltype(&WithoutCancel),
                             Context (*)(const Context&)>);
static_assert(std::is_same_v<decltype(&Cause), absl::Status (*)(const Context&)>);
static_assert(std::is_same_v<decltype(&AfterFunc),
                             AfterFuncHandle (*)(const Context&,
                                                 std::function<void()>)>);
static_assert(std::is_same_v<decltype(&SleepFor),
                             absl::Status (*)(const Context&, absl::Duration)>);
static_assert(std::is_same_v<decltype(&Current), Context (*)()>);

// Context.
static_assert(std::is_same_v<decltype(&Context::Deadline),
                             std::optional<absl::Time> (Context::*)() const>);
static_assert(std::is_same_v<decltype(&Context::TimeLeft),
                             std::optional<absl::Duration> (Context::*)() const>);
static_assert(std::is_same_v<decltype(&Context::Done),
                             DoneRef (Context::*)() const>);
static_assert(std::is_same_v<decltype(&Context::IsDone),
                             bool (Context::*)() const>);
// Err() returns a reference to a status that outlives the context: reading
// it writes nothing. `absl::Status s = ctx.Err();` still copies.
static_assert(std::is_same_v<decltype(&Context::Err),
                             const absl::Status& (Context::*)() const>);
static_assert(std::is_same_v<decltype(&Context::Value<int>),
                             const int* (Context::*)(const Key<int>&) const>);
static_assert(std::is_same_v<decltype(&Context::DebugString),
                             std::string (Context::*)() const>);
static_assert(std::is_copy_constructible_v<Context>);
static_assert(std::is_default_constructible_v<Context>);

// DoneRef: usable only as the temporary Done() returns, or converted to an
// owning DoneSignal.
static_assert(std::is_same_v<decltype(&DoneRef::IsDone),
                             bool (DoneRef::*)() const&&>);
static_assert(std::is_same_v<decltype(&DoneRef::CanBeDone),
                             bool (DoneRef::*)() const&&>);
static_assert(std::is_same_v<decltype(&DoneRef::Wait),
                             void (DoneRef::*)() const&&>);
static_assert(std::is_same_v<decltype(&DoneRef::WaitFor),
                             bool (DoneRef::*)(absl::Duration) const&&>);
static_assert(std::is_same_v<decltype(&DoneRef::WaitUntil),
                             bool (DoneRef::*)(absl::Time) const&&>);
static_assert(std::is_convertible_v<DoneRef, DoneSignal>);
static_assert(!std::is_copy_constructible_v<DoneRef>);
// Existing code keeps compiling: `DoneSignal d = ctx.Done();`,
// `absl::Status s = ctx.Err();`, `ctx.Done().IsDone()`.
static_assert(std::is_same_v<decltype(std::declval<Context>().Done().IsDone()),
                             bool>);
static_assert(std::is_constructible_v<absl::Status,
                                      decltype(std::declval<Context>().Err())>);

// DoneSignal.
static_assert(std::is_same_v<decltype(&DoneSignal::IsDone),
                             bool (DoneSignal::*)() const>);
static_assert(std::is_same_v<decltype(&DoneSignal::CanBeDone),
                             bool (DoneSignal::*)() const>);
static_assert(std::is_same_v<decltype(&DoneSignal::Wait),
                             void (DoneSignal::*)() const>);
static_assert(std::is_same_v<decltype(&DoneSignal::WaitFor),
                             bool (DoneSignal::*)(absl::Duration) const>);
static_assert(std::is_same_v<decltype(&DoneSignal::WaitUntil),
                             bool (DoneSignal::*)(absl::Time) const>);

// Cancel functions: copyable, callable as declared.
static_assert(std::is_copy_constructible_v<CancelFunc>);
static_assert(std::is_copy_constructible_v<CancelCauseFunc>);
static_assert(std::is_same_v<decltype(&CancelFunc::operator()),
                             void (CancelFunc::*)() const>);
static_assert(std::is_same_v<decltype(&CancelCauseFunc::operator()),
                             void (CancelCauseFunc::*)(absl::Status) const>);

// AfterFuncHandle: move-only.
static_assert(!std::is_copy_constructible_v<AfterFuncHandle>);
static_assert(std::is_move_constructible_v<AfterFuncHandle>);
static_assert(std::is_same_v<decltype(&AfterFuncHandle::Stop),
                             bool (AfterFuncHandle::*)()>);

// ScopedContext and Group.
static_assert(std::is_constructible_v<ScopedContext, Context>);
static_assert(!std::is_convertible_v<Context, ScopedContext>);
static_assert(!std::is_convertible_v<const Context&, Group>);
static_assert(std::is_same_v<decltype(&Group::context),
                             const Context& (Group::*)() const>);
static_assert(std::is_same_v<decltype(&Group::SetLimit), void (Group::*)(int)>);
static_assert(
    std::is_same_v<decltype(&Group::Go),
                   void (Group::*)(
                       std::function<absl::Status(const Context&)>)>);
static_assert(std::is_same_v<decltype(&Group::Wait), absl::Status (Group::*)()>);

TEST(ApiSignatureTest, Compiles) {
  EXPECT_EQ(Background().Value(kConstexprKey), nullptr);
}

}  // namespace
}  // namespace reqctx
