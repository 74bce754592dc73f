// Go peers of reqctx's benchmarks that Go's own context benchmarks lack, and
// the report that joins all the outputs (bench/run_all.sh, bench/pack.sh).
// Standard library only: builds offline.
module reqctx.local/bench

go 1.19
