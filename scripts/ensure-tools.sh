#!/usr/bin/env bash
# Makes sure the system tools the tests use are on this machine: strace (the trace tests and
# the exercise checker), nc from netcat-openbsd (workshop-style clients), curl (the SOCKS5
# lessons), redis-server (lesson 13), unshare and ip (a test's private network namespace),
# systemd-socket-activate (lesson 17), tcpdump and tshark (they must read lesson 18's pcap
# files), PySocks (lesson 16's UDP client), rsvg-convert (every diagram must render) and,
# optionally, chromium (a headless screenshot of a diagram page). What is missing is installed
# with apt-get (as root, or through sudo); where that is impossible, the exact command to
# run is printed and the script fails.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

# --bench: the other SOCKS5 servers `make bench-socks` compares with. Optional: where they
# cannot be installed, the benchmark skips them with a note, so this never fails.
if [ "${1:-}" = "--bench" ]; then
  want=()
  have microsocks || want+=(microsocks)
  { have danted || [ -x /usr/sbin/danted ]; } || want+=(dante-server)
  # iperf3: the stream under lesson 18's capture benchmark.
  have iperf3 || want+=(iperf3)
  if [ ${#want[@]} -gt 0 ]; then
    echo "ensure-tools: installing ${want[*]} for the benchmark" >&2
    if [ "$(id -u)" = 0 ] && have apt-get; then
      export DEBIAN_FRONTEND=noninteractive
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null; } ||
        echo "ensure-tools: could not install ${want[*]}; bench-socks will skip them" >&2
    else
      echo "ensure-tools: not root; bench-socks will skip ${want[*]} (sudo apt-get install -y ${want[*]})" >&2
    fi
  fi
  exit 0
fi

missing=()
have strace || missing+=(strace)
# The tests use OpenBSD nc's -N (shutdown the socket after EOF on stdin).
if ! have nc || ! nc -h 2>&1 | grep -q -- '-N'; then missing+=(netcat-openbsd); fi
have curl || missing+=(curl)
have redis-server || missing+=(redis-server)
have redis-cli || missing+=(redis-tools)
# unshare (util-linux): the open-proxy warning test binds 0.0.0.0 only inside a private
# network namespace of its own.
have unshare || missing+=(util-linux)
# ip (iproute2): the name-resolution tests bring up the loopback of their own namespace.
have ip || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
# systemd-socket-activate (systemd): lesson 17's socket-activation test starts the lesson with it.
have systemd-socket-activate || missing+=(systemd)
# tcpdump and tshark: lesson 18's pcap files must be read by both (tshark asks a debconf
# question on install, which DEBIAN_FRONTEND=noninteractive below answers with its default).
have tcpdump || [ -x /usr/sbin/tcpdump ] || [ -x /usr/bin/tcpdump ] || missing+=(tcpdump)
have tshark || missing+=(tshark)
# python3-socks (PySocks): lesson 16's tests relay its UDP datagrams (the system python's).
{ [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import socks' 2>/dev/null; } || missing+=(python3-socks)
# rsvg-convert (librsvg2-bin): every diagram of docs/diagrams/ must render without an error.
have rsvg-convert || missing+=(librsvg2-bin)

# chromium: the diagram test's screenshot of a page, headless. Optional: where it cannot be
# installed, that one test says so and is skipped.
if ! have chromium && ! have chromium-browser && [ "$(id -u)" = 0 ] && have apt-get; then
  echo "ensure-tools: installing chromium (the diagram screenshot test)" >&2
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; } ||
    echo "ensure-tools: could not install chromium; the screenshot test will be skipped" >&2
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "ensure-tools: installing ${missing[*]}" >&2
if have apt-get; then
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    if have sudo && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "ensure-tools: not root; run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "ensure-tools: no apt-get here; install these with your package manager: ${missing[*]}" >&2
  exit 1
fi

for tool in strace nc curl redis-server redis-cli unshare tshark rsvg-convert; do
  have "$tool" || { echo "ensure-tools: $tool is still missing after the install" >&2; exit 1; }
done
