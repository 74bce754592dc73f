// Go's side of the parallel cases in //bench:context_bench that Go's own
// src/context benchmarks do not have. Same names and the same work per
// operation as the C++ cases, so that benchreport joins them by name. Run with
// `go test -run=NONE -bench=. -cpu 1,2,4,8,16` (bench/run_all.sh does).
package bench

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// The request shape of BenchmarkServerShaped; the C++ case uses the same
// constants (kPollsPerRequest, kDivisionsPerSlice, kRequestTimeout).
const (
	pollsPerRequest   = 10
	divisionsPerSlice = 10
	requestTimeout    = 10 * time.Second
)

// sink keeps the divisions' result observable so the work is not removed.
var sink int64

// divide runs a dependent chain of n integer divisions on x.
func divide(x int64, n int) int64 {
	for i := 0; i < n; i++ {
		x /= x + 1
	}
	return x
}

// BenchmarkServerShaped: one live server-lifetime context; every goroutine
// serves requests, each a WithTimeout child of it (never reached) that the
// handler polls before each slice of work, then cancels as it returns.
func BenchmarkServerShaped(b *testing.B) {
	server, stop := context.WithCancel(context.Background())
	defer stop()
	b.RunParallel(func(pb *testing.PB) {
		var x int64
		for pb.Next() {
			ctx, cancel := context.WithTimeout(server, requestTimeout)
			for i := 0; i < pollsPerRequest; i++ {
				select {
				case <-ctx.Done():
					b.Error("request context done early")
				default:
				}
				x = divide(x, divisionsPerSlice)
			}
			cancel()
		}
		atomic.AddInt64(&sink, x)
	})
}

// BenchmarkCheckCanceledParallel: every goroutine checks one shared canceled
// context at once, by its error or by a non-blocking receive on Done.
func BenchmarkCheckCanceledParallel(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.Run("Err", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if ctx.Err() == nil {
					b.Error("context not canceled")
				}
			}
		})
	})
	b.Run("Done", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				select {
				case <-ctx.Done():
				default:
					b.Error("context not canceled")
				}
			}
		})
	})
}

// BenchmarkCommonParentCancelWorkOnly: Go's CommonParentCancel loop with only
// its 200 divisions (same int type and chain as src/context's benchmark), so
// that the context operations' own cost is CommonParentCancel minus this.
func BenchmarkCommonParentCancelWorkOnly(b *testing.B) {
	b.RunParallel(func(pb *testing.PB) {
		x := 0
		for pb.Next() {
			for i := 0; i < 100; i++ {
				x /= x + 1
			}
			for i := 0; i < 100; i++ {
				x /= x + 1
			}
		}
		atomic.AddInt64(&sink, int64(x))
	})
}
