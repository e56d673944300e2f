// The contract every data plane implements. The sync loop hands each one the same typed changes
// and the table they produced; a data plane turns them into one kernel transaction.

import type { Change, ProxyConfig, ServiceTable } from '../model/types.js';
import type { Logger } from '../observe/log.js';
import type { ExecFn } from '../util/exec.js';

export type DataPlaneName = 'iptables' | 'nftables' | 'ebpf';

export interface ApplyOptions {
  /**
   * Rewrite everything from `table` and remove whatever the data plane created that the table no
   * longer needs (startup, periodic resync, and the first sync after a failure). Otherwise only
   * the changed services are rewritten.
   */
  full: boolean;
  /**
   * Only the node's local addresses changed since the last sync (where NodePorts are served
   * without --nodeport-addresses). A plane that renders NodePorts per address rewrites them; the
   * table's entries are otherwise the same.
   */
  addressesChanged?: boolean;
}

export interface ApplyResult {
  /** Rules / elements / map entries written in this transaction, for metrics and logs. */
  written: number;
  /** Bytes handed to the kernel tool (0 for map updates). */
  bytes: number;
}

/** One frontend as the kernel has it, read back for `rudder services`. */
export interface ProgrammedFrontend {
  /** The service port id (namespace/name:port/PROTO), when the data plane records it. */
  service: string;
  kind: string;
  address: string;
  backends: string[];
  /** Set when the kernel's entry differs from the desired table (or is not in it): what differs. */
  drift?: string;
  /** The data plane's own id of the frontend (the eBPF rev-NAT id). */
  id?: number;
  /** Flags the kernel holds for the frontend (eBPF: reject, drop, affinity, ...). */
  flags?: string[];
  protocol?: string;
  /** eBPF: "host" for the entry the node's own namespace gets where it differs from its pods'. */
  scope?: string;
}

/** Connection counters a data plane keeps in the kernel (the eBPF programs count per frontend and backend). */
export interface DataPlaneCounters {
  frontends: Array<{ service: string; kind: string; frontend: string; protocol: string; connections: number; refused: number; dropped: number }>;
  backends: Array<{ backend: string; protocol: string; connections: number }>;
  /** Times the kernel state was found to differ from what the plane wrote, and repaired. */
  driftRepairs: number;
  /** eBPF per-packet path: its connection tracking as the last sweep found it. */
  conntrack?: { syn: number; established: number; closing: number; capacity: number; deletedTotal: number };
}

export interface DataPlane {
  readonly name: DataPlaneName;
  /** Checks the kernel and tools, creates the base structures. Throws DataPlaneError. */
  init(): Promise<void>;
  /**
   * Applies one sync as a kernel transaction. On failure it throws DataPlaneError and the caller
   * retries with `full: true`, which rewrites everything from the table. nft -f is atomic as a
   * whole; iptables-restore commits table by table (nat first, where almost every rule lives), and
   * each IP family is its own transaction, so there a failure can leave one table or family
   * updated until the full sync that follows.
   */
  apply(changes: readonly Change[], table: ServiceTable, opts: ApplyOptions): Promise<ApplyResult>;
  /** Reads back what is programmed. */
  programmed(): Promise<ProgrammedFrontend[]>;
  /** Per-frontend and per-backend counters, where the data plane keeps them. Throws DataPlaneError EREAD. */
  counters?(): Promise<DataPlaneCounters>;
  /** Removes everything this data plane ever created in the current network namespace. */
  cleanup(): Promise<void>;
  /** Stops the plane's own timers and watchers at shutdown; what it programmed stays in the kernel. */
  close?(): void;
}

/** A data plane failed to program the kernel. `code` is stable for metrics and alerts. */
export class DataPlaneError extends Error {
  constructor(
    readonly code: 'EINIT' | 'EAPPLY' | 'EREAD' | 'ECLEANUP' | 'EUNSUPPORTED',
    message: string,
    readonly detail?: string,
  ) {
    super(message);
    this.name = 'DataPlaneError';
  }
}

/** What every data plane that drives a kernel tool is built from. */
export interface KernelToolOptions {
  /** The node config, or a getter read at each sync (it follows the Node object). */
  config: ProxyConfig | (() => ProxyConfig);
  logger: Logger;
  /** Runs a program (default: util/exec). Tests inject a fake; the lab wraps it in `ip netns exec`. */
  exec?: ExecFn;
  /** Bit of the packet mark that requests masquerade; default 14 (0x4000), as kube-proxy. */
  masqueradeBit?: number;
}

/** KernelToolOptions with defaults applied. Throws DataPlaneError EINIT for a bad masquerade bit. */
export function resolveKernelToolOptions(opts: KernelToolOptions, defaultExec: ExecFn): { config: () => ProxyConfig; exec: ExecFn; masqueradeBit: number } {
  const bit = opts.masqueradeBit ?? 14;
  if (!Number.isInteger(bit) || bit < 0 || bit > 31) throw new DataPlaneError('EINIT', `masqueradeBit ${bit} is not an integer in 0..31`);
  const config = opts.config;
  return { config: typeof config === 'function' ? config : () => config, exec: opts.exec ?? defaultExec, masqueradeBit: bit };
}

/** Logs a set of configuration warnings once, and again only when the set changes. */
export class WarningsOnce {
  private last = '';
  constructor(private readonly logger: Logger) {}
  report(warnings: readonly string[]): void {
    const key = warnings.join('\n');
    if (key !== this.last) for (const w of warnings) this.logger.warn(w);
    this.last = key;
  }
}
