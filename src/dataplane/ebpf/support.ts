// Whether this machine can run the eBPF data plane, as one line saying why not. Cheap checks
// only (files and mounts); the programs themselves are verified when they load.

import { existsSync } from 'node:fs';
import { findCgroup2Mount } from '../../util/mounts.js';
import { SOCK_LB_OBJECT } from './programs.js';
import { libbpfAvailable } from './libbpf.js';

/** null when the eBPF plane can start here, else the reason it cannot. Never throws. */
export function ebpfUnsupported(): string | null {
  try {
    if (process.getuid?.() !== 0) return 'the eBPF data plane needs root (CAP_BPF, CAP_NET_ADMIN)';
    if (!existsSync('/sys/kernel/btf/vmlinux')) return 'the kernel has no BTF (/sys/kernel/btf/vmlinux)';
    if (findCgroup2Mount() === null) return 'no cgroup v2 mount';
    if (!existsSync(SOCK_LB_OBJECT)) return `${SOCK_LB_OBJECT} is not compiled (scripts/setup.sh)`;
    return libbpfAvailable();
  } catch (e) {
    return (e as Error).message;
  }
}
