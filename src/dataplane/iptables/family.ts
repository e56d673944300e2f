// One IP family's tables (iptables or ip6tables): everything the iptables data plane does, for
// one family. The data plane (index.ts) runs one of these per family, as kube-proxy runs one
// proxier per family; the two families' transactions are independent.

import type { Change, ProxyConfig, ServicePort, ServiceTable } from '../../model/types.js';
import { beforeAfter, familyPorts } from '../../model/types.js';
import type { IPFamily } from '../../source/objects.js';
import type { Logger } from '../../observe/log.js';
import { DataPlaneError, WarningsOnce } from '../dataplane.js';
import type { ApplyResult, ProgrammedFrontend } from '../dataplane.js';
import type { BackendTools, ExecFn, IptablesBackend } from './backend.js';
import { JUMP_RULES, KUBE_SERVICES, isServiceChainName } from './chains.js';
import { planCleanup } from './cleanup.js';
import { StaleConntrack } from '../conntrack.js';
import { clusterIPRejectRules, ownedChains, render, renderConfig, renderOwnChains, renderServicePort, sameRules, topLevelRules } from './render.js';
import type { RenderConfig } from './render.js';
import { hasJump, parseSave, programmedFrontends } from './save.js';
import type { SavedTable } from './save.js';
import { DiscardTransaction, Transaction } from './transaction.js';

const DISCARD_TX = new DiscardTransaction();

/** kube-proxy's restore flags: wait up to 5 s for the xtables lock, keep other chains, keep counters. */
const RESTORE_FLAGS = ['-w', '5', '--noflush', '--counters'];
/**
 * iptables-nft-restore (1.8.9) with --noflush slows down quadratically with the number of chains
 * created in one transaction (10,000 services: minutes), while adding chains to a large existing
 * table stays cheap. Full syncs of more ports than this are therefore staged: the ports' own
 * chains are written in batches that nothing jumps to yet, then one last transaction switches the
 * top-level chains over and deletes stale chains. Each batch is atomic; until the last one lands,
 * traffic follows the previous dispatch. Legacy rewrites the whole table per commit, so it stays
 * one transaction.
 */
const NFT_STAGE_PORTS = 250;
/** The same limit for cleanup, in chains (a port owns about six). */
const NFT_STAGE_CHAINS = 1500;

export class FamilyTables {
  /** Render settings of the last successful sync; a change forces a full sync. */
  private applied: RenderConfig | undefined;
  /** Nat chains each service port owned after the last successful sync. */
  private owned = new Map<string, string[]>();
  /** Service ports per ClusterIP after the last successful sync (one reject rule per ClusterIP). */
  private clusterIPRefs = new Map<string, number>();
  private needFull = true;
  private readonly conntrack: StaleConntrack;
  /** Whether this family has ever been programmed (an unused family stays untouched). */
  active = false;
  /** The last transaction handed to the restore tool (for debugging and tests). */
  lastTransaction = '';

  constructor(
    readonly family: IPFamily,
    private readonly tools: BackendTools,
    private readonly backend: IptablesBackend,
    private readonly exec: ExecFn,
    private readonly logger: Logger,
    private readonly masqueradeBit: number,
  ) {
    this.warnings = new WarningsOnce(logger);
    this.conntrack = new StaleConntrack(exec, logger, family);
  }

  private readonly warnings: WarningsOnce;

  /** The render settings for this sync, from the current node config; warnings are logged when they change. */
  private renderSettings(node: ProxyConfig): RenderConfig {
    const { config, warnings } = renderConfig(node, this.masqueradeBit, this.family);
    this.warnings.report(warnings);
    return config;
  }

  /**
   * Applies this family's share of one sync. `changes` are this family's; a family that has no
   * service ports and was never programmed is left alone.
   */
  async apply(changes: readonly Change[], table: ServiceTable, node: ProxyConfig, requestFull: boolean): Promise<ApplyResult> {
    if (!this.active && changes.length === 0 && !requestFull) return { written: 0, bytes: 0 };
    const cfg = this.renderSettings(node);
    const cfgChanged = this.applied !== undefined && JSON.stringify(this.applied) !== JSON.stringify(cfg);
    const full = requestFull || this.needFull || cfgChanged;
    if (!requestFull && full && this.active) {
      this.logger.info('partial sync requested, doing a full sync', { reason: cfgChanged ? 'node config changed' : 'the last sync failed' });
    }
    let result: ApplyResult;
    if (full) {
      // Only full syncs look at the whole table: a partial one costs what its changes cost.
      const ports = familyPorts(table, this.family);
      if (!this.active && ports.length === 0) return { written: 0, bytes: 0 };
      result = await this.applyFull(ports, cfg);
    } else {
      result = await this.applyPartial(changes, cfg);
    }
    this.applied = cfg;
    this.needFull = false;
    this.active = true;
    await this.conntrack.clear(changes);
    return result;
  }

