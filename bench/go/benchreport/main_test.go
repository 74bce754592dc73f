package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// captureStdout returns what fn prints.
func captureStdout(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	fn()
	os.Stdout = old
	w.Close()
	return <-done
}

// Go omits the -N suffix at -cpu 1; names may contain '=' and '/'.
func TestReadGoSplitsNameAndCPU(t *testing.T) {
	p := writeFile(t, "go.txt", `goos: linux
BenchmarkWithTimeout/concurrency=40         	   1000	      4000 ns/op	    2083 B/op	      40 allocs/op
BenchmarkWithTimeout/concurrency=40-2       	   1000	      2000 ns/op	    2083 B/op	      40 allocs/op
BenchmarkWithTimeout/concurrency=40-2       	   1000	      3000 ns/op	    2083 B/op	      40 allocs/op
BenchmarkWithTimeout/concurrency=40-2       	   1000	      9000 ns/op	    2083 B/op	      40 allocs/op
BenchmarkContextCancelDone-16               	1000000	         0.60 ns/op
PASS
`)
	res, order := readGo([]string{p})
	if got := strings.Join(order, ","); got !=
		"BenchmarkWithTimeout/concurrency=40,BenchmarkContextCancelDone" {
		t.Fatalf("order = %s", got)
	}
	if r := res[key{"BenchmarkWithTimeout/concurrency=40", 1}]; r == nil || r.ns[0] != 4000 {
		t.Fatalf("-cpu 1 result = %+v", r)
	}
	r := res[key{"BenchmarkWithTimeout/concurrency=40", 2}]
	if m, _ := median(r.ns); m != 3000 {
		t.Fatalf("median at -cpu 2 = %v, want 3000", m)
	}
	if r := res[key{"BenchmarkContextCancelDone", 16}]; r == nil || r.ns[0] != 0.6 ||
		len(r.bytes) != 0 {
		t.Fatalf("-cpu 16 result = %+v", r)
	}
}

// Google Benchmark writes NaN for the cv of an always-zero counter; only the
// median aggregate is kept, and decorations are stripped from the name.
func TestReadCCKeepsMediansAndAcceptsNaN(t *testing.T) {
	p := writeFile(t, "cc.json", `{"benchmarks": [
 {"name": "X/manual_time/threads:2_median", "run_name": "BenchmarkX/manual_time/threads:2",
  "run_type": "aggregate", "aggregate_name": "median", "threads": 2,
  "real_time": 1.5, "time_unit": "us", "bytes_per_op": 0, "allocs_per_op": 0},
 {"name": "X/manual_time/threads:2_cv", "run_name": "BenchmarkX/manual_time/threads:2",
  "run_type": "aggregate", "aggregate_name": "cv", "threads": 2,
  "real_time": 0.1, "time_unit": "ns", "bytes_per_op": NaN, "allocs_per_op": -nan},
 {"name": "BenchmarkX/manual_time/threads:1", "run_name": "BenchmarkX/manual_time/threads:1",
  "run_type": "iteration", "threads": 1, "real_time": 2, "time_unit": "ns"},
 {"name": "BenchmarkY", "run_name": "BenchmarkY", "run_type": "iteration",
  "threads": 1, "real_time": 3, "time_unit": "ns", "bytes_per_op": 88, "allocs_per_op": 1}
]}`)
	res, order, parallel := readCC(p)
	if got := strings.Join(order, ","); got != "BenchmarkX,BenchmarkY" {
		t.Fatalf("order = %s", got)
	}
	if c := res[key{"BenchmarkX", 2}]; c.ns != 1500 {
		t.Fatalf("BenchmarkX at 2 threads = %v ns, want 1500", c.ns)
	}
	if !parallel["BenchmarkX"] || parallel["BenchmarkY"] {
		t.Fatalf("parallel = %v", parallel)
	}
	if c := res[key{"BenchmarkY", 1}]; c.bytes == nil || *c.bytes != 88 {
		t.Fatalf("BenchmarkY bytes = %v", c.bytes)
	}
}

