// TableState / Delta -> one nft transaction. Pure: no I/O.
//
// Order inside a transaction (nft checks references as it goes). Partial: new sets and maps, new
// chains (empty), flushes of rewritten chains, rules, element deletions, element additions, then
// what is no longer used: chains flushed, sets and maps deleted, chains deleted (or, on kernels
// before 6.2, deleted by a later transaction: see index.ts). Full: chains added and flushed, sets
// added and flushed (or rebuilt, see ObjectDef.rebuild), rules, elements, stale objects removed.

import { ADDR_TYPE, FAMILY, FIXED_SET_NAMES, TABLE, companionOf } from './layout.js';
import type { NftFamily, ObjectDef } from './layout.js';
import type { Elem } from './render.js';
import type { Delta, TableState } from './state.js';
import { Transaction } from './transaction.js';

export interface FullOptions {
  /** Delete whatever table is there first (first sync of this process: the layout may be older). */
  recreate: boolean;
  /** Chains the kernel has in our table (ignored with `recreate`). */
  existingChains: ReadonlySet<string>;
  /** Delete unused chains in this transaction; false: only flush them, the caller deletes them later. */
  deleteChains: boolean;
}

export interface Planned {
  tx: Transaction;
  /** Chains flushed but not deleted (deleteChains false). */
  staleChains: string[];
}

function addObject(tx: Transaction, o: ObjectDef): void {
  if (o.kind === 'chain') tx.addChain(o.name, o.base);
  else tx.addSet(o.kind, o.name, o.spec ?? '', o.comment);
}

function writeRules(tx: Transaction, o: ObjectDef): void {
  for (const r of o.rules ?? []) tx.addRule(o.name, r);
}

function writeElems(tx: Transaction, elems: Iterable<Elem>, verb: 'add' | 'delete', skip: ReadonlySet<string>): void {
  const bySet = new Map<string, Elem[]>();
  for (const e of elems) {
    if (skip.has(e.set)) continue;
    const l = bySet.get(e.set);
    if (l === undefined) bySet.set(e.set, [e]);
    else l.push(e);
  }
  for (const [set, list] of bySet) {
    for (const e of list) {
      if (verb === 'add') tx.addElement(set, e.key, e.value, e.comment);
      else tx.deleteElement(set, e.key);
    }
  }
}

/**
 * The whole table in one transaction. Without `recreate` it flushes and refills every chain and
 * set in place (affinity sets keep their clients) and removes what the kernel has that the table
 * no longer needs; there is no moment where a packet sees a half-written table either way.
 */
export function fullTransaction(state: TableState, opts: FullOptions): Planned {
  const fam = state.cfg.family;
  const tx = new Transaction(fam, TABLE);
  tx.addTable();
  if (opts.recreate) tx.deleteTable().addTable();
  const objects = state.allObjects();
  const wanted = new Set(objects.map((o) => o.name));
  // Chains first, flushed: nothing refers to a set any more when the sets are rebuilt below.
  for (const o of objects) {
    if (o.kind !== 'chain') continue;
    addObject(tx, o);
    if (!opts.recreate) tx.flushChain(o.name);
  }
  const stale = opts.recreate ? [] : [...opts.existingChains].filter((c) => !wanted.has(c)).sort();
  for (const c of stale) tx.flushChain(c);
  for (const o of objects) {
    if (o.kind === 'chain') continue;
    addObject(tx, o);
    if (opts.recreate || o.keep === true) continue;
    if (o.rebuild === true) {
      tx.deleteSet(o.kind, o.name);
      addObject(tx, o);
    } else {
      tx.flushSet(o.kind, o.name);
    }
  }
  for (const o of objects) if (o.kind === 'chain') writeRules(tx, o);
  for (const [set, elems] of state.allElements()) {
    for (const e of elems) tx.addElement(set, e.key, e.value, e.comment);
  }
  if (!opts.recreate) {
    // add + delete: removes the set whether or not it is there.
    const staleSets: ObjectDef[] = FIXED_SET_NAMES.filter((n) => !wanted.has(n)).map((name) => ({ kind: 'set', name, spec: `type ${ADDR_TYPE[fam]} ;` }));
    for (const c of stale) {
      const s = companionOf(c, fam);
      if (s !== null && !wanted.has(s.name)) staleSets.push(s);
    }
    for (const s of staleSets) {
      addObject(tx, s);
      if (s.kind !== 'chain') tx.deleteSet(s.kind, s.name);
    }
    if (opts.deleteChains) for (const c of stale) tx.deleteChain(c);
  }
  return { tx, staleChains: opts.deleteChains ? [] : stale };
}

/** Only what changed. An empty delta gives an empty transaction. */
export function deltaTransaction(d: Delta, deleteChains: boolean, fam: NftFamily = FAMILY): Planned {
  const tx = new Transaction(fam, TABLE);
  const removedSets = new Set([...d.removed, ...d.changed].filter((o) => o.kind !== 'chain').map((o) => o.name));
  const created = [...d.created.filter((o) => o.kind !== 'chain'), ...d.created.filter((o) => o.kind === 'chain')];
  for (const o of created) addObject(tx, o);
  for (const o of d.changed) {
    if (o.kind === 'chain') {
      tx.flushChain(o.name);
    } else {
      tx.deleteSet(o.kind, o.name);
      addObject(tx, o);
    }
  }
  for (const o of [...created, ...d.changed]) if (o.kind === 'chain') writeRules(tx, o);
  writeElems(tx, d.deleted, 'delete', removedSets);
  writeElems(tx, d.added, 'add', new Set());
  const removedChains = d.removed.filter((o) => o.kind === 'chain').map((o) => o.name).sort();
  for (const c of removedChains) tx.flushChain(c);
  for (const o of d.removed) if (o.kind !== 'chain') tx.deleteSet(o.kind, o.name);
  if (deleteChains) for (const c of removedChains) tx.deleteChain(c);
  return { tx, staleChains: deleteChains ? [] : removedChains };
}

/** Deletes chains flushed by an earlier sync (add + delete: a chain already gone is no error). */
export function deleteChainsTransaction(chains: readonly string[], fam: NftFamily = FAMILY): Transaction {
  const tx = new Transaction(fam, TABLE);
  for (const c of chains) tx.addChain(c).deleteChain(c);
  return tx;
}
