#!/usr/bin/env bash
# `make container-check`: builds the Containerfile with podman and checks, inside the image,
# what an attendee on macOS or Windows does (docs/container.md):
#   1. lesson 03 bound to 0.0.0.0, reached from the host through the published port;
#   2. `make trace-03` with a client: strace works (the container has CAP_SYS_PTRACE);
#   3. `make step-01 STEP=--no-pause` with a client: the stepper works;
#   4. lesson 11 with the documented options serves through the published port; in a
#      container without them its message names seccomp and the run option;
#   5. `make test` (long: the whole workspace is built inside), with the documented options
#      and the one docs/container.md adds for bench-socks, at most TEST_TIMEOUT seconds (default
#      5400); where it stops at a failing test binary, the rest with --no-fail-fast too.
#      SKIP_TEST=1 leaves it out.
# Where the devcontainer CLI is installed, it also builds and starts .devcontainer/ through it
# and checks the container's options. It prints PASS or FAIL per check and a count. Not part of `make test` or CI.
#
# The base image: BASE_IMAGE if set; else localhost/debian:bookworm if podman has it; else
# one made here with debootstrap from Debian's packages (a machine without registry access);
# else docker.io/library/debian:bookworm. PODMAN_FLAGS carries podman's global options
# (default: runc and cgroupfs, which the hybrid-cgroup machine this was written on needs).
# The builds inside use a volume (sockets-by-hand-check-target) for target/, so the host's
# target/ is never touched; `podman volume rm sockets-by-hand-check-target` frees it.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/container-check
mkdir -p "$OUT"

read -r -a PODMAN <<<"podman ${PODMAN_FLAGS---runtime runc --cgroup-manager=cgroupfs}"
IMAGE=${IMAGE:-localhost/sockets-by-hand:check}
VOLUME=sockets-by-hand-check-target
NAME=sockets-by-hand-check-$$
# podman sets no default ulimits that this machine's runc accepts: give them, within the
# hard limits of this shell (nproc below its hard limit: runc refuses it equal, here).
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=65536
nproc=$(ulimit -Hu); { [ "$nproc" = unlimited ] || [ "$nproc" -gt 65536 ]; } && nproc=32768
LIMITS=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
# The options docs/container.md documents: CAP_SYS_PTRACE for strace and the stepper, no seccomp
# filter for io_uring (and the user namespaces of the network-namespace tests).
OPTIONS=(--cap-add=SYS_PTRACE --security-opt seccomp=unconfined)
# What docs/container.md adds for `make bench-socks` alone: /proc/sys writable, where bench-socks sets
# its own namespace's congestion control (a test of make test checks that it does).
BENCH_OPTIONS=(--security-opt unmask=/proc/sys)

passed=0
failed=0
pass() { echo "container-check: PASS $*"; passed=$((passed + 1)); }
fail() { echo "container-check: FAIL $*"; failed=$((failed + 1)); }
say() { echo "container-check: $*" >&2; }
inside() { "${PODMAN[@]}" exec "$NAME" bash -c "$1"; }

command -v podman >/dev/null || { say "podman is missing: apt-get install podman runc"; exit 2; }
start=$(date +%s)

# --- the base image -------------------------------------------------------------------
if [ -z "${BASE_IMAGE:-}" ]; then
  if "${PODMAN[@]}" image exists localhost/debian:bookworm; then
    BASE_IMAGE=localhost/debian:bookworm
  elif command -v debootstrap >/dev/null; then
    say "making localhost/debian:bookworm with debootstrap (about half a minute)"
    rootfs=$OUT/rootfs
    rm -rf "$rootfs"
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
    debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" \
      >"$OUT/debootstrap.log" 2>&1 || { say "debootstrap failed: $OUT/debootstrap.log"; exit 2; }
    # Like Debian's official image: the updates and security suites too (bookworm-security
    # carries the newer rustc-web).
    rm -f "$rootfs/etc/apt/sources.list"
    printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" \
      "Suites: bookworm bookworm-updates" "Components: main" \
      "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" "" \
      "Types: deb" "URIs: http://deb.debian.org/debian-security" "Suites: bookworm-security" \
      "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
      >"$rootfs/etc/apt/sources.list.d/debian.sources"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "${PODMAN[@]}" import - localhost/debian:bookworm >/dev/null ||
      { say "podman import failed"; exit 2; }
    rm -rf "$rootfs"
    BASE_IMAGE=localhost/debian:bookworm
  else
    BASE_IMAGE=docker.io/library/debian:bookworm
  fi
