// The nftables data plane: kube-proxy's semantics in one table per IP family, `ip rudder` for
// IPv4 service ports and `ip6 rudder` for IPv6 ones (the same layout with ip6 expressions and
// ipv6_addr types), each programmed through one `nft -f -` transaction per sync (family.ts).
// The IPv6 table is only created once there are IPv6 service ports, and skipped (one info log)
// where the kernel cannot hold an ip6 table.
//
// Why a flat layout rather than kube-proxy's. kube-proxy's nftables proxier (pkg/proxy/nftables)
// dispatches through verdict maps but gives every service port its own chains (service-, local-,
// external-, firewall-, one endpoint- chain per endpoint) and every policy chain an anonymous
// `numgen random mod N vmap { ... }` set. Measured here (see ../shared/platform-notes.md), a full
// load of 10,000 services x 4 endpoints in that layout takes ~58 s, almost all of it in the
// kernel walking the transaction once per anonymous set (O(n^2)), and every nft run first dumps
// every chain; adding one service to such a table costs 0.24 s. So this plane keeps the number of
// chains and sets independent of the number of services and puts the services in elements:
//
//   services:   ip daddr . meta l4proto . th dport vmap @service-ips          (VIPs)
//               fib daddr type local ... meta l4proto . th dport vmap @service-nodeports
//   -> a class chain, one per kind of frontend (ip-internal, ip-external, ip-external-local,
//      np-external, np-external-local): the masquerade decisions and eTP=Local short-circuits
//      that kube-proxy writes per service, written once, then
//               <frontend key> vmap @ip-pick    (or @ip-cluster-pick for the eTP=Local short-circuits)
//   -> a pick chain per endpoint count N (ip-pick-N), shared by every frontend with N endpoints:
//               dnat ip to <frontend key> . numgen random mod N map @ip-eps-N
//      where ip-eps-N maps "frontend . slot" to "endpoint ip . port".
//   No endpoints / eTP=Local without local endpoints: kube-proxy's no-endpoint-services and
//   no-endpoint-nodeports verdict maps (reject / drop), checked after DNAT (so what was DNATed
//   passes). LoadBalancer source ranges: one interval set of "frontend . allowed source" for all
//   services, instead of a firewall chain per service. Hairpin: instead of a rule per endpoint
//   chain, a set of "ip . ip" pairs checked in postrouting on DNATed packets (source == endpoint).
//   Unknown ports of a ClusterIP: rejected through a cluster-ips set, as kube-proxy does.
//
// ClientIP session affinity is the one thing kept per service: a flat equivalent would need the
// endpoint chosen by one lookup as the key of another (nft 1.0.6 cannot concatenate a map lookup
// into a key), or would stick clients to endpoints that have left. So a port with affinity gets
// kube-proxy's own structure: a policy chain that checks one dynamic set of client addresses per
// endpoint (`ip saddr @aff-...`, timeout = the service's) before `numgen random`, and an endpoint
// chain per endpoint that refreshes its set (`update @aff-... { ip saddr }`) and DNATs. Only
// affinity services pay for per-service objects.
//
// Where the packet-level behaviour differs from kube-proxy's nftables mode, it follows `rudder
// trace` and the iptables plane: the no-endpoint checks of node-originated traffic run after DNAT
// (kube-proxy checks it before, so the node's own connections to an eTP=Local external address
// without local endpoints are dropped there instead of masqueraded to the cluster set), and all
// cluster CIDRs of a family identify pods. When two ports claim one frontend key, the ClusterIP wins,
// then an external IP, then an LB IP, then the lowest port id (kube-proxy's maps would refuse
// the duplicate element and fail the whole sync).
//
// Measured (bench/dataplane.ts, 4 endpoints per service, 2-core dev machine): a full
// sync of 10,000 services in ~1.5-1.8 s (1,000: ~0.3-0.4 s), one endpoint change ~20 ms end to end
// at both sizes (Rudder's share ~0.5 ms, the rest is starting nft), a ~0.3 KiB transaction.
//
// Syncs. Full (startup, hourly, after a failure or a node config change): one transaction; the
// first one of a process deletes and recreates the table (the layout may come from another
// version), later ones flush and refill every chain and set in place (affinity sets keep their
// clients) and remove chains the kernel has that nothing needs. Partial: only the elements and
// objects of the changed ports (state.ts), typically a handful of `add/delete element` lines whose
// cost does not grow with the table. A sync without changes runs nothing. A failed transaction
// changes nothing (nft -f is atomic), throws DataPlaneError EAPPLY and makes the next sync full.
//
// Kernels before 6.2 release a chain referenced by a deleted map element only after the
// transaction, so deleting both in one transaction fails there; on those kernels unused chains are
// flushed at once and deleted by a later transaction, as kube-proxy does.

import { release } from 'node:os';
import type { Change, ProxyConfig, ServiceTable } from '../../model/types.js';
import type { Logger } from '../../observe/log.js';
import { exec as defaultExec } from '../../util/exec.js';
import { DataPlaneError, resolveKernelToolOptions } from '../dataplane.js';
import type { ApplyOptions, ApplyResult, DataPlane, KernelToolOptions, ProgrammedFrontend } from '../dataplane.js';
import type { ExecFn } from '../../util/exec.js';
import { FAMILY, FAMILY6, TABLE } from './layout.js';
import { FamilyTable, runNft } from './family.js';

export type { ExecFn } from '../../util/exec.js';

