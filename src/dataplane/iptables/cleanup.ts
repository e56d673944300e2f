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
  /** The transactions to run in order; empty when there is nothing to remove. */
  stages: Transaction[];
  /** Chains left in place because something else still uses them. */
  kept: string[];
  warnings: string[];
}

function isOurJump(table: TableName, r: SavedRule): boolean {
  const target = option(r.args, '-j');
  const comment = option(r.args, '--comment');
  return JUMP_RULES.some((j) => j.table === table && j.from === r.chain && j.to === target && j.comment === comment);
}

interface TablePlan {
  table: TableName;
  jumps: SavedRule[];
  /** Top-level chains to remove, and per-service chains to remove. */
  top: string[];
  service: string[];
}

function planTable(table: TableName, saved: SavedTable, plan: CleanupPlan): TablePlan {
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
  const sorted = [...doomed].sort();
  return {
    table,
    jumps: jumps.filter((r) => doomed.has(option(r.args, '-j') ?? '')),
    top: sorted.filter((c) => top.includes(c)),
    service: sorted.filter((c) => !top.includes(c)),
  };
}

/**
 * Plans the cleanup of the given saved tables ("nat", "filter"). With `batch`, per-service chains
 * are removed in transactions of at most that many chains (iptables-nft-restore slows down
 * quadratically with the chains one transaction touches): first the jump rules go and the
 * top-level chains are flushed, so nothing enters the service chains any more; then the service
 * chains are flushed batch by batch (which drops their references to each other), deleted batch
 * by batch, and the top-level chains deleted last. Without `batch`, one transaction.
 */
export function planCleanup(tables: ReadonlyMap<string, SavedTable>, batch = Infinity): CleanupPlan {
  const plan: CleanupPlan = { stages: [], kept: [], warnings: [] };
  const parts: TablePlan[] = [];
  for (const name of ['nat', 'filter'] as const) {
    const saved = tables.get(name);
    if (saved !== undefined) parts.push(planTable(name, saved, plan));
  }
  const chains = parts.reduce((n, p) => n + p.top.length + p.service.length, 0);
  if (chains === 0 && parts.every((p) => p.jumps.length === 0)) return plan;
  if (chains <= batch) {
    const tx = new Transaction();
    for (const p of parts) {
      for (const r of p.jumps) tx.deleteRule(p.table, r.chain, r.args);
      // Flush every doomed chain first (the chain lines), then delete them all.
      for (const ch of [...p.top, ...p.service].sort()) tx.chain(p.table, ch);
      for (const ch of [...p.top, ...p.service].sort()) tx.deleteChain(p.table, ch);
    }
    plan.stages.push(tx);
    return plan;
  }
  const first = new Transaction();
  for (const p of parts) {
    for (const r of p.jumps) first.deleteRule(p.table, r.chain, r.args);
    for (const ch of p.top) first.chain(p.table, ch);
  }
  plan.stages.push(first);
  for (const mode of ['flush', 'delete'] as const) {
    for (const p of parts) {
      for (let i = 0; i < p.service.length; i += batch) {
        const tx = new Transaction();
        for (const ch of p.service.slice(i, i + batch)) {
          if (mode === 'flush') tx.chain(p.table, ch);
          else tx.deleteChain(p.table, ch);
        }
        plan.stages.push(tx);
      }
    }
  }
  const last = new Transaction();
  for (const p of parts) for (const ch of p.top) last.deleteChain(p.table, ch);
  plan.stages.push(last);
  return plan;
}