fi

# --- the image --------------------------------------------------------------------------
# A machine behind a TLS-inspecting proxy (this one) needs its CA bundle for cargo fetch.
secret=()
ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$ca" ] && secret=(--secret "id=cacert,src=$ca")
# A learner's work must never go into the image: where there is no my-exercises/ yet, make
# one with a marker for the build to leave out, and remove it after.
marker=""
if [ ! -e my-exercises ]; then
  mkdir my-exercises && marker=my-exercises/container-check-marker && echo check >"$marker"
fi
say "building $IMAGE from $BASE_IMAGE (log: $OUT/build.log)"
if "${PODMAN[@]}" build "${LIMITS[@]}" "${secret[@]}" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  -t "$IMAGE" -f Containerfile . >"$OUT/build.log" 2>&1; then
  built=1
else
  built=0
fi
[ -n "$marker" ] && rm -rf my-exercises
if [ "$built" = 1 ]; then
  pass "the image builds from $BASE_IMAGE ($("${PODMAN[@]}" run --rm "${LIMITS[@]}" "$IMAGE" rustc --version))"
else
  fail "the image does not build: $OUT/build.log"
  echo "container-check: $passed passed, $failed failed"
  exit 1
fi
if "${PODMAN[@]}" run --rm "${LIMITS[@]}" "$IMAGE" test ! -e /workshop/target -a ! -e /workshop/my-exercises -a ! -e /workshop/.git; then
  pass "the image holds no target/, no my-exercises/ and no .git (.containerignore)"
else
  fail "the image holds target/, my-exercises/ or .git"
fi

# --- the dev container, through the devcontainer CLI (npm @devcontainers/cli) -------------
# Driven by podman through a wrapper that adds this machine's options (PODMAN_FLAGS, the
# ulimits, the CA secret). It checks that .devcontainer/devcontainer.json builds and that
# its container has the documented options: no seccomp filter, CAP_SYS_PTRACE.
if command -v devcontainer >/dev/null; then
  wrap=$OUT/podman-for-devcontainer
  {
    echo '#!/usr/bin/env bash'
    printf 'podman=(%s)\n' "$(printf '%q ' "${PODMAN[@]}")"
    printf 'limits=(%s)\n' "$(printf '%q ' "${LIMITS[@]}")"
    printf 'secret=(%s)\n' "$(printf '%q ' "${secret[@]}")"
    echo 'case "$1" in'
    echo '  build) shift; exec "${podman[@]}" build "${limits[@]}" "${secret[@]}" "$@" ;;'
    echo '  run | create) c=$1; shift; exec "${podman[@]}" "$c" "${limits[@]}" "$@" ;;'
    echo '  *) exec "${podman[@]}" "$@" ;;'
    echo 'esac'
  } >"$wrap"
  chmod +x "$wrap"
  # devcontainer.json names Debian's image on its registry; without a registry, the local
  # one stands in under that name.
  if [ "$BASE_IMAGE" = localhost/debian:bookworm ] &&
    ! "${PODMAN[@]}" image exists docker.io/library/debian:bookworm; then
    "${PODMAN[@]}" tag localhost/debian:bookworm docker.io/library/debian:bookworm
  fi
  label=sockets-by-hand-check=devcontainer-$$
  if devcontainer build --docker-path "$wrap" --workspace-folder "$ROOT" \
    --image-name localhost/sockets-by-hand:devcontainer >"$OUT/devcontainer.log" 2>&1 &&
    devcontainer up --docker-path "$wrap" --workspace-folder "$ROOT" --id-label "$label" \
      >>"$OUT/devcontainer.log" 2>&1; then
    status=$(devcontainer exec --docker-path "$wrap" --workspace-folder "$ROOT" --id-label "$label" \
      bash -c 'cd /workshop && test -f Containerfile && grep -E "^(Seccomp|CapEff):" /proc/self/status' 2>>"$OUT/devcontainer.log")
    caps=$(awk '/^CapEff:/ { print $2 }' <<<"$status")
    if grep -q '^Seccomp:[[:space:]]*0' <<<"$status" && [ -n "$caps" ] && (((0x$caps >> 19) & 1)); then
      pass "devcontainer build and up: the checkout at /workshop, no seccomp filter, CAP_SYS_PTRACE"
    else
      fail "the dev container lacks the options: $status (log: $OUT/devcontainer.log)"
    fi
  else
    fail "devcontainer build or up failed: $OUT/devcontainer.log"
  fi
  "${PODMAN[@]}" ps -aq --filter "label=$label" | xargs -r "${PODMAN[@]}" rm -f -t 0 >/dev/null
