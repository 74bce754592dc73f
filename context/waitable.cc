#include "context/waitable.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <new>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "context/internal/context_access.h"

namespace reqctx {
namespace internal {

// One eventfd for one cancel layer. Linked to that node as a Listener while
// the node is live; written (under the node's lock: a non-blocking write, so
// allowed there) when the node is done.
class DoneFdState final : public Listener {
 public:
  DoneFdState(NodeRef<CancelNode> node, int fd)
      : node_(std::move(node)), fd_(fd) {}
  ~DoneFdState();

  // Links to the node; marks the descriptor readable now if it is done.
  void Arm() {
    if (!node_->AddListener(this)) Signal();
  }
  int fd() const { return fd_; }
  bool IsDone() const { return node_->IsDone(); }
  CancelNode* node() const { return node_.get(); }

  void OnParentDone(DoneReason, const absl::Status&,
                    JobList&) noexcept override {
    Signal();
  }

 private:
  void Signal() noexcept {
    const uint64_t one = 1;
    // Cannot block (EFD_NONBLOCK) and cannot fail short of a counter
    // overflow, which one write per descriptor never reaches.
    while (write(fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }

  const NodeRef<CancelNode> node_;
  const int fd_;
};

namespace {

// The side table: cancel layer -> its live state. Sharded by address so
// unrelated contexts opening descriptors rarely share a lock. Lock order:
// shard mutex, then a node's mutex (Open links under the shard lock); the
// node never takes a shard lock.
class DoneFdTable {
 public:
  static DoneFdTable& Get() {
    static DoneFdTable* table = new DoneFdTable();  // Leaked: used at exit.
    return *table;
  }

  absl::StatusOr<std::shared_ptr<DoneFdState>> Open(CancelNode* node) {
    Shard& s = ShardOf(node);
    // Declared before the lock: if it must be destroyed on a failure below,
    // its destructor takes the shard lock, so the lock must be gone first.
    std::shared_ptr<DoneFdState> state;
    std::unique_lock<std::mutex> lock(s.mu);
    auto it = s.map.find(node);
    if (it != s.map.end()) {
      if (std::shared_ptr<DoneFdState> live = it->second.lock()) return live;
    }
    const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      return absl::ResourceExhaustedError(
          absl::StrCat("reqctx::DoneFd: eventfd failed: ", strerror(err)));
    }
    try {
      state = std::make_shared<DoneFdState>(NodeRef<CancelNode>::Share(node),
                                            fd);
      s.map[node] = state;
    } catch (const std::bad_alloc&) {
      if (state == nullptr) close(fd);  // Else ~DoneFdState closes it.
      lock.unlock();
      state.reset();
      return absl::ResourceExhaustedError("reqctx::DoneFd: out of memory");
    }
    state->Arm();
    return state;
  }

  // Drops the entry of `node` if it no longer names a live state (a newer
  // state for the same node may already have replaced it).
  void Forget(CancelNode* node) {
    Shard& s = ShardOf(node);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.map.find(node);
    if (it != s.map.end() && it->second.expired()) s.map.erase(it);
  }

 private:
  struct Shard {
    std::mutex mu;
    absl::flat_hash_map<const CancelNode*, std::weak_ptr<DoneFdState>> map;
  };
  Shard& ShardOf(const CancelNode* node) {
    return shards_[std::hash<const void*>()(node) % shards_.size()];
  }
  std::array<Shard, 16> shards_;
};

}  // namespace

DoneFdState::~DoneFdState() {
  // After RemoveListener returns no Signal() is running, so closing is safe.
  node_->RemoveListener(this);
  DoneFdTable::Get().Forget(node_.get());
  close(fd_);
}

}  // namespace internal

absl::StatusOr<DoneFd> DoneFd::Open(const Context& ctx) {
  internal::CancelNode* node = ContextAccess::CancelLayer(ctx);
  if (node == nullptr) return DoneFd();
  absl::StatusOr<std::shared_ptr<internal::DoneFdState>> state =
      internal::DoneFdTable::Get().Open(node);
  if (!state.ok()) return state.status();
  return DoneFd(*std::move(state));
}

int DoneFd::fd() const { return state_ ? state_->fd() : -1; }

bool DoneFd::IsDone() const { return state_ && state_->IsDone(); }

}  // namespace reqctx
