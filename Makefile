# The two commands of the README.
.PHONY: run replicas test bench

# Start Omega + Envoy on the embedded SQLite default (installs Envoy/buf into the repo if missing).
run:
	./scripts/stack.sh

# N replicas (default 3) on the PostgreSQL database at OMEGA_DATABASE_URL behind one Envoy.
replicas:
	./scripts/replicas.sh $(or $(N),3)

# Every test: buf lint/format, unit tests, end-to-end tests on SQLite and PostgreSQL via Envoy.
test:
	./scripts/test.sh

# The benchmark at full scale on both databases (see README: Benchmarks). BENCH_ARGS adds flags.
bench:
	./scripts/ensure-tools.sh
	cargo build --release --bins
	target/release/omega-bench $(BENCH_ARGS)
