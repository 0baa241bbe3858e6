# sockets-by-hand: the workshop's front door. `make` (or `make help`) lists the lessons and
# the commands; a command's entry in that list is the `## make NAME  what it does` line just
# above its target.
#
# Every lesson, a file lessons/NN-topic.rs or a folder lessons/NN-topic/ (main.rs + modules),
# gets its lesson-NN, trace-NN, step-NN and provoke-NN targets from the pattern rules below,
# and its strace filter and provocations from its table in lessons/lessons.toml: a new lesson
# needs no edit here. The title `make help` prints is the first line of the lesson's header.

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

# What each lesson is, from lessons/lessons.toml: TRACE_DEFAULT, TRACE_NN (strace's
# -e trace= filter of lesson NN), PROVOKE_NN and EXERCISE_NUMBERS, written by
# scripts/lessons.awk into target/lessons.mk whenever the table is newer. The Rust runtime's
# start-up calls are cut off anyway: the trace is shown from the first socket().
LESSONS_MK := target/lessons.mk
$(LESSONS_MK): lessons/lessons.toml scripts/lessons.awk
	@mkdir -p $(@D)
	@awk -f scripts/lessons.awk lessons/lessons.toml > $@.$$$$ && mv $@.$$$$ $@
include $(LESSONS_MK)

trace_filter = $(TRACE_$(1))

# The stepper stops at the calls of the same filter, as plain syscall names (strace's
# %network class spelled out). STEP carries the stepper's own options (STEP='--only accept'
# narrows the list: the last --only counts); ARGS stays the lesson's.
NETWORK_CALLS := socket,socketpair,connect,accept,accept4,sendto,recvfrom,sendmsg,recvmsg,shutdown,bind,listen,getsockname,getpeername,setsockopt,getsockopt
step_calls = $(subst %network,$(NETWORK_CALLS),$(call trace_filter,$(1)))
STEP ?=

# `make provoke-NN` runs the provocations of lesson NN's table (PROVOKE_NN; provoke/:
# `provoke --help`) against the lesson running at ADDR (default: its default port), one line
# each. A '+' joins a kind and its arguments. The scenarios (restart, sigpending,
# blocking-dns, fail-open, frozen-store) start the lesson themselves, with --mistake
# $(MISTAKE) if set.
PROVOKE_SCENARIOS := restart sigpending blocking-dns fail-open frozen-store hot-restart capture-echo capture-ipv6 capture-burst
ADDR    ?=
MISTAKE ?=

.DEFAULT_GOAL := help
.PHONY: help test lint deps build compare bench-socks fuzz soak diagrams

# The lessons with their titles (the first line of each header), then every `## ` line that
# stands just above a rule, in the order of this file.
## make help  this list
help:
	@echo "sockets-by-hand: TCP socket programming on Linux from the system calls up"
	@echo
	@for f in $(LESSON_FILES); do \
	  n=$$(echo $$f | cut -d/ -f2 | cut -c1-2); \
	  title=$$(sed -n '1s|^//! *Lesson [0-9]* — *||p' $$f | sed 's/\.$$//'); \
	  case " $(EXERCISE_NUMBERS) " in *" $$n "*) ex=" · exercise-$$n" ;; *) ex= ;; esac; \
	  printf '  make lesson-%s   %s%s\n' "$$n" "$$title" "$$ex"; \
	done
	@echo
	@awk '/^## / { l = substr($$0, 4); if (match(l, /   */)) \
	    l = sprintf("%-20s %s", substr(l, 1, RSTART - 1), substr(l, RSTART + RLENGTH)); \
	    doc = doc "  " l "\n"; next } \
	  /^[^#\t =][^=]*:([^=]|$$)/ { printf "%s", doc } { doc = "" }' $(firstword $(MAKEFILE_LIST))

## make build  build every binary of the workspace (release)
build:
	$(CARGO) build $(CARGO_PROFILE) --workspace --bins

# Builds the lessons package only (none of the tools' dependencies).
## make lesson-NN  build and run lesson NN; flags in ARGS: ARGS='-p 4000' (ARGS=--help lists them)
lesson-%:
	@test -n "$(call lesson_file,$*)" || { echo "no lesson $* (make help lists them)" >&2; exit 2; }
	@$(CARGO) build -q $(CARGO_PROFILE) --bin lesson-$*
	@echo "running lesson $* (Ctrl-C stops it); it prints how to connect:" >&2
	$(BIN_DIR)/lesson-$* $(ARGS)

