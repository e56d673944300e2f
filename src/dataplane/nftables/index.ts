// The nftables data plane: kube-proxy's semantics in one table, `ip rudder` (IPv4; IPv6 would be
// a second table `ip6 rudder` with the same layout and ip6 expressions), programmed through one
// `nft -f -` transaction per sync.
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
// IPv4 cluster CIDRs identify pods. When two ports claim one frontend key, the ClusterIP wins,
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
import { allPorts, beforeAfter } from '../../model/types.js';
import type { Change, ProxyConfig, ServicePort, ServiceTable } from '../../model/types.js';
import type { Logger } from '../../observe/log.js';
import { exec as defaultExec } from '../../util/exec.js';
import { DataPlaneError } from '../dataplane.js';
import type { ApplyOptions, ApplyResult, DataPlane, KernelToolOptions, ProgrammedFrontend } from '../dataplane.js';
import { clearStaleConntrack } from '../conntrack.js';
import type { ExecFn } from '../../util/exec.js';
import { FAMILY, TABLE, nftConfig } from './layout.js';
import type { NftConfig } from './layout.js';
import { deleteChainsTransaction, deltaTransaction, fullTransaction } from './plan.js';
import { parseChains, programmedFrontends } from './readback.js';
import { TableState } from './state.js';
import type { PortUpdate } from './state.js';
import { Transaction } from './transaction.js';

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
  private readonly masqueradeBit: number;
  private readonly deleteChainsAtOnce: boolean;
  private readonly now: () => number;
  private initialized = false;
  /** What the kernel holds after the last successful sync; undefined until the first one. */
  private state: TableState | undefined;
  private applied: NftConfig | undefined;
  private needFull = true;
  /** No full sync has landed in this process yet: the next one recreates the table. */
  private fresh = true;
  private lastWarnings = '';
  private conntrackUsable = true;
  /** Chains flushed by an earlier sync, to delete once they have been unused for a while. */
  private readonly staleChains = new Map<string, number>();
  /** The last transaction handed to nft (for debugging, tests and benchmarks). */
  lastTransaction = '';

  constructor(opts: NftablesDataPlaneOptions) {
    const bit = opts.masqueradeBit ?? 14;
    if (!Number.isInteger(bit) || bit < 0 || bit > 31) throw new DataPlaneError('EINIT', `masqueradeBit ${bit} is not an integer in 0..31`);
    this.logger = opts.logger.child({ dataplane: 'nftables' });
    this.exec = opts.exec ?? defaultExec;
    const config = opts.config;
    this.config = typeof config === 'function' ? config : () => config;
    this.masqueradeBit = bit;
    this.deleteChainsAtOnce = opts.deleteChainsAtOnce ?? kernelAtLeast(release(), 6, 2);
    this.now = opts.now ?? Date.now;
  }

  /** Checks that nft runs. Throws DataPlaneError EINIT. */
  async init(): Promise<void> {
    let why = '';
    try {
      const r = await this.exec(['nft', '--version'], { timeoutMs: 10_000 });
      if (r.code === 0) {
        this.initialized = true;
        this.logger.info('nftables data plane ready', { nft: r.stdout.trim(), table: `${FAMILY} ${TABLE}`, deleteChainsAtOnce: this.deleteChainsAtOnce });
        return;
      }
      why = r.stderr.trim() || `exit code ${r.code}`;
    } catch (e) {
      why = (e as Error).message;
    }
    throw new DataPlaneError('EINIT', `nft does not run: ${why}`, why);
  }

  private settings(): NftConfig {
    const { config, warnings } = nftConfig(this.config(), this.masqueradeBit);
    const key = warnings.join('\n');
    if (key !== this.lastWarnings) for (const w of warnings) this.logger.warn(w);
    this.lastWarnings = key;
    return config;
  }

  async apply(changes: readonly Change[], table: ServiceTable, opts: ApplyOptions): Promise<ApplyResult> {
    if (!this.initialized) await this.init();
    const cfg = this.settings();
    const cfgChanged = this.applied !== undefined && JSON.stringify(this.applied) !== JSON.stringify(cfg);
    const full = opts.full || this.needFull || cfgChanged || this.state === undefined;
    if (!opts.full && full) {
      this.logger.info('partial sync requested, doing a full sync', { reason: cfgChanged ? 'node config changed' : 'the last sync failed or none was done' });
    }
    let result: ApplyResult;
    try {
      result = full ? await this.applyFull(table, cfg) : await this.applyPartial(changes);
    } catch (e) {
      // The kernel kept its previous state (nft -f is atomic); ours may have moved ahead of it.
      this.needFull = true;
      this.state = undefined;
      throw e;
    }
    this.applied = cfg;
    if (this.conntrackUsable) this.conntrackUsable = await clearStaleConntrack(this.exec, this.logger, changes);
    return result;
  }

  private async applyFull(table: ServiceTable, cfg: NftConfig): Promise<ApplyResult> {
    const ports: ServicePort[] = [];
    let skippedV6 = 0;
    for (const sp of allPorts(table)) {
      if (sp.family === 4) ports.push(sp);
      else skippedV6++;
    }
    if (skippedV6 > 0) this.logger.debug('IPv6 service ports skipped: the ip6 table is not implemented yet', { count: skippedV6 });
    ports.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const state = new TableState(cfg);
    state.load(ports);
    const contested = state.contested();
    if (contested.length > 0) this.logger.warn('several service ports use the same frontend; the first (ClusterIP, then lowest id) wins', { frontends: contested.slice(0, 10).join(', '), count: contested.length });
    const existingChains = this.fresh ? new Set<string>() : await this.listChains();
    const planned = fullTransaction(state, { recreate: this.fresh, existingChains, deleteChains: this.deleteChainsAtOnce });
    const text = await this.run(planned.tx);
    this.state = state;
    this.fresh = false;
    this.needFull = false;
    this.staleChains.clear();
    this.remember(planned.staleChains);
    this.logger.debug('nftables full sync applied', { ports: ports.length, elements: state.elementCount, operations: planned.tx.operations });
    return { written: planned.tx.operations, bytes: Buffer.byteLength(text) };
  }

  private async applyPartial(changes: readonly Change[]): Promise<ApplyResult> {
    const updates: PortUpdate[] = [];
    for (const ch of changes) {
      const { prev, next } = beforeAfter(ch);
      const p = prev?.family === 4 ? prev : undefined;
      const n = next?.family === 4 ? next : undefined;
      if (p !== undefined || n !== undefined) updates.push({ id: ch.id, prev: p, next: n });
    }
    if (updates.length === 0) return { written: 0, bytes: 0 };
    // The state moves ahead of the kernel here; if the transaction fails it is dropped (needFull).
    const delta = this.state!.update(updates);
    const planned = deltaTransaction(delta, this.deleteChainsAtOnce);
    if (planned.tx.isEmpty()) return { written: 0, bytes: 0 };
    await this.deleteStaleChains();
    const text = await this.run(planned.tx);
    for (const o of delta.created) this.staleChains.delete(o.name);
    this.remember(planned.staleChains);
    this.logger.debug('nftables partial sync applied', { changes: updates.length, operations: planned.tx.operations });
    return { written: planned.tx.operations, bytes: Buffer.byteLength(text) };
  }

  private remember(chains: readonly string[]): void {
    const now = this.now();
    for (const c of chains) this.staleChains.set(c, now);
  }

  /**
   * Deletes chains unused for a second or more (kernels before 6.2), in a transaction of their
   * own just before a sync's. Best effort: a failure is retried next time.
   */
  private async deleteStaleChains(): Promise<void> {
    if (this.staleChains.size === 0 || this.state === undefined) return;
    const due = [...this.staleChains].filter(([c, t]) => t <= this.now() - 1000 && !this.state!.hasObject(c)).map(([c]) => c).sort();
    if (due.length === 0) return;
    try {
      await this.nft(deleteChainsTransaction(due).toString(), 'EAPPLY');
      for (const c of due) this.staleChains.delete(c);
    } catch (e) {
      this.logger.warn('could not delete unused chains; will retry', { chains: due.length, error: e as Error });
    }
  }

  /** Checks and runs one sync transaction. Throws DataPlaneError EAPPLY (apply then makes the next sync full). */
  private async run(tx: Transaction): Promise<string> {
    const invalid = tx.error();
    if (invalid !== null) throw new DataPlaneError('EAPPLY', `nftables transaction not built: ${invalid}`);
    const text = tx.toString();
    this.lastTransaction = text;
    await this.nft(text, 'EAPPLY');
    return text;
  }

  /** `nft -f -` with `text` on stdin; a failure becomes DataPlaneError `code` carrying nft's stderr. */
  private async nft(text: string, code: 'EAPPLY' | 'ECLEANUP'): Promise<void> {
    let r;
    try {
      r = await this.exec(['nft', '-f', '-'], { input: text, timeoutMs: 300_000 });
    } catch (e) {
      throw new DataPlaneError(code, `nft could not run: ${(e as Error).message}`);
    }
    if (r.code === 0) return;
    const stderr = r.stderr.trim();
    const first = stderr.split('\n')[0] ?? '';
    throw new DataPlaneError(code, `nft -f failed (exit ${r.code}): ${first}`, stderr);
  }

  private async list(argv: string[], code: 'EAPPLY' | 'EREAD'): Promise<string | null> {
    let r;
    try {
      r = await this.exec(['nft', '-j', ...argv], { timeoutMs: 300_000 });
    } catch (e) {
      throw new DataPlaneError(code, `nft -j ${argv.join(' ')} could not run: ${(e as Error).message}`);
    }
    if (r.code === 0) return r.stdout;
    if (/No such file or directory/.test(r.stderr)) return null;
    throw new DataPlaneError(code, `nft -j ${argv.join(' ')} failed (exit ${r.code})`, r.stderr.trim());
  }

  /** Our table's chains (`list chains` reads no set elements, unlike listing the table). */
  private async listChains(): Promise<Set<string>> {
    const text = await this.list(['list', 'chains', FAMILY], 'EAPPLY');
    try {
      return text === null ? new Set() : parseChains(text);
    } catch (e) {
      throw new DataPlaneError('EAPPLY', `nft -j list chains: unreadable output: ${(e as Error).message}`);
    }
  }

  /** Frontends and backends as the table has them. Throws DataPlaneError EREAD. */
  async programmed(): Promise<ProgrammedFrontend[]> {
    const text = await this.list(['list', 'table', FAMILY, TABLE], 'EREAD');
    if (text === null) return [];
    try {
      return programmedFrontends(text);
    } catch (e) {
      throw new DataPlaneError('EREAD', `nft -j list table: unreadable output: ${(e as Error).message}`);
    }
  }

  /** Deletes the table `ip rudder` (and nothing else); idempotent. Throws DataPlaneError ECLEANUP. */
  async cleanup(): Promise<void> {
    const tx = new Transaction(FAMILY, TABLE).addTable().deleteTable();
    await this.nft(tx.toString(), 'ECLEANUP');
    this.state = undefined;
    this.needFull = true;
    this.fresh = true;
    this.staleChains.clear();
    this.logger.info('nftables table removed', { table: `${FAMILY} ${TABLE}` });
  }
}