  private async save(table: 'nat' | 'filter', code: 'EAPPLY' | 'EREAD' | 'ECLEANUP'): Promise<SavedTable> {
    let r;
    try {
      r = await this.exec([this.tools.save, '-t', table]);
    } catch (e) {
      throw new DataPlaneError(code, `${this.tools.save} -t ${table} could not run: ${(e as Error).message}`);
    }
    if (r.code !== 0) throw new DataPlaneError(code, `${this.tools.save} -t ${table} failed (exit ${r.code})`, r.stderr.trim());
    return parseSave(r.stdout).get(table) ?? { chains: new Set(), rules: [] };
  }

  /** Runs one restore transaction; a failure becomes DataPlaneError `code` with the tool's stderr. */
  private async restore(text: string, code: 'EAPPLY' | 'ECLEANUP'): Promise<void> {
    this.lastTransaction = text;
    let r;
    try {
      r = await this.exec([this.tools.restore, ...RESTORE_FLAGS], { input: text });
    } catch (e) {
      throw new DataPlaneError(code, `${this.tools.restore} could not run: ${(e as Error).message}`);
    }
    if (r.code === 0) return;
    const stderr = r.stderr.trim();
    const at = /line:? (\d+)/i.exec(stderr);
    let context = '';
    if (at !== null) {
      const n = Number(at[1]);
      const lines = text.split('\n');
      context = lines.slice(Math.max(0, n - 3), n + 2).map((l, i) => `${Math.max(1, n - 2) + i}: ${l}`).join('\n');
    }
    const first = stderr.split('\n')[0] ?? '';
    throw new DataPlaneError(code, `${this.tools.restore} failed (exit ${r.code}): ${first}`, context ? `${stderr}\n--- input around the failing line ---\n${context}` : stderr);
  }

  /**
   * Rewrites every chain from the table and deletes whatever service chain iptables-save shows
   * that the table no longer needs, in one transaction (staged on the nft backend, see
   * NFT_STAGE_PORTS). Also restores missing jump rules from the built-in chains.
   */
  private async applyFull(ports: readonly ServicePort[], cfg: RenderConfig): Promise<ApplyResult> {

    const natSaved = await this.save('nat', 'EAPPLY');
    const filterSaved = await this.save('filter', 'EAPPLY');
    let write: Set<string> | null = null;
    if (this.backend === 'nft' && ports.length > NFT_STAGE_PORTS) {
      await this.stageOwnChains(ports, cfg);
      write = new Set();
    }
    const jumps = JUMP_RULES.filter((j) => !hasJump(j.table === 'nat' ? natSaved : filterSaved, j));
    const { tx, owned } = render({ ports, write, jumps }, cfg);
    const active = new Set<string>();
    for (const chains of owned.values()) for (const c of chains) active.add(c);
    const stale = [...natSaved.chains].filter((c) => isServiceChainName(c) && !active.has(c)).sort();
    for (const c of stale) tx.deleteChain('nat', c);

    const text = await this.run(tx);
    this.owned = owned;
    this.clusterIPRefs = new Map();
    for (const sp of ports) this.clusterIPRefs.set(sp.clusterIP, (this.clusterIPRefs.get(sp.clusterIP) ?? 0) + 1);
    this.logger.debug('iptables full sync applied', { ports: ports.length, rules: tx.rules, deletedChains: stale.length, jumpsInserted: jumps.length });
    return { written: tx.rules, bytes: Buffer.byteLength(text) };
  }

