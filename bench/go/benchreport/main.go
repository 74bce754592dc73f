// Command benchreport joins the raw outputs of one benchmark run into the
// report bench/run_all.sh (and bench/pack.sh's packed script) prints:
// Go's context benchmarks (`go test -bench` text) and //bench:context_bench
// (Google Benchmark JSON) side by side by case name, the scaling table of the
// parallel cases at every thread count (Go: -cpu N), //bench:rpc_bench's
// table, and the issues' targets checked against this run.
//
// Usage:
//
//	benchreport -cc context_bench.json -go go_context.txt \
//	  -go_scaling go_scaling.txt [-rpc_md rpc_bench.md -rpc_json rpc_bench.json]
//
// -go is a run of all of Go's context benchmarks at the default -cpu (this
// machine's CPU count); -go_scaling holds runs of the parallel cases at several
// -cpu values (several files may be given, comma-separated). The RPC part is
// printed only when both -rpc files are given. Reads its inputs only; writes
// the report to stdout. Exits 1 with a message on unreadable or malformed input.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// stdPrefix names the std::stop_source peer of a C++ case.
const stdPrefix = "StopSource/"

// targetThreads is the column the issue's scaling targets are set on: on a
// 2-core machine both cores busy, where cache-line contention shows.
const targetThreads = 2

// key is a case at one thread count (Go: GOMAXPROCS, the -cpu value).
type key struct {
	name    string
	threads int
}

// goResult collects the repetitions (-count) of one Go case.
type goResult struct {
	ns, bytes, allocs []float64
}

// ccResult is one C++ case: the median aggregate, or the single run.
type ccResult struct {
	ns            float64
	bytes, allocs *float64
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "benchreport: "+format+"\n", args...)
	os.Exit(1)
}

func median(xs []float64) (float64, bool) {
	if len(xs) == 0 {
		return 0, false
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2], true
	}
	return (s[n/2-1] + s[n/2]) / 2, true
}