else
  echo "container-check: SKIP the dev container (no devcontainer CLI: npm install -g @devcontainers/cli)"
fi

# --- the container the checks run in, with the documented options ------------------------
# A free host port for the published 23333 (docs/container.md says -p 23333:23333; here another
# program may hold 23333). Published on the host's loopback only.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${PODMAN[@]}" volume exists "$VOLUME" || "${PODMAN[@]}" volume create "$VOLUME" >/dev/null
cleanup() { "${PODMAN[@]}" rm -f -t 0 "$NAME" >/dev/null 2>&1; }
trap cleanup EXIT
"${PODMAN[@]}" run -d --name "$NAME" "${LIMITS[@]}" "${OPTIONS[@]}" \
  -p "127.0.0.1:$port:23333" -v "$VOLUME:/workshop/target" "$IMAGE" sleep infinity >/dev/null ||
  { fail "the container does not start"; exit 1; }

say "building the lessons and the stepper (release) inside"
inside 'cargo build -q --release -p sockets-by-hand --bins -p step --bin step' >"$OUT/build-release.log" 2>&1 ||
  fail "cargo build --release inside: $OUT/build-release.log"

# Polls for up to 60 s until `test` (a shell condition run inside) holds.
wait_inside() {
  for _ in $(seq 1 600); do inside "$1" && return 0; sleep 0.1; done
  return 1
}
# Starts a command inside in a session of its own, so that it and its children stop together.
start_inside() {
  "${PODMAN[@]}" exec -e "JOB=$1" -e "CMD=$2" "$NAME" bash -c \
    'cd /workshop && setsid bash -c "echo \$\$ >/tmp/$JOB.pid; exec $CMD" >/tmp/$JOB.out 2>&1 </dev/null &'
}
stop_inside() { inside "kill -INT -- -\$(cat /tmp/$1.pid) 2>/dev/null; sleep 0.2; kill -KILL -- -\$(cat /tmp/$1.pid) 2>/dev/null; true"; }
# One echo conversation from the host through the published port: hello -> olleh.
talk_from_host() {
  printf 'hello\nq\n' | timeout 10 nc -N 127.0.0.1 "$port" 2>&1
}

# 1. lesson 03, as a learner starts it, reached from the host.
start_inside l03 "make lesson-03 ARGS='-i 0.0.0.0'"
if wait_inside 'grep -q "listening on" /tmp/l03.out'; then
  reply=$(talk_from_host)
  if [ "$reply" = $'Welcome buddy!\nolleh' ]; then
    pass "make lesson-03 ARGS='-i 0.0.0.0' answers the host's nc through the published port"
  else
    fail "lesson 03 through the published port answered: $reply"
  fi
else
  fail "lesson 03 did not start: $(inside 'cat /tmp/l03.out')"
fi
stop_inside l03

# 2. make trace-03 with a client inside.
start_inside t03 "make trace-03"
if wait_inside 'grep -q "listening on" /tmp/t03.out'; then
  reply=$(inside "printf 'hi\nq\n' | timeout 10 nc -N 127.0.0.1 23333")
  wait_inside 'grep -q "shutdown(" /tmp/t03.out'
  if [ "$reply" = $'Welcome buddy!\nih' ] && inside 'grep -q "accept" /tmp/t03.out && grep -qF "read(4<TCP:[127.0.0.1:23333->" /tmp/t03.out && grep -qF "\"hi\\n" /tmp/t03.out'; then
    pass "make trace-03: strace shows the accept and the client's read"
  else
    fail "make trace-03 (reply: $reply): $(inside 'tail -5 /tmp/t03.out')"
  fi
else
  fail "make trace-03 did not start: $(inside 'tail -5 /tmp/t03.out')"
fi
inside 'cat /tmp/t03.out' >"$OUT/trace-03.out"
stop_inside t03