# strace -f: follow forks and threads; -yy: show sockets with their addresses;
# -o '|sed ...': print from the first socket() on, hiding the runtime's start-up, and
# leave out the lesson's own log lines (writes to fd 2), which the terminal shows anyway.
## make trace-NN  the same under strace, from the lesson's first socket() (make trace-03)
trace-%: deps
	@test -n "$(call lesson_file,$*)" || { echo "no lesson $* (make help lists them)" >&2; exit 2; }
	@test -n "$(TRACE_$*)" || { echo "lesson $* has no [lesson.$*] in lessons/lessons.toml" >&2; exit 2; }
	@$(CARGO) build -q $(CARGO_PROFILE) --bin lesson-$*
	strace -f -yy -q -e trace=$(call trace_filter,$*) \
	  -o '|sed -u -n "/socket(/,\$$ { /write(2</d; p; }"' $(BIN_DIR)/lesson-$* $(ARGS)

# The stepper (step/): stops before each call of the lesson's filter, shows it decoded with
# its source line and the kernel's view of the sockets, runs it on Enter.
## make step-NN  step through lesson NN's system calls, one per Enter (STEP='--only accept')
step-%:
	@test -n "$(call lesson_file,$*)" || { echo "no lesson $* (make help lists them)" >&2; exit 2; }
	@test -n "$(TRACE_$*)" || { echo "lesson $* has no [lesson.$*] in lessons/lessons.toml" >&2; exit 2; }
	@$(CARGO) build -q $(CARGO_PROFILE) -p sockets-by-hand --bin lesson-$* -p step --bin step
	$(BIN_DIR)/step --only $(call step_calls,$*) $(STEP) -- $(BIN_DIR)/lesson-$* $(ARGS)

# The diagram (step/src/diagram/): lesson NN run under the stepper's recorder, a scripted
# client, the packets captured in a network namespace of its own (so as root, as CI runs),
# drawn as one SVG: docs/diagrams/NN-topic.svg (and .rows, what it was drawn from).
## make diagram-NN  draw lesson NN's connection, calls and packets (ARGS='--mistake plain-close')
diagram-%:
	@test -n "$(call lesson_file,$*)" || { echo "no lesson $* (make help lists them)" >&2; exit 2; }
	@$(CARGO) build -q $(CARGO_PROFILE) -p sockets-by-hand --bin lesson-$* -p step --bin step --bin diagram
	$(BIN_DIR)/diagram $* --step $(BIN_DIR)/step --bin-dir $(BIN_DIR) $(if $(ARGS),-- $(ARGS))

## make diagrams  every lesson's diagram again, and the plain close's (docs/diagrams/)
diagrams:
	@$(CARGO) build -q $(CARGO_PROFILE) -p sockets-by-hand --bins -p step --bin step --bin diagram
	@for n in $$($(BIN_DIR)/diagram --list); do \
	  $(MAKE) -s --no-print-directory diagram-$$n || exit 1; \
	done
	@$(MAKE) -s --no-print-directory diagram-03 ARGS='--mistake plain-close'

# Builds the provoke client (and the lesson, which the scenarios start themselves), then
# runs PROVOKE_NN's kinds one by one; fails if any of them saw the failure.
## make provoke-NN  provoke lesson NN's classic mistakes (run it with --mistake NAME first)
provoke-%:
	@test -n "$(PROVOKE_$*)" || { echo "no provocation for lesson $* (lessons/lessons.toml lists them)" >&2; exit 2; }
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

# What make holds for lesson NN, all derived (tests/lesson_index.rs compares it with
# lessons/lessons.toml and the lesson's own files): one `name=value` line each.
print-lesson-%:
	@echo 'file=$(call lesson_file,$*)'
	@echo 'trace=$(TRACE_$*)'
	@echo 'provoke=$(PROVOKE_$*)'
	@echo 'step=$(call step_calls,$*)'
	@echo 'exercise=$(if $(filter $*,$(EXERCISE_NUMBERS)),yes,no)'

## make deps  install the system tools the lessons and tests use (strace, nc, curl, ...)
deps:
	@scripts/ensure-tools.sh

# Lesson 13 keeps its allowlist in Redis: before lesson-13, trace-13 and step-13 (whose recipes are
# the pattern rules above), make sure a Redis answers, starting a private, memory-only one
# if none does (installing redis-server first if missing, like `make deps`), and print
# the redis-cli lines that allow and deny 127.0.0.1.
.PHONY: redis-13
lesson-13 trace-13 step-13: redis-13
redis-13: deps
	@scripts/redis-13.sh $(ARGS)

# The workspace's binaries first: tests of one package run another's (tests/provoke.rs runs
# provoke, tools' tests run the lessons), and cargo builds only a package's own binaries for
# its tests.
## make test  make deps, then every test of the workspace
test: deps
	$(CARGO) build -q --workspace --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --all-targets; \
	else \
	  echo "cargo-nextest not found: running cargo test instead" >&2; \
	  $(CARGO) test --workspace --all-targets; \
	fi

