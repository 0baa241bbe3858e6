# sockets-by-hand: the workshop's front door. `make` (or `make help`) lists the lessons.
#
#   make lesson-NN [ARGS="..."]   build (release) and run lesson NN
#   make trace-NN  [ARGS="..."]   the same under strace, from the lesson's first socket()
#   make step-NN   [ARGS="..."] [STEP="..."]   the same under the stepper, one call per Enter
#   make provoke-NN [ADDR=host:port] [MISTAKE=NAME]   provoke lesson NN's classic mistakes
#   make test                     install the tools the tests need, then run every test
#   make lint                     cargo fmt --check and clippy -D warnings
#   make docs                     copy the lessons' marked regions into the docs' Rust blocks
#   make compare [QUICK=1]        the I/O models side by side (target/compare/report.*)
#   make bench-socks              lessons 12 and 14 against microsocks, dante and no proxy
#   make fuzz [FUZZ_SECONDS=60]   the protocol parsers' fuzz targets (cargo-fuzz, nightly)
#   make exercise-NN [ARGS="..."] your own copy of lesson NN, with its calls to write
#   make check-NN                 check it step by step; make check: progress; hint-NN, reset-NN
#   make soak [QUICK=1]           10,000 connections per server (target/soak/report.md)
#   make container-check          build the Containerfile with podman, run lessons and tests inside
#
# Every lesson, a file lessons/NN-topic.rs or a folder lessons/NN-topic/ (main.rs + modules),
# gets its lesson-NN and trace-NN targets from the pattern rules below; a new lesson needs no
# edit here (at most a TRACE_NN line for its strace filter). The title `make help` prints
# is the first line of the lesson's header, the one place a lesson describes itself.

CARGO   ?= cargo
PROFILE ?= release
ARGS    ?=

ifeq ($(PROFILE),release)
CARGO_PROFILE := --release
else
CARGO_PROFILE := --profile $(PROFILE)
endif
BIN_DIR := target/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))

# A lesson's main file: lessons/NN-topic.rs, or lessons/NN-topic/main.rs.
LESSON_FILES := $(sort $(wildcard lessons/[0-9][0-9]-*.rs lessons/[0-9][0-9]-*/main.rs))
lesson_file = $(firstword $(wildcard lessons/$(1)-*.rs lessons/$(1)-*/main.rs))

# strace filters (-e trace=...). TRACE_NN overrides TRACE_DEFAULT for lesson NN. The Rust
# runtime's start-up calls are cut off anyway: the trace is shown from the first socket().
TRACE_DEFAULT := %network,read,write,close,fcntl,poll,ppoll,select,pselect6,epoll_create1,epoll_ctl,epoll_wait,epoll_pwait,clone,clone3,fork,vfork,wait4,kill,rt_sigtimedwait,signalfd4,io_uring_setup,io_uring_enter,exit_group
TRACE_00 := socket,connect,getsockname,fcntl,poll,read,write,shutdown,close,exit_group
TRACE_01 := socket,setsockopt,bind,listen,getsockname,accept,accept4,getpeername,write,close,exit_group
TRACE_02 := $(TRACE_01)
TRACE_03 := $(TRACE_01),read,shutdown
# 04: also the sigaction calls (SIGCHLD without SA_RESTART), the fork (glibc calls clone) and
# the handler's wait4 loop; the SIGCHLD deliveries show whatever the filter.
TRACE_04 := $(TRACE_03),rt_sigaction,clone,clone3,fork,vfork,wait4
# 14: also the pipes (pipe2) and the splices that move the relayed bytes.
TRACE_14 := $(TRACE_DEFAULT),pipe2,splice
# 15: also io_uring_register (the provided-buffer ring).
TRACE_15 := $(TRACE_DEFAULT),io_uring_register

trace_filter = $(or $(TRACE_$(1)),$(TRACE_DEFAULT))

# The stepper stops at the calls of the same filter, as plain syscall names (strace's
# %network class spelled out). STEP carries the stepper's own options (STEP='--only accept'
# narrows the list: the last --only counts); ARGS stays the lesson's.
NETWORK_CALLS := socket,socketpair,connect,accept,accept4,sendto,recvfrom,sendmsg,recvmsg,shutdown,bind,listen,getsockname,getpeername,setsockopt,getsockopt
step_calls = $(subst %network,$(NETWORK_CALLS),$(call trace_filter,$(1)))
STEP ?=

# The provocations that fit each lesson's mistakes (provoke/: `provoke --help`), run by
# `make provoke-NN` against the lesson running at ADDR (default: its default port), one
# line each. A '+' joins a kind and its arguments. The scenarios (restart, sigpending,
# blocking-dns, fail-open) start the lesson themselves, with --mistake $(MISTAKE) if set.
PROVOKE_01 := restart
PROVOKE_02 := flood+1200
PROVOKE_03 := split coalesced quit-then-junk quit-slow-reader
PROVOKE_04 := many+20 half-close
PROVOKE_05 := many+1100+--max-threads+1001
PROVOKE_06 := split slowloris+10 coalesced
PROVOKE_07 := flood+1100
PROVOKE_08 := many+50 coalesced
PROVOKE_09 := sigpending
PROVOKE_10 := many+20 slow-reader idle
PROVOKE_11 := coalesced+50 many+50
PROVOKE_12 := blocking-dns socks-refused socks-half-close socks-stalled-reader
PROVOKE_13 := fail-open frozen-store
PROVOKE_14 := socks-half-close+--bytes+2000000+--tries+10
PROVOKE_15 := burst+64
PROVOKE_SCENARIOS := restart sigpending blocking-dns fail-open frozen-store
ADDR    ?=
MISTAKE ?=

