// The iptables data plane: kube-proxy's iptables layout, applied through `iptables-restore -w 5
// --noflush --counters` on stdin.
//
// Full sync (startup, hourly, after a failure, after a node config change): every chain is
// rewritten from the table; per-service chains that iptables-save shows but no service owns are
// flushed and deleted; missing jump rules from the built-in chains are inserted in the same
// transaction. Partial sync: unlike kube-proxy, which rewrites the top-level chains (KUBE-SERVICES,
// KUBE-NODEPORTS, ...) in full at every sync, only what the changes touch is written: a changed
// port's top-level rules are deleted by specification and inserted anew, its own chains
// (SVC/SVL/EXT/FW/SEP) rewritten, the chains it no longer owns deleted. So the transaction, and
// Rudder's work, follow the number of changes, not of services (what the kernel tool then does
// with the table is its own: legacy swaps the whole table). A failed restore leaves the
// bookkeeping untouched and forces the next sync to be full.
//
// Only IPv4 service ports are programmed; IPv6 needs the same layout through ip6tables (later).

import { allPorts, beforeAfter } from '../../model/types.js';
import type { Change, ProxyConfig, ServicePort, ServiceTable } from '../../model/types.js';
import type { Logger } from '../../observe/log.js';
import { exec as defaultExec } from '../../util/exec.js';
import { DataPlaneError } from '../dataplane.js';
import type { ApplyOptions, ApplyResult, DataPlane, ProgrammedFrontend } from '../dataplane.js';
import { detectBackend, toolsFor } from './backend.js';
import type { BackendTools, ExecFn, IptablesBackend } from './backend.js';
import { JUMP_RULES, KUBE_SERVICES, isServiceChainName } from './chains.js';
import { planCleanup } from './cleanup.js';
import { NO_FLOWS_DELETED, staleConntrackCommands } from './conntrack.js';
import { clusterIPRejectArgs, ownedChains, render, renderConfig, renderOwnChains, renderServicePort, sameRules, topLevelRules } from './render.js';
import { DiscardTransaction, Transaction } from './transaction.js';

const DISCARD_TX = new DiscardTransaction();
import type { RenderConfig } from './render.js';
import { hasJump, parseSave, programmedFrontends } from './save.js';
import type { SavedTable } from './save.js';

export type { IptablesBackend } from './backend.js';

export interface IptablesDataPlaneOptions {
  /** The node config, or a getter read at each sync (it follows the Node object). */
  config: ProxyConfig | (() => ProxyConfig);
  logger: Logger;
  /** Runs a program (default: util/exec). Tests inject a fake; the lab wraps it in `ip netns exec`. */
  exec?: ExecFn;
  /** Default: detected as kubernetes-sigs/iptables-wrappers does (see backend.ts). */
  backend?: IptablesBackend;
  /** Bit of the packet mark that requests masquerade; default 14 (0x4000), as kube-proxy. */
  masqueradeBit?: number;
}

/** kube-proxy's restore flags: wait up to 5 s for the xtables lock, keep other chains, keep counters. */
const RESTORE_FLAGS = ['-w', '5', '--noflush', '--counters'];
const CONNTRACK_PARALLEL = 4;
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

export class IptablesDataPlane implements DataPlane {
  readonly name = 'iptables' as const;
  private readonly exec: ExecFn;
  private readonly logger: Logger;
  private readonly config: () => ProxyConfig;
  private readonly masqueradeBit: number;
  /** Render settings of the last successful sync; a change forces a full sync. */
  private applied: RenderConfig | undefined;
  private lastWarnings = '';
  private backend: IptablesBackend | undefined;
  private tools: BackendTools | undefined;
  /** Nat chains each IPv4 service port owned after the last successful sync. */
  private owned = new Map<string, string[]>();
  /** Service ports per ClusterIP after the last successful sync (one reject rule per ClusterIP). */
  private clusterIPRefs = new Map<string, number>();
  private needFull = true;
  private conntrackMissing = false;
  /** The last transaction handed to iptables-restore (for debugging and tests). */
  lastTransaction = '';

  constructor(opts: IptablesDataPlaneOptions) {
    const bit = opts.masqueradeBit ?? 14;
    if (!Number.isInteger(bit) || bit < 0 || bit > 31) {
      throw new DataPlaneError('EINIT', `masqueradeBit ${bit} is not an integer in 0..31`);
    }
    this.logger = opts.logger.child({ dataplane: 'iptables' });
    this.exec = opts.exec ?? defaultExec;
    this.backend = opts.backend;
    const config = opts.config;
    this.config = typeof config === 'function' ? config : () => config;
    this.masqueradeBit = bit;
  }

