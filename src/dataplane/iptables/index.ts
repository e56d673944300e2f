// The iptables data plane: kube-proxy's iptables layout, applied with one
// `iptables-restore -w 5 --noflush --counters` transaction per sync.
//
// Full sync: every chain is rewritten from the table; per-service chains that iptables-save shows
// but no service owns are flushed and deleted; missing jump rules from the built-in chains are
// inserted in the same transaction. Partial sync: the top-level chains (KUBE-SERVICES,
// KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES, KUBE-PROXY-FIREWALL, ...) are still rewritten in full,
// but only the changed service ports' own chains (SVC/SVL/EXT/FW/SEP) are; chains they no longer
// own are deleted, known from the chain names each port owned after the last successful sync.
// A failed restore leaves that bookkeeping untouched and forces the next sync to be full.
//
// Only IPv4 service ports are programmed; IPv6 needs the same layout through ip6tables (later).

import { allPorts } from '../../model/types.js';
import type { Change, ProxyConfig, ServicePort, ServiceTable } from '../../model/types.js';
import type { Logger } from '../../observe/log.js';
import { exec as defaultExec } from '../../util/exec.js';
import { DataPlaneError } from '../dataplane.js';
import type { ApplyOptions, ApplyResult, DataPlane, ProgrammedFrontend } from '../dataplane.js';
import { detectBackend, toolsFor } from './backend.js';
import type { BackendTools, ExecFn, IptablesBackend } from './backend.js';
import { JUMP_RULES, isServiceChainName } from './chains.js';
import { planCleanup } from './cleanup.js';
import { NO_FLOWS_DELETED, staleConntrackCommands } from './conntrack.js';
import { ownedChains, render, renderConfig } from './render.js';
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

    const ports: ServicePort[] = [];
    let skippedV6 = 0;
    for (const sp of allPorts(table)) {
      if (sp.family === 4) ports.push(sp);
      else skippedV6++;
    }
    if (skippedV6 > 0) this.logger.debug('IPv6 service ports skipped: ip6tables is not implemented yet', { count: skippedV6 });
    ports.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

    let natSaved: SavedTable | undefined;
    let filterSaved: SavedTable | undefined;
    if (full) {
      natSaved = await this.save(tools, 'nat', 'EAPPLY');
      filterSaved = await this.save(tools, 'filter', 'EAPPLY');
    }
    const write = full ? null : new Set(changes.filter((c) => c.kind !== 'removed').map((c) => c.id));
    const jumps = full ? JUMP_RULES.filter((j) => !hasJump(j.table === 'nat' ? natSaved : filterSaved, j)) : [];
    const { tx, owned } = render({ ports, write, jumps }, cfg);

    const stale = new Set<string>();
    if (full) {
      const active = new Set<string>();
      for (const chains of owned.values()) for (const c of chains) active.add(c);
      for (const c of natSaved!.chains) if (isServiceChainName(c) && !active.has(c)) stale.add(c);
    } else {
      for (const ch of changes) {
        const prev = ch.kind === 'added' ? undefined : ch.prev;
        const before = this.owned.get(ch.id) ?? (prev !== undefined && prev.family === 4 ? ownedChains(prev, cfg) : []);
        const after = new Set(owned.get(ch.id) ?? []);
        for (const c of before) if (!after.has(c)) stale.add(c);
      }
    }
    for (const c of [...stale].sort()) tx.deleteChain('nat', c);

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
    this.owned = owned;
    this.applied = cfg;
    this.needFull = false;
    this.logger.debug('iptables sync applied', { full, ports: ports.length, rules: tx.rules, deletedChains: stale.size, jumpsInserted: jumps.length });

    await this.clearStaleConntrack(changes);
    return { written: tx.rules, bytes: Buffer.byteLength(text) };
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