# 3. make step-01 STEP=--no-pause with a client inside.
start_inside s01 "make step-01 STEP=--no-pause"
if wait_inside 'grep -q "listening on" /tmp/s01.out'; then
  reply=$(inside 'timeout 10 nc 127.0.0.1 23333 </dev/null')
  wait_inside '! kill -0 $(cat /tmp/s01.pid) 2>/dev/null'
  if [[ $reply == "Hello there! "* ]] && inside 'grep -q "accept" /tmp/s01.out && grep -q "at lessons/01-hello.rs:[0-9]*  match accept" /tmp/s01.out'; then
    pass "make step-01 STEP=--no-pause: the stepper shows the calls with their source lines"
  else
    fail "make step-01 (reply: $reply): $(inside 'tail -5 /tmp/s01.out')"
  fi
else
  fail "make step-01 did not start: $(inside 'tail -5 /tmp/s01.out')"
fi
inside 'cat /tmp/s01.out' >"$OUT/step-01.out"
stop_inside s01

# 4. lesson 11 with the documented options, from the host; then without them.
start_inside l11 "target/release/lesson-11 -i 0.0.0.0"
if wait_inside 'grep -q "listening on" /tmp/l11.out'; then
  reply=$(talk_from_host)
  if [ "$reply" = $'Welcome buddy!\nolleh' ]; then
    pass "lesson 11 (io_uring) serves the host with $(printf '%s ' "${OPTIONS[@]}")"
  else
    fail "lesson 11 through the published port answered: $reply"
  fi
else
  fail "lesson 11 did not start with the documented options: $(inside 'cat /tmp/l11.out')"
fi
stop_inside l11
refused=$("${PODMAN[@]}" run --rm "${LIMITS[@]}" -v "$VOLUME:/workshop/target:ro" "$IMAGE" \
  target/release/lesson-11 2>&1)
echo "$refused" >"$OUT/lesson-11-default-options.out"
if grep -q 'io_uring_setup: E' <<<"$refused" && grep -q 'seccomp=unconfined' <<<"$refused" &&
  ! grep -q 'has no io_uring' <<<"$refused"; then
  pass "lesson 11 without the options names seccomp: $(head -1 <<<"$refused")"
  sed 's/^/    /' <<<"$refused"
else
  fail "lesson 11 without the options said: $refused"
fi

# 5. make test, the whole suite inside (cargo test where nextest is absent, as in the image),
# in a container that has the bench-socks option too.
if [ -z "${SKIP_TEST:-}" ]; then
  cleanup
  "${PODMAN[@]}" run -d --name "$NAME" "${LIMITS[@]}" "${OPTIONS[@]}" "${BENCH_OPTIONS[@]}" \
    -v "$VOLUME:/workshop/target" "$IMAGE" sleep infinity >/dev/null ||
    fail "the container for make test does not start"
  say "make test inside (log: $OUT/make-test.log); this builds the workspace and takes long"
  t0=$(date +%s)
  # Bounded: cargo test (no nextest in the image) has no per-test timeout of its own.
  if inside "cd /workshop && timeout ${TEST_TIMEOUT:-5400} make test" >"$OUT/make-test.log" 2>&1; then
    pass "make test inside the container ($(($(date +%s) - t0)) s)"
  else
    fail "make test inside the container ($(($(date +%s) - t0)) s): $OUT/make-test.log"
  fi
  grep -E '^test result:|FAILED|panicked' "$OUT/make-test.log" | sort | uniq -c | sort -rn | head -20
  # cargo test (the image has no nextest) stops at the first test binary that fails: where
  # make test failed, run the rest too, so that the report names every failing test.
  if grep -q 'error: test failed' "$OUT/make-test.log"; then
    say "make test stopped at a failing test binary; the whole suite with --no-fail-fast (log: $OUT/no-fail-fast.log)"
    inside "cd /workshop && timeout ${TEST_TIMEOUT:-5400} cargo test --workspace --all-targets --no-fail-fast" \
      >"$OUT/no-fail-fast.log" 2>&1
    awk '/^test result:/ { p += $4; f += $6 } END { printf "container-check: the whole suite: %d tests passed, %d failed\n", p, f }' \
      "$OUT/no-fail-fast.log"
    grep -E '^test .* FAILED$' "$OUT/no-fail-fast.log" | sed 's/^/    /'
  fi
fi

echo "container-check: wall time $(($(date +%s) - start)) s"
echo "container-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
