# modelplane: `make run` starts the stack, `make test` runs every test. Both install what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_STAMP := modelplane/.generated
# The native gRPC transport (native/, Rust: hyper + h2 + rustls under pyo3), an abi3 module.
NATIVE := dataplane/transport/_native.abi3.so
NATIVE_SOURCES := $(wildcard native/src/*.rs) native/Cargo.toml native/Cargo.lock native/pyproject.toml
MODELS_DIR ?= var/models
export PYTHONDONTWRITEBYTECODE := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: images install system-deps protos native native-deps test-native lint-native fuzz fuzz-native models run test test-fast test-deploy lint format bench bench-deps clean

install: $(STAMP) $(PROTO_STAMP) $(NATIVE)

$(STAMP): requirements.txt $(wildcard requirements/*.txt) constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "python3 is required"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	touch $(STAMP)

# Our own protos (protos/modelplane/*.proto) compiled into the gitignored package `modelplane/`.
$(PROTO_STAMP): $(STAMP) $(wildcard protos/modelplane/*.proto)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. protos/modelplane/*.proto
	touch $(PROTO_STAMP)

protos: $(PROTO_STAMP)

# cargo and rustc >= 1.85 (rustup's, or Debian 13's `cargo` package; Debian 12's is too old).
native-deps:
	@command -v cargo >/dev/null || { \
	  echo "the Rust toolchain (cargo, rustc >= 1.85) is required to build native/"; exit 1; }

# maturin builds the wheel (cargo fetches the crates of native/Cargo.lock); only its .so is kept.
$(NATIVE): $(NATIVE_SOURCES) $(STAMP)
	@$(MAKE) --no-print-directory native-deps
	rm -rf native/target/wheels
	$(PY) -m maturin build --quiet --release --locked -m native/Cargo.toml --out native/target/wheels
	$(PY) scripts/unpack_native.py native/target/wheels $@

native: $(NATIVE)

# The transport's Rust unit tests, and its lint (rustfmt; clippy with warnings as errors).
test-native: native-deps
	cd native && cargo test --release --locked --quiet

lint-native: native-deps
	cd native && cargo fmt --check && cargo clippy --release --locked -- -D warnings

# libFuzzer on the transport's request paths, gRPC and REST (native/fuzz), FUZZ_SECONDS each.
# cargo fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them. --cap-lints: the
# vendored h2 (a path dependency, so not capped by cargo) has undocumented items under cfg(fuzzing).
FUZZ_SECONDS ?= 120
fuzz-native: native-deps
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	for target in request_path rest_request; do \
	  mkdir -p native/target/fuzz-corpus/$$target && \
	  (cd native && RUSTFLAGS=--cap-lints=warn RUSTC_BOOTSTRAP=1 cargo fuzz run $$target \
	    target/fuzz-corpus/$$target fuzz/seeds/$$target -- -max_total_time=$(FUZZ_SECONDS) -timeout=20) \
	    || exit 1; \
	done

# Debian packages the tests use: a real PostgreSQL server, a real headless Chromium, Prometheus,
# and nginx (deploy/nginx/nginx.conf in front of real data planes, tests/deploy/test_nginx_conf.py).
system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	test -x /usr/sbin/nginx || missing="$$missing nginx-light"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

models: install
	$(PY) -m examples.build --out $(MODELS_DIR)

# The whole local stack: example models, SQLite control plane on :5000, one data plane on
# :8500/:8501 registered with it, a first admin login and API token. Ctrl-C stops everything.
run: install
	$(PY) scripts/run_stack.py

test: install system-deps test-native images
	$(PY) -m pytest -q -ra

# compose.yaml's stack in real containers, under faults (tests/deploy/test_stack.py, ~6 min);
# `make test` runs it too. It needs a Docker engine and the images `make images` builds, and
# fails (never skips) saying so when either is missing; logs land in test-artifacts/deploy/.
test-deploy: install images
	$(PY) -m pytest -q -ra tests/deploy/test_stack.py

test-fast: install system-deps
	$(PY) -m pytest -q -ra -m "not slow"

# Coverage-guided fuzzing (atheris) of every parser a client or operator feeds, FUZZ_SECONDS
# each; `make test` runs a 20 s pass per target (tests/fuzz/test_fuzz.py). docs/fuzzing.md.
FUZZ_SECONDS ?= 300
FUZZ_TARGETS := rest_body http_request tensor_proto serving_request config_text

fuzz: install
	@mkdir -p var/fuzz
	@for target in $(FUZZ_TARGETS); do \
	  echo "== $$target: $(FUZZ_SECONDS) s (log: var/fuzz/$$target.log)"; \
	  $(PY) -m tests.fuzz.run $$target --seconds $(FUZZ_SECONDS) > var/fuzz/$$target.log 2>&1 \
	    || { tail -n 40 var/fuzz/$$target.log; exit 1; }; \
	  grep -E "^Done" var/fuzz/$$target.log; \
	done

lint: install lint-native
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Load generators for the benchmarks: C programs, so the client does not steal the server's cores.
bench-deps:
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client >/dev/null; }

bench: install bench-deps
	$(PY) bench/bench_serving.py
	$(PY) bench/bench_batching.py
	$(PY) bench/bench_warmup.py
	$(PY) bench/bench_load_isolation.py
	$(PY) bench/bench_unload_memory.py
	$(PY) bench/bench_tensors.py

# Every container image, built offline from Debian packages and a host wheelhouse; each is tagged
# with a hash of its inputs and skipped when that tag exists (scripts/images.py, docs/operations.md).
images: install
	$(PY) scripts/images.py

clean:
	rm -rf $(VENV) modelplane var .pytest_cache .ruff_cache dataplane/transport/_native*.so native/target
