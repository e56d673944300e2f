// Stale UDP conntrack entries, cleared after a sync exactly as the iptables data plane clears
// them: the commands come from the iptables plane's pure staleConntrackCommands (kube-proxy's
// rules, independent of how the kernel is programmed). Only the runner lives here.
// (Integrator: iptables/conntrack.ts could move to dataplane/ as shared code.)

import type { Change } from '../../model/types.js';
import type { Logger } from '../../observe/log.js';
import type { ExecOptions, ExecResult } from '../../util/exec.js';
import { NO_FLOWS_DELETED, staleConntrackCommands } from '../iptables/conntrack.js';

export type ExecFn = (argv: readonly string[], opts?: ExecOptions) => Promise<ExecResult>;

const PARALLEL = 4;

/** Runs conntrack for the changes, best effort: failures are logged, never thrown. Returns false once conntrack cannot run at all. */
export async function clearStaleConntrack(exec: ExecFn, logger: Logger, changes: readonly Change[]): Promise<boolean> {
  const queue = staleConntrackCommands(changes);
  if (queue.length === 0) return true;
  logger.debug('clearing stale UDP conntrack entries', { commands: queue.length });
  let usable = true;
  const worker = async (): Promise<void> => {
    for (let argv = queue.shift(); argv !== undefined && usable; argv = queue.shift()) {
      try {
        const r = await exec(argv, { timeoutMs: 10_000 });
        if (r.code !== 0 && !(r.stdout + r.stderr).includes(NO_FLOWS_DELETED)) {
          logger.warn('conntrack failed: stale UDP entries may remain', { argv: argv.join(' '), code: r.code, stderr: r.stderr.trim() });
        }
      } catch (e) {
        usable = false;
        logger.warn('conntrack cannot run: stale UDP entries will not be cleared', { error: e as Error });
      }
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  return usable;
}