  /**
   * Edits only what the changes touch: each changed port's rules in the top-level chains are
   * deleted by specification and inserted anew (only if they differ), its own chains rewritten,
   * chains it no longer owns deleted. The cost follows the number of changes, not of services;
   * a sync without changes runs no transaction at all.
   */
  private async applyPartial(changes: readonly Change[], cfg: RenderConfig): Promise<ApplyResult> {
    const tx = new Transaction();
    const ownedNext = new Map<string, string[] | null>();
    const refDelta = new Map<string, number>();
    const stale: string[] = [];
    for (const ch of changes) {
      const both = beforeAfter(ch);
      const prev = both.prev?.family === this.family ? both.prev : undefined;
      const next = both.next?.family === this.family ? both.next : undefined;
      if (prev === undefined && next === undefined) continue;
      const before = prev === undefined ? [] : topLevelRules(prev, cfg);
      const after = next === undefined ? [] : topLevelRules(next, cfg);
      if (!sameRules(before, after)) {
        for (const r of before) tx.deleteRule(r.table, r.chain, r.args);
        // At the top: the NodePort tail call and the ClusterIP rejects stay last in their chains.
        for (const r of after) tx.insertFirst(r.table, r.chain, ...r.args);
      }
      const ownedBefore = this.owned.get(ch.id) ?? (prev === undefined ? [] : ownedChains(prev, cfg));
      const ownedAfter = next === undefined ? [] : renderServicePort(DISCARD_TX, tx, next, cfg);
      const keep = new Set(ownedAfter);
      for (const c of ownedBefore) if (!keep.has(c)) stale.push(c);
      ownedNext.set(ch.id, next === undefined ? null : ownedAfter);
      if (prev !== undefined) refDelta.set(prev.clusterIP, (refDelta.get(prev.clusterIP) ?? 0) - 1);
      if (next !== undefined) refDelta.set(next.clusterIP, (refDelta.get(next.clusterIP) ?? 0) + 1);
    }
    for (const [ip, d] of refDelta) {
      const was = this.clusterIPRefs.get(ip) ?? 0;
      if (was === 0 && was + d > 0) for (const r of clusterIPRejectRules(ip)) tx.append('filter', KUBE_SERVICES, ...r);
      if (was > 0 && was + d === 0) for (const r of clusterIPRejectRules(ip)) tx.deleteRule('filter', KUBE_SERVICES, r);
    }
    // After the rules that jump to them are gone (tail order: -D lines first, then -X).
    for (const c of [...new Set(stale)].sort()) tx.deleteChain('nat', c);
    if (tx.isEmpty()) return { written: 0, bytes: 0 };

    const text = await this.run(tx);
    for (const [id, chains] of ownedNext) {
      if (chains === null) this.owned.delete(id);
      else this.owned.set(id, chains);
    }
    for (const [ip, d] of refDelta) {
      const n = (this.clusterIPRefs.get(ip) ?? 0) + d;
      if (n > 0) this.clusterIPRefs.set(ip, n);
      else this.clusterIPRefs.delete(ip);
    }
    this.logger.debug('iptables partial sync applied', { changes: changes.length, rules: tx.rules, deletedChains: stale.length });
    return { written: tx.rules, bytes: Buffer.byteLength(text) };
  }

  /** Checks and runs one transaction; any failure forces the next sync to be full. */
  private async run(tx: Transaction): Promise<string> {
    const invalid = tx.error();
    if (invalid !== null) {
      this.needFull = true;
      throw new DataPlaneError('EAPPLY', `iptables transaction not built: ${invalid}`);
    }
    const text = tx.toString();
    try {
      await this.restore(text, 'EAPPLY');
    } catch (e) {
      this.needFull = true;
      throw e;
    }
    return text;
  }

  /** Writes the ports' own chains in batches (see NFT_STAGE_PORTS). Throws DataPlaneError EAPPLY. */
  private async stageOwnChains(ports: readonly ServicePort[], cfg: RenderConfig): Promise<void> {
    for (let i = 0; i < ports.length; i += NFT_STAGE_PORTS) {
      await this.run(renderOwnChains(ports.slice(i, i + NFT_STAGE_PORTS), cfg));
    }
  }


  /** Frontends and backends as the nat table has them. Throws DataPlaneError EREAD. */
  async programmed(): Promise<ProgrammedFrontend[]> {
    return programmedFrontends(await this.save('nat', 'EREAD'), this.family, await this.save('filter', 'EREAD'));
  }

  /** Removes every KUBE-* chain and jump rule kube-proxy's layout uses, in nat and filter. Throws ECLEANUP. */
  async cleanup(): Promise<void> {
    const tables = new Map<string, SavedTable>();
    for (const t of ['nat', 'filter'] as const) {
      tables.set(t, await this.save(t, 'ECLEANUP'));
    }
    // Staged on the nft backend for the same reason as full syncs (see NFT_STAGE_PORTS).
    const plan = planCleanup(tables, this.backend === 'nft' ? NFT_STAGE_CHAINS : Infinity);
    for (const w of plan.warnings) this.logger.warn(w);
    let rules = 0;
    for (const tx of plan.stages) {
      const invalid = tx.error();
      if (invalid !== null) throw new DataPlaneError('ECLEANUP', `cleanup transaction not built: ${invalid}`);
      if (!tx.isEmpty()) await this.restore(tx.toString(), 'ECLEANUP');
      rules += tx.rules;
    }
    this.owned.clear();
    this.clusterIPRefs.clear();
    this.needFull = true;
    this.logger.info('iptables rules removed', { family: this.family, rules, transactions: plan.stages.length, kept: plan.kept.length });
  }
}
