#!/usr/bin/env bash
# Compiles bpf/*.c into bpf/build/*.o (BPF, with BTF for CO-RE) against a vmlinux.h generated from
# the running kernel's BTF. Rebuilds only what is older than its sources.
set -euo pipefail
cd "$(dirname "$0")/../bpf"
mkdir -p build
clang=""
for c in clang-19 clang-16 clang; do
  if command -v "$c" >/dev/null 2>&1; then clang="$c"; break; fi
done
if [ -z "$clang" ]; then
  echo "build-bpf: clang is not installed (scripts/setup.sh installs it)" >&2
  exit 1
fi
if [ ! -r /sys/kernel/btf/vmlinux ]; then
  echo "build-bpf: this kernel has no BTF (/sys/kernel/btf/vmlinux); the eBPF data plane needs CONFIG_DEBUG_INFO_BTF" >&2
  exit 1
fi
# vmlinux.h follows the running kernel: regenerate it when the kernel's BTF is newer.
if [ ! -s build/vmlinux.h ] || [ /sys/kernel/btf/vmlinux -nt build/vmlinux.h ]; then
  bpftool btf dump file /sys/kernel/btf/vmlinux format c > build/vmlinux.h.tmp
  mv build/vmlinux.h.tmp build/vmlinux.h
fi
arch=$(uname -m)
case "$arch" in
  x86_64) target_arch=x86 ;;
  aarch64) target_arch=arm64 ;;
  *) target_arch="$arch" ;;
esac
multiarch=$(gcc -print-multiarch 2>/dev/null || echo "$arch-linux-gnu")
for src in *.c; do
  obj="build/${src%.c}.o"
  if [ -s "$obj" ] && [ "$obj" -nt "$src" ] && [ "$obj" -nt build/vmlinux.h ] && [ -z "$(find lib -newer "$obj" -name '*.h' | head -1)" ]; then
    continue
  fi
  echo "build-bpf: $src"
  "$clang" -target bpf -g -O2 -Wall -Werror -D__TARGET_ARCH_"$target_arch" \
    -I build -I "/usr/include/$multiarch" -c "$src" -o "$obj.tmp"
  mv "$obj.tmp" "$obj"
done