.DEFAULT_GOAL := help
.PHONY: help test lint tools build compare bench-socks fuzz soak

help:
	@echo "sockets-by-hand: TCP socket programming on Linux from the system calls up"
	@echo
	@for f in $(LESSON_FILES); do \
	  n=$$(echo $$f | cut -d/ -f2 | cut -c1-2); \
	  title=$$(sed -n '1s|^//! *Lesson [0-9]* — *||p' $$f | sed 's/\.$$//'); \
	  printf '  make lesson-%s   %s\n' "$$n" "$$title"; \
	done
	@echo
	@echo "  make trace-NN    run lesson NN under strace (make trace-03)"
	@echo "  make step-NN     step through lesson NN's system calls, one per Enter (make step-01)"
	@echo "  make provoke-NN  provoke lesson NN's classic mistake: run it with --mistake NAME first"
	@echo "  make test        install strace, nc, curl, redis-server if missing; run every test"
	@echo "  make lint        cargo fmt --check and cargo clippy -D warnings"
	@echo "  make docs        copy the lessons' // [regions] into the docs' Rust blocks"
	@echo "  make compare     the I/O models side by side (QUICK=1: under a minute)"
	@echo "  make bench-socks lessons 12 and 14 against microsocks, dante and no proxy"
	@echo "  make fuzz        fuzz the SOCKS5, RESP and echo parsers (FUZZ_SECONDS=60 each)"
	@echo "  make soak        10,000 connections per server, Redis restarts (QUICK=1: < 1 min)"
	@echo "  make exercise-NN your own lesson NN to write (01 03 04 08 10 12); make check-NN checks it"
	@echo "  make check       your progress; make hint-NN the next hint; make reset-NN start afresh"
	@echo "  make container-check  the Containerfile, built and tried with podman (README: Not on Linux?)"
	@echo
	@echo "  Flags go in ARGS: make lesson-03 ARGS='-p 4000'; every lesson has --help."

build:
	$(CARGO) build $(CARGO_PROFILE) --workspace --bins

# Builds the lessons package only (none of the tools' dependencies).
lesson-%:
	@test -n "$(call lesson_file,$*)" || { echo "no lesson $* (make help lists them)" >&2; exit 2; }
	@$(CARGO) build -q $(CARGO_PROFILE) --bin lesson-$*
	@echo "running lesson $* (Ctrl-C stops it); it prints how to connect:" >&2
	$(BIN_DIR)/lesson-$* $(ARGS)

# strace -f: follow forks and threads; -yy: show sockets with their addresses;
# -o '|sed ...': print from the first socket() on, hiding the runtime's start-up, and
# leave out the lesson's own log lines (writes to fd 2), which the terminal shows anyway.
trace-%: tools
	@test -n "$(call lesson_file,$*)" || { echo "no lesson $* (make help lists them)" >&2; exit 2; }
	@$(CARGO) build -q $(CARGO_PROFILE) --bin lesson-$*
	strace -f -yy -q -e trace=$(call trace_filter,$*) \
	  -o '|sed -u -n "/socket(/,\$$ { /write(2</d; p; }"' $(BIN_DIR)/lesson-$* $(ARGS)

# The stepper (step/): stops before each call of the lesson's filter, shows it decoded with
# its source line and the kernel's view of the sockets, runs it on Enter.
step-%:
	@test -n "$(call lesson_file,$*)" || { echo "no lesson $* (make help lists them)" >&2; exit 2; }
	@$(CARGO) build -q $(CARGO_PROFILE) -p sockets-by-hand --bin lesson-$* -p step --bin step
	$(BIN_DIR)/step --only $(call step_calls,$*) $(STEP) -- $(BIN_DIR)/lesson-$* $(ARGS)

# Builds the provoke client (and the lesson, which the scenarios start themselves), then
# runs PROVOKE_NN's kinds one by one; fails if any of them saw the failure.
provoke-%:
	@test -n "$(PROVOKE_$*)" || { echo "no provocation for lesson $* (make help lists them)" >&2; exit 2; }
	@$(CARGO) build -q $(CARGO_PROFILE) -p provoke --bin provoke \
	  $(if $(call lesson_file,$*),-p sockets-by-hand --bin lesson-$*)
	@status=0; for k in $(PROVOKE_$*); do \
	  kind=$${k%%+*}; \
	  case " $(PROVOKE_SCENARIOS) " in \
	    *" $$kind "*) extra="$(if $(MISTAKE),--mistake $(MISTAKE))" ;; \
	    *) extra="$(if $(ADDR),--to $(ADDR))" ;; \
	  esac; \
	  $(BIN_DIR)/provoke $$(echo $$k | tr + ' ') $$extra || status=1; \
	done; exit $$status