## make lint  cargo fmt --check and cargo clippy -D warnings
lint:
	@$(CARGO) fmt --version >/dev/null 2>&1 && $(CARGO) clippy --version >/dev/null 2>&1 || \
	  rustup component add rustfmt clippy || \
	  { echo "lint needs rustfmt and clippy: rustup component add rustfmt clippy" >&2; exit 1; }
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The comparison harness: every echo lesson and the tokio reference under the same load.
## make compare  the I/O models side by side (QUICK=1: under a minute)
compare: deps
	$(CARGO) build -q --release --workspace --bins
	target/release/compare $(if $(QUICK),--quick) $(COMPARE_ARGS)

# The relay benchmark; microsocks and dante are installed if possible, skipped otherwise.
## make bench-socks  lessons 12, 14 and 16 against microsocks, dante and no proxy; 17's restarts
bench-socks:
	@scripts/ensure-tools.sh --bench
	$(CARGO) build -q --release --workspace --bins
	target/release/bench-socks $(BENCH_ARGS)
	target/release/bench-restart $(BENCH_RESTART_ARGS)

# Lesson 18's capture (recvfrom loop and --ring) against tcpdump on the same traffic: an
# iperf3 stream plus 10,000 short connections, snap length 96, in a network namespace.
.PHONY: bench-capture
## make bench-capture  lesson 18's capture (recvfrom, --ring) against tcpdump on the same traffic
bench-capture:
	@scripts/ensure-tools.sh --bench
	@scripts/ensure-tools.sh
	$(CARGO) build -q --release -p sockets-by-hand --bin lesson-18 -p tools --bin bench-capture
	target/release/bench-capture $(BENCH_ARGS)

# The protocol parsers' fuzz targets (protocols/fuzz/), FUZZ_SECONDS each (default 60):
# installs cargo-fuzz if missing, prints executions and coverage per target, fails on a
# crash and says where the input is.
## make fuzz  fuzz the SOCKS5, UDP header, RESP, echo, frame and pcap parsers (FUZZ_SECONDS=60 each)
fuzz:
	@scripts/fuzz.sh

# The soak: 10,000 connections against lessons 04, 05, 08, 10 and 12, lesson 13 through
# three Redis restarts, lesson 12 under resets; the figures go to target/soak/report.md.
## make soak  10,000 connections per server, Redis restarts (QUICK=1: under a minute)
soak: deps
	$(CARGO) build -q --release --workspace --bins
	target/release/soak $(if $(QUICK),--quick) $(SOAK_ARGS)

# The docs' snippets are cut from the lessons: every fenced block after an
# `<!-- include lessons/FILE [name] -->` line is the region `// [name]` … `// [/name]` of that
# file (workshop/src/docs.rs). `make docs` rewrites them; the test suite fails when one is stale.
.PHONY: docs
## make docs  copy the lessons' // [regions] into the docs' Rust blocks
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
# lessons already built are reused. `make regen-skeletons` regenerates exercises/NN/ from the
# lessons.
WORKSHOP := target/release/workshop
.PHONY: workshop-tool regen-skeletons check
workshop-tool:
	@$(CARGO) build -q --release -p workshop --bin workshop

## make exercise-NN  your own copy of lesson NN, its calls to write (lessons marked above)
exercise-%: workshop-tool
	@$(WORKSHOP) new $*
	@CARGO_TARGET_DIR=$(CURDIR)/target $(CARGO) build -q --release --manifest-path my-exercises/$*/Cargo.toml
	@echo "running your exercise $* (Ctrl-C stops it); make check-$* checks it:" >&2
	target/release/exercise-$* $(ARGS)

## make check-NN  check your exercise NN step by step
check-%: workshop-tool
	@$(WORKSHOP) $(if $(WATCH),watch,check) $*

## make watch-NN  check exercise NN again on every save
watch-%: workshop-tool
	@$(WORKSHOP) watch $*

## make check  your progress
check: workshop-tool
	@$(WORKSHOP) progress

## make hint-NN  the next hint for exercise NN
hint-%: workshop-tool
	@$(WORKSHOP) hint $*

## make reset-NN  start exercise NN afresh (asks first)
reset-%: workshop-tool
	@$(WORKSHOP) reset $*

## make regen-skeletons  rewrite exercises/NN/ from the lessons, after a lesson changed
regen-skeletons:
	$(CARGO) run -q -p workshop --bin workshop -- gen

# The container for attendees not on Linux (Containerfile, .devcontainer/), built with podman
# and tried as an attendee would: lessons reached through a published port, strace, the
# stepper, lesson 11's seccomp message, then `make test` inside (SKIP_TEST=1 leaves it out).
# Needs podman (apt-get install podman runc); never part of `make test` or CI.
.PHONY: container-check
## make container-check  the Containerfile, built and tried with podman (docs/container.md)
container-check:
	@scripts/container-check.sh
