# Thin wrappers over CMake presets. The two commands a new machine needs:
#   make up    installs what is missing, builds, starts the platform (skiff up)
#   make test  installs what is missing, builds, runs every test
.PHONY: deps build release up down test test-asan fuzz fuzz-build bench clean

PRESET ?= dev
JOBS ?= $(shell nproc)
BIN := build/$(PRESET)/bin

deps:
	@bash .ci/install-deps.sh

build: deps
	@cmake --preset $(PRESET) >/dev/null
	@cmake --build --preset $(PRESET) -j $(JOBS)

release:
	@$(MAKE) --no-print-directory build PRESET=release

up: build
	$(BIN)/skiff up -f $(or $(CONFIG),examples/skiff.yaml)

down:
	$(BIN)/skiff down

test: build
	ctest --preset $(PRESET) -j $(JOBS) --output-on-failure

test-asan: deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS)
	ctest --preset asan -j $(JOBS) --output-on-failure

# libFuzzer builds (clang); each target runs for FUZZ_SECONDS from its seed corpus
FUZZ_SECONDS ?= 30
fuzz: deps
	@cmake --preset fuzz >/dev/null
	@cmake --build --preset fuzz -j $(JOBS)
	cd build/fuzz && SKIFF_FUZZ_SECONDS=$(FUZZ_SECONDS) ctest -L fuzz -j $(JOBS) --output-on-failure

bench: release
	@set -e; for s in bench/*/run.sh; do [ -f "$$s" ] || continue; echo "== $$s"; bash "$$s"; done

clean:
	rm -rf build