export interface NftablesDataPlaneOptions extends KernelToolOptions {
  /** Delete unused chains in the same transaction (default: when the kernel is 6.2 or later). */
  deleteChainsAtOnce?: boolean;
  /** Clock for the delayed deletion of unused chains (tests). */
  now?: () => number;
}

/** Whether `uname -r` is at least major.minor. */
export function kernelAtLeast(rel: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  if (m === null) return false;
  const [a, b] = [Number(m[1]), Number(m[2])];
  return a > major || (a === major && b >= minor);
}

export class NftablesDataPlane implements DataPlane {
  readonly name = 'nftables' as const;
  private readonly exec: ExecFn;
  private readonly logger: Logger;
  private readonly config: () => ProxyConfig;
  private readonly deleteChainsAtOnce: boolean;
  private initialized = false;
  /** `ip rudder` (IPv4 service ports). */
  private readonly v4: FamilyTable;
  /** `ip6 rudder` (IPv6 service ports); undefined once init found that the kernel cannot hold it. */
  private v6: FamilyTable | undefined;
  private v6Checked = false;

  constructor(opts: NftablesDataPlaneOptions) {
    const { config, exec, masqueradeBit: bit } = resolveKernelToolOptions(opts, defaultExec);
    this.logger = opts.logger.child({ dataplane: 'nftables' });
    this.exec = exec;
    this.config = config;
    this.deleteChainsAtOnce = opts.deleteChainsAtOnce ?? kernelAtLeast(release(), 6, 2);
    const common = { exec: this.exec, masqueradeBit: bit, deleteChainsAtOnce: this.deleteChainsAtOnce, now: opts.now ?? Date.now };
    this.v4 = new FamilyTable({ ...common, family: 4, logger: this.logger });
    this.v6 = new FamilyTable({ ...common, family: 6, logger: this.logger.child({ family: 'IPv6' }) });
  }

  /** The last IPv4 transaction handed to nft (for debugging, tests and benchmarks). */
  get lastTransaction(): string {
    return this.v4.lastTransaction;
  }

  /** The last IPv6 transaction handed to nft. */
  get lastTransaction6(): string {
    return this.v6?.lastTransaction ?? '';
  }

  private families(): FamilyTable[] {
    return this.v6 === undefined ? [this.v4] : [this.v4, this.v6];
  }

  /**
   * Checks that nft runs (DataPlaneError EINIT) and that the kernel accepts an ip6 table (`nft -c`:
   * checked, never applied); without the latter IPv6 service ports are skipped.
   */
  async init(): Promise<void> {
    let why = '';
    try {
      const r = await this.exec(['nft', '--version'], { timeoutMs: 10_000 });
      if (r.code === 0) {
        this.logger.info('nftables data plane ready', { nft: r.stdout.trim(), table: `${FAMILY} ${TABLE}`, deleteChainsAtOnce: this.deleteChainsAtOnce });
        await this.checkV6();
        this.initialized = true;
        return;
      }
      why = r.stderr.trim() || `exit code ${r.code}`;
    } catch (e) {
      why = (e as Error).message;
    }
    throw new DataPlaneError('EINIT', `nft does not run: ${why}`, why);
  }

  /** Once per process: whether the kernel accepts `ip6 rudder` (else one info log, and IPv6 is skipped). */
  private async checkV6(): Promise<void> {
    if (this.v6Checked) return;
    this.v6Checked = true;
    try {
      await runNft(this.exec, `add table ${FAMILY6} ${TABLE}\n`, 'EAPPLY', true);
    } catch (e) {
      this.logger.info('IPv6 service ports will not be programmed', { table: `${FAMILY6} ${TABLE}`, why: (e as DataPlaneError).detail ?? (e as Error).message });
      this.v6 = undefined;
    }
  }

  /**
   * One transaction per family, IPv4 first. A failure of either is thrown (after the other family
   * has had its turn) and makes both families' next sync full.
   */
  async apply(changes: readonly Change[], table: ServiceTable, opts: ApplyOptions): Promise<ApplyResult> {
    if (!this.initialized) await this.init();
    const node = this.config();
    const total: ApplyResult = { written: 0, bytes: 0 };
    let failure: unknown;
    for (const fam of this.families()) {
      try {
        const r = await fam.apply(changes, table, node, opts.full || opts.addressesChanged === true);
        total.written += r.written;
        total.bytes += r.bytes;
      } catch (e) {
        failure ??= e;
      }
    }
    if (failure !== undefined) {
      // The syncer's retry may carry only later changes: let both families start from the table.
      for (const fam of this.families()) fam.invalidate();
      throw failure;
    }
    return total;
  }

  /** Frontends and backends as both tables have them. Throws DataPlaneError EREAD. */
  async programmed(): Promise<ProgrammedFrontend[]> {
    await this.checkV6();
    const out: ProgrammedFrontend[] = [];
    for (const fam of this.families()) out.push(...await fam.programmed());
    return out;
  }

  /**
   * Deletes kube-proxy's own nftables tables (`ip kube-proxy`, `ip6 kube-proxy`), and nothing of
   * Rudder's: what taking a node over from kube-proxy's nftables mode leaves to remove once this
   * plane serves. Idempotent. Throws DataPlaneError ECLEANUP.
   */
  async removeKubeProxyTables(): Promise<void> {
    await this.checkV6();
    for (const fam of this.families()) await fam.removeKubeProxyTable();
  }

  /** Deletes the tables `ip rudder` and `ip6 rudder` and kube-proxy's (and nothing else); idempotent. Throws DataPlaneError ECLEANUP. */
  async cleanup(): Promise<void> {
    await this.checkV6();
    for (const fam of this.families()) await fam.cleanup();
  }
}
