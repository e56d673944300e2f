// Where a lab program runs: a role's network namespace, the node's cgroup for node and pod roles,
// and which mount namespace it sees. Every program the lab starts inside a role gets its argv
// from placedArgv, so no caller can forget the cgroup.

import { inCgroupArgv } from './cgroup.js';
import { NETNS_RUN_DIR } from './netns.js';

export interface Placement {
  /** Network namespace name. */
  ns: string;
  /** Lab node cgroup to join before the program starts; none for clients, the fabric, or a lab without cgroups. */
  cgroup?: string | undefined;
  /**
   * Enter the network namespace only (`nsenter --net`) and keep this process's mount namespace.
   * `ip netns exec` remounts /sys for the namespace, which hides /sys/fs/bpf and cgroupfs; an eBPF
   * agent needs both. The price: /etc/netns/<ns>/ files are not bind-mounted over /etc.
   */
  keepMounts?: boolean | undefined;
}

/** The argv that runs `argv` at `p`. Each step execs the next, so the program keeps the spawned pid. */
export function placedArgv(p: Placement, argv: readonly string[]): string[] {
  const enter = p.keepMounts === true
    ? ['nsenter', `--net=${NETNS_RUN_DIR}/${p.ns}`, '--', ...argv]
    : ['ip', 'netns', 'exec', p.ns, ...argv];
  return p.cgroup === undefined ? enter : inCgroupArgv(p.cgroup, enter);
}
