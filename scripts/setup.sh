#!/usr/bin/env bash
# Installs everything Rudder needs on a fresh Debian machine, then builds it.
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Kernel tools the data planes drive (the container image installs the same list)...
packages=(iptables nftables conntrack iproute2)
# ...the eBPF data plane's toolchain and runtime: clang compiles bpf/ at setup, bpftool writes
# vmlinux.h from the kernel's BTF, libbpf1 is what the agent loads programs through...
bpf_packages=(clang-19 llvm-19 libbpf-dev libbpf1 bpftool)
# ...and what the lab, the tests and the benchmark use (setpriv is in util-linux; nginx serves
# the benchmark's target pod, started by the benchmark inside a lab namespace only).
lab_packages=(iputils-ping util-linux curl wrk nginx-light)
missing=()
for p in "${packages[@]}" "${bpf_packages[@]}" "${lab_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No package may start a daemon in the machine's own namespace (nginx's would listen on :80).
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node dependencies: reinstall only when the lock file changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing node modules"
  npm ci --no-audit --no-fund --loglevel=error
fi

bash scripts/build-bpf.sh
npx tsc -p tsconfig.json