  /** The render settings for this sync, from the current node config; warnings are logged when they change. */
  private renderSettings(): RenderConfig {
    const { config, warnings } = renderConfig(this.config(), this.masqueradeBit);
    const key = warnings.join('\n');
    if (key !== this.lastWarnings) for (const w of warnings) this.logger.warn(w);
    this.lastWarnings = key;
    return config;
  }

  /** Picks the backend (if not given) and checks its tools run. Throws DataPlaneError EINIT. */
  async init(): Promise<void> {
    if (this.backend === undefined) this.backend = (await detectBackend(this.exec, this.logger)).backend;
    else this.logger.info('iptables backend selected', { backend: this.backend, reason: 'configured' });
    const tools = toolsFor(this.backend);
    for (const tool of [tools.restore, tools.save]) {
      let ok = false;
      let why = '';
      try {
        const r = await this.exec([tool, '--version'], { timeoutMs: 10_000 });
        ok = r.code === 0;
        why = r.stderr.trim() || `exit code ${r.code}`;
      } catch (e) {
        why = (e as Error).message;
      }
      if (!ok) throw new DataPlaneError('EINIT', `${tool} does not run: ${why}`, why);
    }
    this.tools = tools;
  }

  private async ensureInit(): Promise<BackendTools> {
    if (this.tools === undefined) await this.init();
    return this.tools!;
  }

  private async save(tools: BackendTools, table: 'nat' | 'filter', code: 'EAPPLY' | 'EREAD' | 'ECLEANUP'): Promise<SavedTable | undefined> {
    let r;
    try {
      r = await this.exec([tools.save, '-t', table]);
    } catch (e) {
      throw new DataPlaneError(code, `${tools.save} -t ${table} could not run: ${(e as Error).message}`);
    }
    if (r.code !== 0) throw new DataPlaneError(code, `${tools.save} -t ${table} failed (exit ${r.code})`, r.stderr.trim());
    return parseSave(r.stdout).get(table) ?? { chains: new Set(), rules: [] };
  }

