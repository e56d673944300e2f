// Planning the removal of everything Rudder (or kube-proxy, whose layout is identical) created:
// the jump rules from the built-in chains, the top-level KUBE-* chains and every per-service
// chain, in both the nat and filter tables. Pure: saved tables in, one transaction out.
//
// Chains kubelet owns (KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY, KUBE-FIREWALL) are never touched.
// A chain still referenced by a rule that is not ours (another tool jumping to KUBE-MARK-MASQ, say)
// is kept, with a warning, rather than failing the whole transaction.

import {
  FILTER_TOP_CHAINS, JUMP_RULES, NAT_TOP_CHAINS, isServiceChainName,
} from './chains.js';
import { option } from './save.js';
import type { SavedRule, SavedTable } from './save.js';
import { Transaction } from './transaction.js';
import type { TableName } from './transaction.js';

export interface CleanupPlan {
  tx: Transaction;
  /** Chains left in place because something else still uses them. */
  kept: string[];
  warnings: string[];
}

function isOurJump(table: TableName, r: SavedRule): boolean {
  const target = option(r.args, '-j');
  const comment = option(r.args, '--comment');
  return JUMP_RULES.some((j) => j.table === table && j.from === r.chain && j.to === target && j.comment === comment);
}

function planTable(table: TableName, saved: SavedTable, tx: Transaction, plan: CleanupPlan): void {
  const top: readonly string[] = table === 'nat' ? NAT_TOP_CHAINS : FILTER_TOP_CHAINS;
  const doomed = new Set<string>();
  for (const ch of saved.chains) if (top.includes(ch) || (table === 'nat' && isServiceChainName(ch))) doomed.add(ch);

  const jumps = saved.rules.filter((r) => !doomed.has(r.chain) && isOurJump(table, r));
  const jumpSet = new Set(jumps);
  // Keep any doomed chain that a surviving foreign rule still jumps to; keeping a chain keeps its
  // rules, which may pin further chains, so repeat until nothing changes.
  for (let changed = true; changed;) {
    changed = false;
    for (const r of saved.rules) {
      if (doomed.has(r.chain) || jumpSet.has(r)) continue;
      const target = option(r.args, '-j') ?? option(r.args, '-g');
      if (target !== undefined && doomed.has(target)) {
        doomed.delete(target);
        plan.kept.push(target);
        plan.warnings.push(`${table} chain ${target} kept: still used by a rule in ${r.chain}`);
        changed = true;
      }
    }
  }

  for (const r of jumps) {
    const target = option(r.args, '-j');
    if (target !== undefined && doomed.has(target)) tx.deleteRule(table, r.chain, r.args);
  }
  // Flush every doomed chain first (the chain lines), then delete them all.
  for (const ch of [...doomed].sort()) tx.chain(table, ch);
  for (const ch of [...doomed].sort()) tx.deleteChain(table, ch);
}

/** Plans the cleanup of the given saved tables ("nat", "filter"); an empty transaction means nothing to do. */
export function planCleanup(tables: ReadonlyMap<string, SavedTable>): CleanupPlan {
  const plan: CleanupPlan = { tx: new Transaction(), kept: [], warnings: [] };
  for (const name of ['nat', 'filter'] as const) {
    const saved = tables.get(name);
    if (saved !== undefined) planTable(name, saved, plan.tx, plan);
  }
  return plan;
}
