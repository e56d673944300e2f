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
// IPv4 service ports go to iptables, IPv6 ones to ip6tables, each family in its own tables
// (family.ts); IPv6 is skipped, with one log line, where ip6tables cannot run.

import type { Change, ProxyConfig, ServiceTable } from '../../model/types.js';
import { beforeAfter } from '../../model/types.js';
import type { IPFamily } from '../../source/objects.js';
import type { Logger } from '../../observe/log.js';
import { exec as defaultExec } from '../../util/exec.js';
import { DataPlaneError, resolveKernelToolOptions } from '../dataplane.js';
import type { ApplyOptions, ApplyResult, DataPlane, KernelToolOptions, ProgrammedFrontend } from '../dataplane.js';
import { detectBackend, toolsFor } from './backend.js';
import type { ExecFn, IptablesBackend } from './backend.js';
import { FamilyTables } from './family.js';

export type { IptablesBackend } from './backend.js';

export interface IptablesDataPlaneOptions extends KernelToolOptions {
  /** Default: detected as kubernetes-sigs/iptables-wrappers does (see backend.ts). */
  backend?: IptablesBackend;
}

export class IptablesDataPlane implements DataPlane {
  readonly name = 'iptables' as const;
  private readonly exec: ExecFn;
  private readonly logger: Logger;
  private readonly config: () => ProxyConfig;
  private readonly masqueradeBit: number;
  private backend: IptablesBackend | undefined;
  private families: FamilyTables[] | undefined;

  constructor(opts: IptablesDataPlaneOptions) {
    ({ config: this.config, exec: this.exec, masqueradeBit: this.masqueradeBit } = resolveKernelToolOptions(opts, defaultExec));
    this.logger = opts.logger.child({ dataplane: 'iptables' });
    this.backend = opts.backend;
  }

  /** The last IPv4 transaction (for debugging and tests). */
  get lastTransaction(): string {
    return this.families?.[0]?.lastTransaction ?? '';
  }

  /**
   * Picks the backend (if not given) and checks its tools run. IPv4 tools must (DataPlaneError
   * EINIT); without working ip6tables tools IPv6 service ports are skipped.
   */
  async init(): Promise<void> {
    if (this.backend === undefined) this.backend = (await detectBackend(this.exec, this.logger)).backend;
    else this.logger.info('iptables backend selected', { backend: this.backend, reason: 'configured' });
    const families: FamilyTables[] = [];
    for (const family of [4, 6] as const) {
      const tools = toolsFor(this.backend, family);
      const problem = await this.probe([[tools.restore, '--version'], [tools.save, '--version'], ...(family === 6 ? [[tools.save, '-t', 'nat']] : [])]);
      if (problem !== null && family === 4) throw new DataPlaneError('EINIT', `${problem.tool} does not run: ${problem.why}`, problem.why);
      if (problem !== null) {
        this.logger.info('IPv6 service ports will not be programmed', { tool: problem.tool, why: problem.why });
        continue;
      }
      families.push(new FamilyTables(family, tools, this.backend, this.exec, this.logger.child({ family: `IPv${family}` }), this.masqueradeBit));
    }
    this.families = families;
  }

  /** The first of the commands that fails, or null. */
  private async probe(commands: string[][]): Promise<{ tool: string; why: string } | null> {
    for (const argv of commands) {
      try {
        const r = await this.exec(argv, { timeoutMs: 10_000 });
        if (r.code !== 0) return { tool: argv[0]!, why: r.stderr.trim() || `exit code ${r.code}` };
      } catch (e) {
        return { tool: argv[0]!, why: (e as Error).message };
      }
    }
    return null;
  }

  private async ensureInit(): Promise<FamilyTables[]> {
    if (this.families === undefined) await this.init();
    return this.families!;
  }

  async apply(changes: readonly Change[], table: ServiceTable, opts: ApplyOptions): Promise<ApplyResult> {
    const families = await this.ensureInit();
    const node = this.config();
    const total: ApplyResult = { written: 0, bytes: 0 };
    for (const fam of families) {
      const mine = changes.filter((c) => familyOf(c) === fam.family);
      const r = await fam.apply(mine, table, node, opts.full || opts.addressesChanged === true);
      total.written += r.written;
      total.bytes += r.bytes;
    }
    return total;
  }

  /** Frontends and backends as the nat tables have them. Throws DataPlaneError EREAD. */
  async programmed(): Promise<ProgrammedFrontend[]> {
    const out: ProgrammedFrontend[] = [];
    for (const fam of await this.ensureInit()) out.push(...await fam.programmed());
    return out;
  }

  /** Removes every KUBE-* chain and jump rule kube-proxy's layout uses, in both families. Throws ECLEANUP. */
  async cleanup(): Promise<void> {
    for (const fam of await this.ensureInit()) await fam.cleanup();
  }
}

function familyOf(c: Change): IPFamily {
  const { prev, next } = beforeAfter(c);
  return (prev ?? next)!.family;
}