  /** Runs one restore transaction; a failure becomes DataPlaneError `code` with the tool's stderr. */
  private async restore(tools: BackendTools, text: string, code: 'EAPPLY' | 'ECLEANUP'): Promise<void> {
    this.lastTransaction = text;
    let r;
    try {
      r = await this.exec([tools.restore, ...RESTORE_FLAGS], { input: text });
    } catch (e) {
      throw new DataPlaneError(code, `${tools.restore} could not run: ${(e as Error).message}`);
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
    throw new DataPlaneError(code, `${tools.restore} failed (exit ${r.code}): ${first}`, context ? `${stderr}\n--- input around the failing line ---\n${context}` : stderr);
  }

  async apply(changes: readonly Change[], table: ServiceTable, opts: ApplyOptions): Promise<ApplyResult> {
    const tools = await this.ensureInit();
    const cfg = this.renderSettings();
    const cfgChanged = this.applied !== undefined && JSON.stringify(this.applied) !== JSON.stringify(cfg);
    const full = opts.full || this.needFull || cfgChanged;
    if (!opts.full && full) {
      this.logger.info('partial sync requested, doing a full sync', { reason: cfgChanged ? 'node config changed' : 'the last sync failed or none was done' });
    }
    const result = full ? await this.applyFull(tools, table, cfg) : await this.applyPartial(tools, changes, cfg);
    this.applied = cfg;
    this.needFull = false;
    await this.clearStaleConntrack(changes);
    return result;
  }

  /**
   * Rewrites every chain from the table and deletes whatever service chain iptables-save shows
   * that the table no longer needs, in one transaction (staged on the nft backend, see
   * NFT_STAGE_PORTS). Also restores missing jump rules from the built-in chains.
   */
  private async applyFull(tools: BackendTools, table: ServiceTable, cfg: RenderConfig): Promise<ApplyResult> {
    const ports: ServicePort[] = [];
    let skippedV6 = 0;
    for (const sp of allPorts(table)) {
      if (sp.family === 4) ports.push(sp);
      else skippedV6++;
    }
    if (skippedV6 > 0) this.logger.debug('IPv6 service ports skipped: ip6tables is not implemented yet', { count: skippedV6 });
    ports.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

    const natSaved = await this.save(tools, 'nat', 'EAPPLY');
    const filterSaved = await this.save(tools, 'filter', 'EAPPLY');
    let write: Set<string> | null = null;
    if (this.backend === 'nft' && ports.length > NFT_STAGE_PORTS) {
      await this.stageOwnChains(tools, ports, cfg);
      write = new Set();
    }
    const jumps = JUMP_RULES.filter((j) => !hasJump(j.table === 'nat' ? natSaved : filterSaved, j));
    const { tx, owned } = render({ ports, write, jumps }, cfg);
    const active = new Set<string>();
    for (const chains of owned.values()) for (const c of chains) active.add(c);
    const stale = [...natSaved!.chains].filter((c) => isServiceChainName(c) && !active.has(c)).sort();
    for (const c of stale) tx.deleteChain('nat', c);

    const text = await this.run(tools, tx);
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
  private async applyPartial(tools: BackendTools, changes: readonly Change[], cfg: RenderConfig): Promise<ApplyResult> {
    const tx = new Transaction();
    const ownedNext = new Map<string, string[] | null>();
    const refDelta = new Map<string, number>();
    const stale: string[] = [];
    for (const ch of changes) {
      const both = beforeAfter(ch);
      const prev = both.prev?.family === 4 ? both.prev : undefined;
      const next = both.next?.family === 4 ? both.next : undefined;
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
      if (was === 0 && was + d > 0) tx.append('filter', KUBE_SERVICES, ...clusterIPRejectArgs(ip));
      if (was > 0 && was + d === 0) tx.deleteRule('filter', KUBE_SERVICES, clusterIPRejectArgs(ip));
    }
    // After the rules that jump to them are gone (tail order: -D lines first, then -X).
    for (const c of [...new Set(stale)].sort()) tx.deleteChain('nat', c);
    if (tx.isEmpty()) return { written: 0, bytes: 0 };

    const text = await this.run(tools, tx);
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
  private async run(tools: BackendTools, tx: Transaction): Promise<string> {
    const invalid = tx.error();
    if (invalid !== null) {
      this.needFull = true;
      throw new DataPlaneError('EAPPLY', `iptables transaction not built: ${invalid}`);
    }
    const text = tx.toString();
    try {
      await this.restore(tools, text, 'EAPPLY');
    } catch (e) {
      this.needFull = true;
      throw e;
    }
    return text;
  }

  /** Writes the ports' own chains in batches (see NFT_STAGE_PORTS). Throws DataPlaneError EAPPLY. */
  private async stageOwnChains(tools: BackendTools, ports: readonly ServicePort[], cfg: RenderConfig): Promise<void> {
    for (let i = 0; i < ports.length; i += NFT_STAGE_PORTS) {
      await this.run(tools, renderOwnChains(ports.slice(i, i + NFT_STAGE_PORTS), cfg));
    }
  }

  /** Best effort, after the rules are in place: failures are logged, never thrown. */
  private async clearStaleConntrack(changes: readonly Change[]): Promise<void> {
    if (this.conntrackMissing) return;
    const queue = staleConntrackCommands(changes);
    if (queue.length === 0) return;
    this.logger.debug('clearing stale UDP conntrack entries', { commands: queue.length });
    const worker = async (): Promise<void> => {
      for (let argv = queue.shift(); argv !== undefined && !this.conntrackMissing; argv = queue.shift()) {
        try {
          const r = await this.exec(argv, { timeoutMs: 10_000 });
          const out = r.stdout + r.stderr;
          if (r.code !== 0 && !out.includes(NO_FLOWS_DELETED)) {
            this.logger.warn('conntrack failed: stale UDP entries may remain', { argv: argv.join(' '), code: r.code, stderr: r.stderr.trim() });
          }
        } catch (e) {
          this.conntrackMissing = true;
          this.logger.warn('conntrack cannot run: stale UDP entries will not be cleared', { error: e as Error });
        }
      }
    };
    await Promise.all(Array.from({ length: CONNTRACK_PARALLEL }, worker));
  }

  /** Frontends and backends as the nat table has them. Throws DataPlaneError EREAD. */
  async programmed(): Promise<ProgrammedFrontend[]> {
    const tools = await this.ensureInit();
    return programmedFrontends(await this.save(tools, 'nat', 'EREAD'));
  }

  /** Removes every KUBE-* chain and jump rule kube-proxy's layout uses, in nat and filter. Throws ECLEANUP. */
  async cleanup(): Promise<void> {
    const tools = await this.ensureInit();
    const tables = new Map<string, SavedTable>();
    for (const t of ['nat', 'filter'] as const) {
      const saved = await this.save(tools, t, 'ECLEANUP');
      if (saved !== undefined) tables.set(t, saved);
    }
    const plan = planCleanup(tables);
    for (const w of plan.warnings) this.logger.warn(w);
    const invalid = plan.tx.error();
    if (invalid !== null) throw new DataPlaneError('ECLEANUP', `cleanup transaction not built: ${invalid}`);
    if (!plan.tx.isEmpty()) await this.restore(tools, plan.tx.toString(), 'ECLEANUP');
    this.owned.clear();
    this.needFull = true;
    this.logger.info('iptables rules removed', { rules: plan.tx.rules, kept: plan.kept.length });
  }
}