tools:
	@scripts/ensure-tools.sh

# Lesson 13 keeps its allowlist in Redis: before lesson-13, trace-13 and step-13 (whose recipes are
# the pattern rules above), make sure a Redis answers, starting a private, memory-only one
# if none does (installing redis-server first if missing, like `make tools`), and print
# the redis-cli lines that allow and deny 127.0.0.1.
.PHONY: redis-13
lesson-13 trace-13 step-13: redis-13
redis-13: tools
	@scripts/redis-13.sh $(ARGS)

# The workspace's binaries first: tests of one package run another's (tests/provoke.rs runs
# provoke, tools' tests run the lessons), and cargo builds only a package's own binaries for
# its tests.
test: tools
	$(CARGO) build -q --workspace --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --all-targets; \
	else \
	  echo "cargo-nextest not found: running cargo test instead" >&2; \
	  $(CARGO) test --workspace --all-targets; \
	fi

lint:
	@$(CARGO) fmt --version >/dev/null 2>&1 && $(CARGO) clippy --version >/dev/null 2>&1 || \
	  rustup component add rustfmt clippy || \
	  { echo "lint needs rustfmt and clippy: rustup component add rustfmt clippy" >&2; exit 1; }
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The comparison harness: every echo lesson and the tokio reference under the same load.
compare: tools
	$(CARGO) build -q --release --workspace --bins
	target/release/compare $(if $(QUICK),--quick) $(COMPARE_ARGS)

# The relay benchmark; microsocks and dante are installed if possible, skipped otherwise.
bench-socks:
	@scripts/ensure-tools.sh --bench
	$(CARGO) build -q --release --workspace --bins
	target/release/bench-socks $(BENCH_ARGS)

# The protocol parsers' fuzz targets (protocols/fuzz/), FUZZ_SECONDS each (default 60):
# installs cargo-fuzz if missing, prints executions and coverage per target, fails on a
# crash and says where the input is.
fuzz:
	@scripts/fuzz.sh

# The soak: 10,000 connections against lessons 04, 05, 08, 10 and 12, lesson 13 through
# three Redis restarts, lesson 12 under resets; the figures go to target/soak/report.md.
soak: tools
	$(CARGO) build -q --release --workspace --bins
	target/release/soak $(if $(QUICK),--quick) $(SOAK_ARGS)

# The docs' snippets are cut from the lessons: every fenced block after an
# `<!-- include lessons/FILE [name] -->` line is the region `// [name]` … `// [/name]` of that
# file (workshop/src/docs.rs). `make docs` rewrites them; the test suite fails when one is stale.
.PHONY: docs
docs:
	$(CARGO) run -q -p workshop --bin docs

# The hands-on half (the specs in exercises/, the workshop tool in workshop/): `make exercise-NN`
# generates exercise NN from its lesson into my-exercises/NN/ (git-ignored, a crate of its own
# outside the workspace: a half-written exercise never breaks test, lint, compare or soak): the
# files with todo!()s, as tracked in exercises/NN/src/, and a crate root mounting the lesson's
# other files. The first time only; then it builds and runs it as lesson-NN runs the lesson.
# `make check-NN` checks it step by step (exit 0 all passed, 1 a step failed, 2 it could not be
# built or started; WATCH=1, or `make watch-NN`: again on every save); `make check` shows the
# progress; `make hint-NN` the next hint; `make reset-NN` asks, keeps the old copy as
# my-exercises/NN.old.K, then starts afresh.
# The learner's crate builds into target/ with the project's Cargo.lock: the dependencies the
# lessons already built are reused. `make exercises` regenerates the skeletons from the lessons.
WORKSHOP := target/release/workshop
.PHONY: workshop-tool exercises check
workshop-tool:
	@$(CARGO) build -q --release -p workshop --bin workshop

exercise-%: workshop-tool
	@$(WORKSHOP) new $*
	@CARGO_TARGET_DIR=$(CURDIR)/target $(CARGO) build -q --release --manifest-path my-exercises/$*/Cargo.toml
	@echo "running your exercise $* (Ctrl-C stops it); make check-$* checks it:" >&2
	target/release/exercise-$* $(ARGS)

check-%: workshop-tool
	@$(WORKSHOP) $(if $(WATCH),watch,check) $*

watch-%: workshop-tool
	@$(WORKSHOP) watch $*

check: workshop-tool
	@$(WORKSHOP) progress

hint-%: workshop-tool
	@$(WORKSHOP) hint $*

reset-%: workshop-tool
	@$(WORKSHOP) reset $*

exercises:
	$(CARGO) run -q -p workshop --bin workshop -- gen

# The container for attendees not on Linux (Containerfile, .devcontainer/), built with podman
# and tried as an attendee would: lessons reached through a published port, strace, the
# stepper, lesson 11's seccomp message, then `make test` inside (SKIP_TEST=1 leaves it out).
# Needs podman (apt-get install podman runc); never part of `make test` or CI.
.PHONY: container-check
container-check:
	@scripts/container-check.sh