// Every row of the scaling table has a cell per thread count, and a case
// without a std::stop_source peer has no such row.
func TestScalingTableIsWellFormed(t *testing.T) {
	cc := writeFile(t, "cc.json", `{"benchmarks": [
 {"run_name": "BenchmarkA/manual_time/threads:1", "threads": 1, "real_time": 4, "time_unit": "ns"},
 {"run_name": "BenchmarkA/manual_time/threads:2", "threads": 2, "real_time": 2, "time_unit": "ns"},
 {"run_name": "StopSource/BenchmarkA/manual_time/threads:1", "threads": 1, "real_time": 1, "time_unit": "ns"},
 {"run_name": "StopSource/BenchmarkA/manual_time/threads:2", "threads": 2, "real_time": 1, "time_unit": "ns"},
 {"run_name": "BenchmarkB/manual_time/threads:1", "threads": 1, "real_time": 10, "time_unit": "ns"},
 {"run_name": "BenchmarkB/manual_time/threads:2", "threads": 2, "real_time": 5, "time_unit": "ns"}
]}`)
	goScaling := writeFile(t, "go.txt", `BenchmarkA 10 8 ns/op
BenchmarkA-2 10 4 ns/op
BenchmarkB-2 10 20 ns/op
`)
	r := &report{cpus: 2, goThreads: 2}
	r.cc, r.ccOrder, r.parallel = readCC(cc)
	r.goScale, _ = readGo([]string{goScaling})
	out := captureStdout(t, r.scalingTable)
	var rows []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "|") {
			rows = append(rows, l)
		}
	}
	// Header, rule, A: reqctx, Go, std, ratio; B: reqctx, Go, ratio.
	if len(rows) != 9 {
		t.Fatalf("got %d table lines:\n%s", len(rows), out)
	}
	for _, l := range rows {
		if n := strings.Count(l, "|"); n != 5 {
			t.Errorf("%d cells in %q, want 4", n-1, l)
		}
	}
	if !strings.Contains(out, "| A | reqctx ns/op | 4 | 2 |") ||
		!strings.Contains(out, "|  | reqctx/Go | 0.50 | 0.50 |") ||
		!strings.Contains(out, "| B | reqctx ns/op | 10 | 5 |") ||
		!strings.Contains(out, "|  | Go ns/op (-cpu N) | - | 20 |") {
		t.Errorf("unexpected table:\n%s", out)
	}
}

// The interceptor-cost targets of issue 11: met, missed (context switches),
// and reported as not measured by an older rpc_bench.
func TestIssue11RPCTargets(t *testing.T) {
	const met = `{"reqctx_over_noop_cpu_extra_us": 1.5,
		"reqctx_over_noop_qps_loss_pct": 2.0,
		"reqctx_over_noop_vcsw_per_rpc": 0.01,
		"reqctx_over_noop_ivcsw_per_rpc": 0.002,
		"vcsw_per_rpc_plain": 2.1, "vcsw_per_rpc_noop": 2.2, "vcsw_per_rpc_reqctx": 2.21,
		"ivcsw_per_rpc_plain": 0.1, "ivcsw_per_rpc_noop": 0.1, "ivcsw_per_rpc_reqctx": 0.1,
		"cancel_callback": {"trials": 1000, "failed": 0, "p50_us": 300, "p99_us": 800}}`
	out := captureStdout(t, func() {
		(&rpcRun{jsonPath: "met.json", data: parseJSON(t, met)}).issue11Targets()
	})
	if strings.Contains(out, "- [ ]") || strings.Count(out, "- [x]") != 4 {
		t.Errorf("all targets met, got:\n%s", out)
	}
	if !strings.Contains(out, "+0.010 (plain 2.100, no-op 2.200, reqctx 2.210)") {
		t.Errorf("context switches per mode not shown:\n%s", out)
	}
	missed := strings.Replace(met, `"reqctx_over_noop_vcsw_per_rpc": 0.01`,
		`"reqctx_over_noop_vcsw_per_rpc": 0.5`, 1)
	out = captureStdout(t, func() {
		(&rpcRun{jsonPath: "missed.json", data: parseJSON(t, missed)}).issue11Targets()
	})
	if strings.Count(out, "- [ ]") != 1 || !strings.Contains(out, "+0.500") {
		t.Errorf("one target missed (context switches), got:\n%s", out)
	}
	out = captureStdout(t, func() {
		(&rpcRun{jsonPath: "old.json", data: parseJSON(t, `{"qps_plain": 1}`)}).issue11Targets()
	})
	if strings.Count(out, "- [ ]") != 1 || !strings.Contains(out, "not in old.json") {
		t.Errorf("an older rpc_bench output is reported as not measured, got:\n%s", out)
	}
}

func parseJSON(t *testing.T, text string) map[string]interface{} {
	t.Helper()
	var m map[string]interface{}
	if err := json.Unmarshal([]byte(text), &m); err != nil {
		t.Fatal(err)
	}
	return m
}
