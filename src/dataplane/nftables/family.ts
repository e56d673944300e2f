// One IP family's table (`ip rudder` for IPv4 service ports, `ip6 rudder` for IPv6 ones):
// everything the nftables data plane does, for one family. The data plane (index.ts) runs one of
// these per family, as the iptables plane runs one FamilyTables per family; the two tables have
// their own state and their own transactions.

import { beforeAfter, familyPorts } from '../../model/types.js';
import type { Change, ProxyConfig, ServicePort, ServiceTable } from '../../model/types.js';
import type { Logger } from '../../observe/log.js';
import type { ExecFn } from '../../util/exec.js';
import { DataPlaneError, WarningsOnce } from '../dataplane.js';
import type { ApplyResult, ProgrammedFrontend } from '../dataplane.js';
import { StaleConntrack } from '../conntrack.js';
import { TABLE, nftConfig, nftFamily } from './layout.js';
import type { NftConfig, NftFamily } from './layout.js';
import { deleteChainsTransaction, deltaTransaction, fullTransaction } from './plan.js';
import { parseChains, programmedFrontends } from './readback.js';
import { TableState } from './state.js';
import type { PortUpdate } from './state.js';
import { Transaction } from './transaction.js';

/** The table of kube-proxy's own nftables mode, in each family. */
const KUBE_PROXY_TABLE = 'kube-proxy';

/** `nft -f -` with `text` on stdin; a failure becomes DataPlaneError `code` carrying nft's stderr. */
export async function runNft(exec: ExecFn, text: string, code: 'EAPPLY' | 'ECLEANUP', check = false): Promise<void> {
  let r;
  const argv = check ? ['nft', '-c', '-f', '-'] : ['nft', '-f', '-'];
  try {
    r = await exec(argv, { input: text, timeoutMs: 300_000 });
  } catch (e) {
    throw new DataPlaneError(code, `nft could not run: ${(e as Error).message}`);
  }
  if (r.code === 0) return;
  const stderr = r.stderr.trim();
  const first = stderr.split('\n')[0] ?? '';
  throw new DataPlaneError(code, `nft -f failed (exit ${r.code}): ${first}`, stderr);
}

/** `nft -j <argv>`: stdout, or null when the table is not there. */
async function list(exec: ExecFn, argv: string[], code: 'EAPPLY' | 'EREAD'): Promise<string | null> {
  let r;
  try {
    r = await exec(['nft', '-j', ...argv], { timeoutMs: 300_000 });
  } catch (e) {
    throw new DataPlaneError(code, `nft -j ${argv.join(' ')} could not run: ${(e as Error).message}`);
  }
  if (r.code === 0) return r.stdout;
  if (/No such file or directory/.test(r.stderr)) return null;
  throw new DataPlaneError(code, `nft -j ${argv.join(' ')} failed (exit ${r.code})`, r.stderr.trim());
}

export interface FamilyTableOptions {
  family: 4 | 6;
  exec: ExecFn;
  logger: Logger;
  masqueradeBit: number;
  deleteChainsAtOnce: boolean;
  now: () => number;
}

export class FamilyTable {
  readonly family: 4 | 6;
  readonly nftFamily: NftFamily;
  private readonly exec: ExecFn;
  private readonly logger: Logger;
  private readonly masqueradeBit: number;
  private readonly deleteChainsAtOnce: boolean;
  private readonly now: () => number;
  /** What the kernel holds after the last successful sync; undefined until the first one. */
  private state: TableState | undefined;
  private applied: NftConfig | undefined;
  private needFull = true;
  /** No full sync has landed in this process yet: the next one recreates the table. */
  private fresh = true;
  private readonly conntrack: StaleConntrack;
  /** Chains flushed by an earlier sync, to delete once they have been unused for a while. */
  private readonly staleChains = new Map<string, number>();
  /**
   * Whether this family is programmed at every sync. IPv4 always is (its table exists even
   * without services); IPv6 only once it has had service ports: an unused family stays untouched.
   */
  active: boolean;
  /** The last transaction handed to nft (for debugging, tests and benchmarks). */
  lastTransaction = '';

  private readonly warnings: WarningsOnce;

  constructor(opts: FamilyTableOptions) {
    this.family = opts.family;
    this.nftFamily = nftFamily(opts.family);
    this.exec = opts.exec;
    this.logger = opts.logger;
    this.warnings = new WarningsOnce(opts.logger);
    this.masqueradeBit = opts.masqueradeBit;
    this.deleteChainsAtOnce = opts.deleteChainsAtOnce;
    this.now = opts.now;
    this.active = opts.family === 4;
    this.conntrack = new StaleConntrack(opts.exec, opts.logger, opts.family);
  }

  /** "ip rudder" / "ip6 rudder". */
  get tableName(): string {
    return `${this.nftFamily} ${TABLE}`;
  }

  private settings(node: ProxyConfig): NftConfig {
    const { config, warnings } = nftConfig(node, this.masqueradeBit, this.family);
    this.warnings.report(warnings);
    return config;
  }