// "BenchmarkX/sub-2   1000   12.3 ns/op   80 B/op   2 allocs/op"; Go omits the
// -N suffix when GOMAXPROCS is 1.
var goLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-(\d+))?\s+\d+\s+([\d.]+) ns/op` +
	`(?:\s+([\d.]+) B/op)?(?:\s+([\d.]+) allocs/op)?`)

// readGo parses `go test -bench` output files into results by (name, -cpu),
// keeping the order in which names first appear.
func readGo(paths []string) (map[key]*goResult, []string) {
	res := map[key]*goResult{}
	var order []string
	seen := map[string]bool{}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			fail("%v", err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			m := goLine.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			threads := 1
			if m[2] != "" {
				threads, _ = strconv.Atoi(m[2])
			}
			k := key{m[1], threads}
			r := res[k]
			if r == nil {
				r = &goResult{}
				res[k] = r
			}
			if !seen[m[1]] {
				seen[m[1]] = true
				order = append(order, m[1])
			}
			ns, _ := strconv.ParseFloat(m[3], 64)
			r.ns = append(r.ns, ns)
			if m[4] != "" {
				b, _ := strconv.ParseFloat(m[4], 64)
				a, _ := strconv.ParseFloat(m[5], 64)
				r.bytes = append(r.bytes, b)
				r.allocs = append(r.allocs, a)
			}
		}
		if err := sc.Err(); err != nil {
			fail("%s: %v", p, err)
		}
		f.Close()
	}
	return res, order
}

// Google Benchmark's name decorations, dropped so names match Go's.
var decor = regexp.MustCompile(`^(real_time|process_time|manual_time|threads:\d+|` +
	`min_time:.*|min_warmup_time:.*|iterations:\d+|repeats:\d+)$`)

var nonFinite = regexp.MustCompile(`:\s*-?(?i:nan|inf|infinity)\b`)

var toNs = map[string]float64{"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}

// readCC parses context_bench's JSON into results by (name, threads), keeping
// registration order, and the names that ran at more than one thread count.
func readCC(path string) (map[key]ccResult, []string, map[string]bool) {
	raw, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	var data struct {
		Benchmarks []map[string]interface{} `json:"benchmarks"`
	}
	// Google Benchmark writes NaN/inf for some aggregates (the cv of a
	// counter that is always 0), which JSON has no word for.
	raw = nonFinite.ReplaceAll(raw, []byte(": null"))
	if err := json.Unmarshal(raw, &data); err != nil {
		fail("%s: %v", path, err)
	}
	str := func(b map[string]interface{}, k string) string {
		s, _ := b[k].(string)
		return s
	}
	num := func(b map[string]interface{}, k string) *float64 {
		if v, ok := b[k].(float64); ok {
			return &v
		}
		return nil
	}
	res := map[key]ccResult{}
	var order []string
	threadsOf := map[string]map[int]bool{}
	for _, b := range data.Benchmarks {
		if str(b, "run_type") == "aggregate" && str(b, "aggregate_name") != "median" {
			continue
		}
		base := str(b, "run_name")
		if base == "" {
			base = str(b, "name")
		}
		var parts []string
		for _, p := range strings.Split(base, "/") {
			if !decor.MatchString(p) {
				parts = append(parts, p)
			}
		}
		name := strings.Join(parts, "/")
		if e, _ := b["error_occurred"].(bool); e {
			fail("context_bench: %s failed: %s", name, str(b, "error_message"))
		}
		threads := 1
		if t := num(b, "threads"); t != nil {
			threads = int(*t)
		}
		rt := num(b, "real_time")
		unit, ok := toNs[str(b, "time_unit")]
		if rt == nil || !ok {
			fail("%s: %s has no real_time in a known unit", path, name)
		}
		if threadsOf[name] == nil {
			threadsOf[name] = map[int]bool{}
			order = append(order, name)
		}
		threadsOf[name][threads] = true
		res[key{name, threads}] = ccResult{*rt * unit, num(b, "bytes_per_op"),
			num(b, "allocs_per_op")}
	}
	// A case that takes a thread count: run at several, or at one other than 1.
	parallel := map[string]bool{}
	for n, ts := range threadsOf {
		parallel[n] = len(ts) > 1 || !ts[1]
	}
	return res, order, parallel
}

func fmtNs(x float64, ok bool) string {
	if !ok {
		return "-"
	}
	if x < 10 {
		return strconv.FormatFloat(x, 'g', 3, 64)
	}
	return strconv.FormatFloat(x, 'f', 0, 64)
}

func fmtMem(b, a *float64) string {
	if b == nil || a == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f (%.0f)", *b, *a)
}

func short(name string) string { return strings.TrimPrefix(name, "Benchmark") }

func check(ok bool, text string) {
	mark := " "
	if ok {
		mark = "x"
	}
	fmt.Printf("- [%s] %s\n", mark, text)
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "model name") {
			if i := strings.Index(l, ":"); i >= 0 {
				return strings.TrimSpace(l[i+1:])
			}
		}
	}
	return "unknown CPU"
}

// report holds one run's results and answers lookups on them.
type report struct {
	cpus      int
	cc        map[key]ccResult
	ccOrder   []string
	parallel  map[string]bool
	goMain    map[key]*goResult
	goOrder   []string
	goScale   map[key]*goResult
	goThreads int // the -cpu of the main Go run: this machine's CPUs
}

// ccAt is a C++ case at `threads`; a case that does not take a thread count
// answers at any count with its single-thread run.
func (r *report) ccAt(name string, threads int) (ccResult, bool) {
	if !r.parallel[name] {
		threads = 1
	}
	c, ok := r.cc[key{name, threads}]
	return c, ok
}

// ccMain is a C++ case as the main table shows it: at this machine's CPU
// count, as Go's default -cpu.
func (r *report) ccMain(name string) (ccResult, bool) { return r.ccAt(name, r.cpus) }

func (r *report) goMainNs(name string) (float64, bool) {
	g := r.goMain[key{name, r.goThreads}]
	if g == nil {
		return 0, false
	}
	return median(g.ns)
}

// goAt is Go's ns/op of a case at -cpu `threads`: from the scaling runs, or,
// for a case that is not parallel (GOMAXPROCS does not change its work), from
// the main run.
func (r *report) goAt(name string, threads int) (float64, bool) {
	if g := r.goScale[key{name, threads}]; g != nil {
		return median(g.ns)
	}
	if !r.parallel[name] || threads == r.goThreads {
		return r.goMainNs(name)
	}
	return 0, false
}

func (r *report) mainTable() {
	fmt.Printf("Context benchmarks, %s; %d cores, %s; Go %s; median of the runs; "+
		"parallel cases at %d threads (Go's default -cpu).\n\n",
		time.Now().Format("2006-01-02"), r.cpus, cpuModel(),
		strings.TrimPrefix(runtime.Version(), "go"), r.cpus)
	fmt.Println("| case | Go ns/op | reqctx ns/op | reqctx/Go | std::stop_source ns/op " +
		"| reqctx B/op (allocs) | Go B/op (allocs) |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	rows := append([]string(nil), r.goOrder...)
	inGo := map[string]bool{}
	for _, n := range r.goOrder {
		inGo[n] = true
	}
	for _, n := range r.ccOrder {
		if !inGo[n] && !strings.HasPrefix(n, stdPrefix) && !r.parallel[n] {
			rows = append(rows, n)
		}
	}
	for _, n := range rows {
		gNs, gOk := r.goMainNs(n)
		c, cOk := r.ccMain(n)
		s, sOk := r.ccMain(stdPrefix + n)
		ratio := "-"
		if gOk && cOk && gNs > 0 {
			ratio = fmt.Sprintf("%.2f", c.ns/gNs)
		}
		gMem := "-"
		if g := r.goMain[key{n, r.goThreads}]; g != nil {
			b, bOk := median(g.bytes)
			a, _ := median(g.allocs)
			if bOk {
				gMem = fmtMem(&b, &a)
			}
		}
		cMem := "-"
		if cOk {
			cMem = fmtMem(c.bytes, c.allocs)
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s |\n", short(n), fmtNs(gNs, gOk),
			fmtNs(c.ns, cOk), ratio, fmtNs(s.ns, sOk), cMem, gMem)
	}
	fmt.Println()
}

// threadCounts is every thread count the parallel C++ cases ran at.
func (r *report) threadCounts() []int {
	set := map[int]bool{}
	for k := range r.cc {
		if r.parallel[k.name] {
			set[k.threads] = true
		}
	}
	var ts []int
	for t := range set {
		ts = append(ts, t)
	}
	sort.Ints(ts)
	return ts
}

func (r *report) scalingTable() {
	ts := r.threadCounts()
	if len(ts) == 0 {
		return
	}
	fmt.Printf("Scaling: the parallel cases at each thread count (Go: `-cpu N`, N "+
		"goroutines), ns/op = wall time / all operations, median of the runs; "+
		"%d cores here, so columns above %d are oversubscribed. "+
		"reqctx/Go below 1 is reqctx faster.\n\n", r.cpus, r.cpus)
	head := "| case | measure / threads |"
	rule := "|---|---|"
	for _, t := range ts {
		head += fmt.Sprintf(" %d |", t)
		rule += "---:|"
	}
	fmt.Println(head)
	fmt.Println(rule)
	for _, n := range r.ccOrder {
		if !r.parallel[n] || strings.HasPrefix(n, stdPrefix) {
			continue
		}
		type row struct {
			label string
			cells []string
			any   bool
		}
		rows := []*row{{label: "reqctx ns/op"}, {label: "Go ns/op (-cpu N)"},
			{label: "std::stop_source ns/op"}, {label: "reqctx/Go"}}
		for _, t := range ts {
			c, cOk := r.cc[key{n, t}]
			g, gOk := r.goAt(n, t)
			s, sOk := r.cc[key{stdPrefix + n, t}]
			vals := []struct {
				s  string
				ok bool
			}{{fmtNs(c.ns, cOk), cOk}, {fmtNs(g, gOk), gOk}, {fmtNs(s.ns, sOk), sOk}, {"-", false}}
			if cOk && gOk && g > 0 {
				vals[3] = struct {
					s  string
					ok bool
				}{fmt.Sprintf("%.2f", c.ns/g), true}
			}
			for i, v := range vals {
				rows[i].cells = append(rows[i].cells, v.s)
				rows[i].any = rows[i].any || v.ok
			}
		}
		first := true
		for _, rw := range rows {
			if !rw.any {
				continue
			}
			label := ""
			if first {
				label = short(n)
				first = false
			}
			fmt.Printf("| %s | %s | %s |\n", label, rw.label, strings.Join(rw.cells, " | "))
		}
	}
	fmt.Println()
}

func (r *report) ccNs(name string) (float64, bool) {
	c, ok := r.ccMain(name)
	return c.ns, ok
}

// memoryTargets: bytes per context (identical at every thread count).
func (r *report) memoryTargets() {
	for _, m := range []struct {
		name  string
		limit float64
		what  string
	}{{"BenchmarkLinkedChildCancel", 96, "WithCancel child of a cancelable parent"},
		{"BenchmarkWithTimeoutCancel", 160, "WithTimeout"},
		{"BenchmarkWithValue", 64, "WithValue"}} {
		if c, ok := r.ccMain(m.name); ok && c.bytes != nil {
			check(*c.bytes <= m.limit, fmt.Sprintf("<= %.0f B per %s: %.0f B",
				m.limit, m.what, *c.bytes))
		}
	}
}

// issue5Targets: the targets of issue 5, on the main table (and rpc_bench's
// run, if any).
func (r *report) issue5Targets(rpc *rpcRun) {
	fmt.Println("Targets (issue 5):")
	var slow, missing []string
	for _, n := range r.goOrder {
		g, _ := r.goMainNs(n)
		c, ok := r.ccNs(n)
		if !ok {
			missing = append(missing, short(n))
		} else if c > 0.5*g {
			slow = append(slow, short(n))
		}
	}
	text := "every Go case: reqctx <= 0.5x Go's ns/op"
	if len(slow) > 0 {
		text += "; missed by: " + strings.Join(slow, ", ")
	}
	if len(missing) > 0 {
		text += "; no reqctx case for: " + strings.Join(missing, ", ")
	}
	check(len(slow) == 0 && len(missing) == 0, text)
	lc, lok := r.ccNs("BenchmarkLinkedChildCancel")
	ls, sok := r.ccNs(stdPrefix + "BenchmarkLinkedChildCancel")
	if lok && sok && ls > 0 {
		check(lc <= 1.5*ls, fmt.Sprintf("cancel of a child linked to a cancelable "+
			"parent <= 1.5x std::stop_source: %s vs %s ns (%.2fx)",
			fmtNs(lc, true), fmtNs(ls, true), lc/ls))
	}
	for _, n := range []string{"BenchmarkCheckCanceled/Err", "BenchmarkCheckCanceled/Done"} {
		if v, ok := r.ccNs(n); ok {
			check(v <= 2.0, fmt.Sprintf("%s <= 2 ns: %s ns", short(n), fmtNs(v, true)))
		}
	}
	r.memoryTargets()
	if rpc != nil {
		rpc.targets()
	}
}

// issue11Targets: the scaling targets of issue 11, on the 2-thread column.
func (r *report) issue11Targets(rpc *rpcRun) {
	fmt.Printf("Targets (issue 11), at %d threads (Go: -cpu %d):\n", targetThreads, targetThreads)
	if _, ok := r.cc[key{"BenchmarkContextCancelDone", targetThreads}]; !ok {
		check(false, fmt.Sprintf("the %d-thread column was not measured "+
			"(run with %d among the thread counts)", targetThreads, targetThreads))
		return
	}
	// Go's own cases are the main Go run's names; bench/go's cases come only
	// from the scaling runs.
	ownGo := map[string]bool{}
	for _, n := range r.goOrder {
		ownGo[n] = true
	}
	judge := func(names []string, what string) {
		var slow, missing []string
		for _, n := range names {
			g, gOk := r.goAt(n, targetThreads)
			c, cOk := r.ccAt(n, targetThreads)
			switch {
			case !gOk || !cOk:
				missing = append(missing, short(n))
			case c.ns > 0.5*g:
				slow = append(slow, fmt.Sprintf("%s (%.2fx)", short(n), c.ns/g))
			}
		}
		text := what + ": reqctx <= 0.5x Go's ns/op"
		if len(slow) > 0 {
			text += "; missed by: " + strings.Join(slow, ", ")
		}
		if len(missing) > 0 {
			text += "; not measured at this count: " + strings.Join(missing, ", ")
		}
		check(len(slow) == 0 && len(missing) == 0, text)
	}
	judge(r.goOrder, "every case of Go's context benchmarks")
	var extra []string
	for _, n := range r.ccOrder {
		if r.parallel[n] && !ownGo[n] && !strings.HasPrefix(n, stdPrefix) &&
			n != workOnly {
			extra = append(extra, n)
		}
	}
	if len(extra) > 0 {
		judge(extra, "the server-shaped cases (bench/go: "+
			strings.Join(mapShort(extra), ", ")+")")
	}
	for _, n := range []string{"BenchmarkContextCancelDone", "BenchmarkCheckCanceled/Err",
		"BenchmarkCheckCanceled/Done", "BenchmarkCheckCanceledParallel/Err",
		"BenchmarkCheckCanceledParallel/Done"} {
		c, cOk := r.ccAt(n, targetThreads)
		s, sOk := r.ccAt(stdPrefix+n, targetThreads)
		if !cOk || !sOk || s.ns <= 0 {
			continue
		}
		check(c.ns <= 2*s.ns, fmt.Sprintf("%s <= 2x std::stop_source: %s vs %s ns (%.2fx)",
			short(n), fmtNs(c.ns, true), fmtNs(s.ns, true), c.ns/s.ns))
	}
	r.netOfWork()
	r.memoryTargets()
	if rpc != nil {
		rpc.issue11Targets()
	}
	fmt.Println("- not checked here: \"no case more than 10% slower than the " +
		"README's table\" (the same build moves by up to 2x between days on " +
		"a small VM: compare builds side by side with bench/compare_rev.sh BASE)")
}

// workOnly is CommonParentCancel's loop with only its 200 divisions, on both
// sides: not a context case, a floor to subtract.
const workOnly = "BenchmarkCommonParentCancelWorkOnly"

// netOfWork checks CommonParentCancel once the benchmark's own work (the
// division chain, measured alone as workOnly on each side) is subtracted:
// what the context operations cost, reqctx vs Go.
func (r *report) netOfWork() {
	const n = "BenchmarkCommonParentCancel"
	g, gOk := r.goAt(n, targetThreads)
	gw, gwOk := r.goAt(workOnly, targetThreads)
	c, cOk := r.ccAt(n, targetThreads)
	cw, cwOk := r.ccAt(workOnly, targetThreads)
	if !gOk || !gwOk || !cOk || !cwOk || g-gw <= 0 {
		return
	}
	net, goNet := c.ns-cw.ns, g-gw
	check(net <= 0.5*goNet, fmt.Sprintf("CommonParentCancel net of its 200 "+
		"divisions (%s: reqctx %s, Go %s ns): reqctx <= 0.5x Go: %s vs %s ns (%.2fx)",
		short(workOnly), fmtNs(cw.ns, true), fmtNs(gw, true),
		fmtNs(net, true), fmtNs(goNet, true), net/goNet))
}

func mapShort(ns []string) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = short(n)
	}
	return out
}

// rpcRun is //bench:rpc_bench's output: its markdown table and its JSON.
type rpcRun struct {
	md       string
	jsonPath string
	data     map[string]interface{}
}

func readRPC(mdPath, jsonPath string) *rpcRun {
	md, err := os.ReadFile(mdPath)
	if err != nil {
		fail("%v", err)
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		fail("%v", err)
	}
	run := &rpcRun{md: string(md), jsonPath: jsonPath}
	if err := json.Unmarshal(raw, &run.data); err != nil {
		fail("%s: %v", jsonPath, err)
	}
	return run
}

// table prints rpc_bench's own table, verbatim.
func (run *rpcRun) table() {
	fmt.Println("RPC benchmark (//bench:rpc_bench): " + strings.TrimRight(run.md, "\n"))
	fmt.Println()
}

// targets checks the interceptor targets. QPS and CPU compare adjacent
// plain/reqctx phases (median of the per-round differences); the cancellation
// target is met by the callback API (pushed); the sync API's polled path is
// checked too, to say so plainly.
func (run *rpcRun) targets() {
	rpc, jsonPath := run.data, run.jsonPath
	f := func(k string) float64 {
		v, ok := rpc[k].(float64)
		if !ok {
			fail("%s: no number %q", jsonPath, k)
		}
		return v
	}
	check(f("qps_loss_pct") <= 3.0, fmt.Sprintf("interceptors: <= 3%% lower QPS than "+
		"plain gRPC: %.1f%% (%.0f vs %.0f QPS)", f("qps_loss_pct"), f("qps_reqctx"),
		f("qps_plain")))
	check(f("cpu_extra_us") <= 2.0, fmt.Sprintf("interceptors: <= 2 us extra CPU per "+
		"RPC: %+.2f us (%.1f vs %.1f us)", f("cpu_extra_us"), f("cpu_us_reqctx"),
		f("cpu_us_plain")))
	// Not targets, the split of the above: gRPC's own cost of having any
	// interceptor, and what reqctx's own code adds on top of it.
	if _, ok := rpc["cpu_us_noop"]; ok {
		fmt.Printf("  - gRPC's own cost of no-op interceptors: %+.2f us/RPC, %+.1f%% QPS "+
			"(%.1f vs %.1f us, %.0f vs %.0f QPS)\n", f("noop_cpu_extra_us"),
			-f("noop_qps_loss_pct"), f("cpu_us_noop"), f("cpu_us_plain"),
			f("qps_noop"), f("qps_plain"))
		fmt.Printf("  - reqctx's own cost over no-op interceptors: %+.2f us/RPC, "+
			"%+.1f%% QPS\n", f("reqctx_over_noop_cpu_extra_us"),
			-f("reqctx_over_noop_qps_loss_pct"))
	}
	for _, c := range []struct{ key, what string }{
		{"cancel_callback", "callback API"}, {"cancel_sync", "sync API (polled)"}} {
		m, ok := rpc[c.key].(map[string]interface{})
		if !ok {
			fail("%s: no %q", jsonPath, c.key)
		}
		p99, _ := m["p99_us"].(float64)
		trials, _ := m["trials"].(float64)
		failed, _ := m["failed"].(float64)
		text := fmt.Sprintf("3-hop cancellation p99 <= 1 ms, %s: %.0f us over %.0f trials",
			c.what, p99, trials)
		if failed > 0 {
			text += fmt.Sprintf(", %.0f failed", failed)
		}
		check(p99 <= 1000 && trials >= 1000 && failed == 0, text)
	}
	if e := f("rpc_errors"); e > 0 {
		check(false, fmt.Sprintf("throughput RPCs without errors: %.0f failed", e))
	}
}

// issue11Targets checks the interceptor-cost targets of issue 11: reqctx's
// own cost, over gRPC with no-op interceptors (median of per-round pairs), in
// CPU, QPS and voluntary context switches per RPC (getrusage over each
// phase: client and server share rpc_bench's process), and the callback
// API's 3-hop cancel.
func (run *rpcRun) issue11Targets() {
	rpc := run.data
	num := func(k string) (float64, bool) {
		v, ok := rpc[k].(float64)
		return v, ok
	}
	cpu, cpuOk := num("reqctx_over_noop_cpu_extra_us")
	loss, lossOk := num("reqctx_over_noop_qps_loss_pct")
	vcsw, vcswOk := num("reqctx_over_noop_vcsw_per_rpc")
	if !cpuOk || !lossOk || !vcswOk {
		check(false, "interceptor cost over no-op interceptors: not in "+
			run.jsonPath+" (an rpc_bench without the no-op mode or context switches)")
		return
	}
	check(cpu <= 2.0, fmt.Sprintf("interceptors: reqctx over no-op interceptors "+
		"<= +2 us CPU per RPC: %+.2f us", cpu))
	check(loss <= 3.0, fmt.Sprintf("interceptors: reqctx over no-op interceptors "+
		"<= -3%% QPS: %+.1f%%", -loss))
	perMode := func(prefix string) string {
		p, _ := num(prefix + "_plain")
		n, _ := num(prefix + "_noop")
		q, _ := num(prefix + "_reqctx")
		return fmt.Sprintf("plain %.3f, no-op %.3f, reqctx %.3f", p, n, q)
	}
	check(vcsw <= 0.05, fmt.Sprintf("interceptors: reqctx adds <= 0.05 voluntary "+
		"context switches per RPC: %+.3f (%s)", vcsw, perMode("vcsw_per_rpc")))
	if ivcsw, ok := num("reqctx_over_noop_ivcsw_per_rpc"); ok {
		fmt.Printf("  - involuntary context switches per RPC (not a target): "+
			"reqctx over no-op %+.3f (%s)\n", ivcsw, perMode("ivcsw_per_rpc"))
	}
	m, ok := rpc["cancel_callback"].(map[string]interface{})
	if !ok {
		check(false, "3-hop cancellation, callback API: not in "+run.jsonPath)
		return
	}
	p99, _ := m["p99_us"].(float64)
	trials, _ := m["trials"].(float64)
	failed, _ := m["failed"].(float64)
	check(p99 <= 1000 && trials >= 1000 && failed == 0, fmt.Sprintf(
		"3-hop cancellation p99 <= 1 ms on the callback API: %.0f us over %.0f "+
			"trials, %.0f failed", p99, trials, failed))
}

func main() {
	ccPath := flag.String("cc", "", "context_bench's --benchmark_out JSON")
	goPath := flag.String("go", "", "all of Go's context benchmarks at the default -cpu")
	goScaling := flag.String("go_scaling", "", "comma-separated `go test -bench -cpu "+
		"LIST` outputs of the parallel cases")
	rpcMd := flag.String("rpc_md", "", "rpc_bench's stdout (optional)")
	rpcJSON := flag.String("rpc_json", "", "rpc_bench's --json_out (optional)")
	flag.Parse()
	if *ccPath == "" || *goPath == "" || flag.NArg() != 0 {
		fail("usage: benchreport -cc FILE -go FILE [-go_scaling FILE,...] " +
			"[-rpc_md FILE -rpc_json FILE]")
	}
	r := &report{cpus: runtime.NumCPU()}
	r.cc, r.ccOrder, r.parallel = readCC(*ccPath)
	r.goMain, r.goOrder = readGo([]string{*goPath})
	// The main Go run is at one -cpu (the default); find it from its output.
	r.goThreads = r.cpus
	for k := range r.goMain {
		r.goThreads = k.threads
		break
	}
	if *goScaling != "" {
		r.goScale, _ = readGo(strings.Split(*goScaling, ","))
	}
	if len(r.goOrder) == 0 {
		fail("%s: no Go benchmark results", *goPath)
	}
	var rpc *rpcRun
	if *rpcMd != "" && *rpcJSON != "" {
		rpc = readRPC(*rpcMd, *rpcJSON)
	}
	r.mainTable()
	r.scalingTable()
	if rpc != nil {
		rpc.table()
	}
	r.issue5Targets(rpc)
	fmt.Println()
	r.issue11Targets(rpc)
}