  private mine(sp: ServicePort | undefined): ServicePort | undefined {
    return sp?.family === this.family ? sp : undefined;
  }

  /**
   * Applies this family's share of one sync (`changes` may hold both families'). A family that
   * is not active and has no service ports is left alone.
   */
  async apply(changes: readonly Change[], table: ServiceTable, node: ProxyConfig, requestFull: boolean): Promise<ApplyResult> {
    const updates: PortUpdate[] = [];
    const changesOfFamily: Change[] = [];
    for (const ch of changes) {
      const { prev, next } = beforeAfter(ch);
      const p = this.mine(prev);
      const n = this.mine(next);
      if (p === undefined && n === undefined) continue;
      updates.push({ id: ch.id, prev: p, next: n });
      changesOfFamily.push(ch);
    }
    if (!this.active && updates.length === 0 && !requestFull) return { written: 0, bytes: 0 };
    const cfg = this.settings(node);
    const cfgChanged = this.applied !== undefined && JSON.stringify(this.applied) !== JSON.stringify(cfg);
    const full = requestFull || this.needFull || cfgChanged || this.state === undefined;
    if (!requestFull && full && this.active) {
      this.logger.info('partial sync requested, doing a full sync', { reason: cfgChanged ? 'node config changed' : 'the last sync failed or none was done' });
    }
    let result: ApplyResult;
    try {
      if (full) {
        const ports = familyPorts(table, this.family);
        if (!this.active && ports.length === 0) return { written: 0, bytes: 0 };
        result = await this.applyFull(ports, cfg);
      } else {
        result = await this.applyPartial(updates);
      }
    } catch (e) {
      // The kernel kept its previous state (nft -f is atomic); ours may have moved ahead of it.
      this.needFull = true;
      this.state = undefined;
      throw e;
    }
    this.applied = cfg;
    this.active = true;
    await this.conntrack.clear(changesOfFamily);
    return result;
  }

  /** Forces the next sync of this family to be full (the other family's sync failed). */
  invalidate(): void {
    this.needFull = true;
    this.state = undefined;
  }

  private async applyFull(ports: ServicePort[], cfg: NftConfig): Promise<ApplyResult> {
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

  private async applyPartial(updates: readonly PortUpdate[]): Promise<ApplyResult> {
    if (updates.length === 0) return { written: 0, bytes: 0 };
    // The state moves ahead of the kernel here; if the transaction fails it is dropped (needFull).
    const delta = this.state!.update(updates);
    const planned = deltaTransaction(delta, this.deleteChainsAtOnce, this.nftFamily);
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
      await runNft(this.exec, deleteChainsTransaction(due, this.nftFamily).toString(), 'EAPPLY');
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
    await runNft(this.exec, text, 'EAPPLY');
    return text;
  }

  /** Our table's chains (`list chains` reads no set elements, unlike listing the table). */
  private async listChains(): Promise<Set<string>> {
    const text = await list(this.exec, ['list', 'chains', this.nftFamily], 'EAPPLY');
    try {
      return text === null ? new Set() : parseChains(text);
    } catch (e) {
      throw new DataPlaneError('EAPPLY', `nft -j list chains: unreadable output: ${(e as Error).message}`);
    }
  }

  /** Frontends and backends as the table has them. Throws DataPlaneError EREAD. */
  async programmed(): Promise<ProgrammedFrontend[]> {
    const text = await list(this.exec, ['list', 'table', this.nftFamily, TABLE], 'EREAD');
    if (text === null) return [];
    try {
      return programmedFrontends(text);
    } catch (e) {
      throw new DataPlaneError('EREAD', `nft -j list table: unreadable output: ${(e as Error).message}`);
    }
  }

  /** Deletes this family's table (and nothing else); idempotent. Throws DataPlaneError ECLEANUP. */
  /** Deletes kube-proxy's table of this family (`ip kube-proxy` or `ip6 kube-proxy`), if any. */
  async removeKubeProxyTable(): Promise<void> {
    const text = new Transaction(this.nftFamily, KUBE_PROXY_TABLE).addTable().deleteTable().toString();
    await runNft(this.exec, text, 'ECLEANUP');
  }

  async cleanup(): Promise<void> {
    const tx = new Transaction(this.nftFamily, TABLE).addTable().deleteTable();
    // kube-proxy's nftables mode keeps its rules in this family's table `kube-proxy`: removed too,
    // as `kube-proxy --cleanup` does, so a node taken over from it keeps no second proxy's rules.
    const kubeProxy = new Transaction(this.nftFamily, KUBE_PROXY_TABLE).addTable().deleteTable();
    await runNft(this.exec, tx.toString() + kubeProxy.toString(), 'ECLEANUP');
    this.state = undefined;
    this.needFull = true;
    this.fresh = true;
    this.staleChains.clear();
    this.active = this.family === 4;
    this.logger.info('nftables table removed', { table: this.tableName });
  }
}
