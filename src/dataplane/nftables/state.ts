// What the table should hold, kept incrementally: every port's contribution (elements and
// objects), the union of all of them with reference counts (elements and objects are shared:
// a ClusterIP by the ports of a service, a pick chain by every frontend with that many
// endpoints), and who owns each frontend key. A partial sync re-renders only the changed ports
// (and the ports that win or lose a contested frontend) and returns what changed, element by
// element; its cost follows the change, not the table.
//
// The state is updated before the kernel sees the transaction: when that fails, the data plane
// throws this state away and the next (full) sync builds a new one from the table.

import type { ServicePort } from '../../model/types.js';
import { fixedElements, fixedObjects, sameObject } from './layout.js';
import type { NftConfig, ObjectDef } from './layout.js';
import { frontendsOf, renderPort } from './render.js';
import type { Contribution, Elem } from './render.js';

interface Claim {
  port: string;
  rank: number;
}

/** Which port owns each frontend key: the lowest rank, then the lowest port id (deterministic). */
export class FrontendRegistry {
  private readonly claims = new Map<string, Claim[]>();

  winner(frontend: string): string | undefined {
    return this.claims.get(frontend)?.[0]?.port;
  }

  claim(frontend: string, port: string, rank: number): void {
    const list = this.claims.get(frontend);
    if (list === undefined) {
      this.claims.set(frontend, [{ port, rank }]);
      return;
    }
    if (list.some((c) => c.port === port)) return;
    list.push({ port, rank });
    list.sort((a, b) => a.rank - b.rank || (a.port < b.port ? -1 : a.port > b.port ? 1 : 0));
  }

  release(frontend: string, port: string): void {
    const list = this.claims.get(frontend);
    if (list === undefined) return;
    const rest = list.filter((c) => c.port !== port);
    if (rest.length === 0) this.claims.delete(frontend);
    else this.claims.set(frontend, rest);
  }

  /** Keys claimed by more than one port, for a warning. */
  contested(): string[] {
    return [...this.claims].filter(([, l]) => l.length > 1).map(([k]) => k);
  }
}

/** One sync's worth of differences, in terms of objects and elements. */
export interface Delta {
  created: ObjectDef[];
  /** Same name, different rules (affinity chains whose endpoints changed). */
  changed: ObjectDef[];
  removed: ObjectDef[];
  deleted: Elem[];
  added: Elem[];
}

/** A change to one port of the table's family: before and after (either may be missing). */
export interface PortUpdate {
  id: string;
  prev: ServicePort | undefined;
  next: ServicePort | undefined;
}

const sameElem = (a: Elem, b: Elem): boolean => a.value === b.value && a.comment === b.comment;

export class TableState {
  readonly ports = new Map<string, ServicePort>();
  private readonly registry = new FrontendRegistry();
  private readonly contribs = new Map<string, Contribution>();
  /** Set name -> element key -> the element and how many ports want it. */
  private readonly elems = new Map<string, Map<string, { v: Elem; n: number }>>();
  private elemTotal = 0;
  private readonly objects = new Map<string, { v: ObjectDef; n: number }>();

  private readonly fixed: ObjectDef[];

  constructor(readonly cfg: NftConfig) {
    this.fixed = fixedObjects(cfg);
  }

  private render(id: string): Contribution | undefined {
    const sp = this.ports.get(id);
    return sp === undefined ? undefined : renderPort(sp, this.cfg, (fe) => this.registry.winner(fe) === id);
  }

  private count(c: Contribution, sign: 1 | -1, elemBefore?: Map<string, Map<string, Elem | null>>, objBefore?: Map<string, ObjectDef | null>): void {
    for (const e of c.elems) {
      let inSet = this.elems.get(e.set);
      if (inSet === undefined) this.elems.set(e.set, (inSet = new Map()));
      const cur = inSet.get(e.key);
      if (elemBefore !== undefined) {
        let before = elemBefore.get(e.set);
        if (before === undefined) elemBefore.set(e.set, (before = new Map()));
        if (!before.has(e.key)) before.set(e.key, cur?.v ?? null);
      }
      if (sign === 1) {
        if (cur === undefined) {
          inSet.set(e.key, { v: e, n: 1 });
          this.elemTotal++;
        } else {
          cur.n++;
          cur.v = e;
        }
      } else if (cur !== undefined && --cur.n === 0) {
        inSet.delete(e.key);
        this.elemTotal--;
      }
    }
    for (const o of c.objects) {
      const cur = this.objects.get(o.name);
      if (objBefore !== undefined && !objBefore.has(o.name)) objBefore.set(o.name, cur?.v ?? null);
      if (sign === 1) {
        if (cur === undefined) this.objects.set(o.name, { v: o, n: 1 });
        else {
          cur.n++;
          cur.v = o; // per-port objects (affinity chains) take the latest definition
        }
      } else if (cur !== undefined && --cur.n === 0) {
        this.objects.delete(o.name);
      }
    }
  }

  /** Loads every port from scratch (full sync). Ports are claimed in id order. */
  load(ports: readonly ServicePort[]): void {
    for (const sp of ports) {
      this.ports.set(sp.id, sp);
      for (const fe of frontendsOf(sp)) this.registry.claim(fe.id, sp.id, fe.rank);
    }
    for (const sp of ports) {
      const c = this.render(sp.id)!;
      this.contribs.set(sp.id, c);
      this.count(c, 1);
    }
  }

  /** Applies changed ports and returns what the table must change. */
  update(updates: readonly PortUpdate[]): Delta {
    const winnersBefore = new Map<string, string | undefined>();
    for (const u of updates) {
      for (const sp of [u.prev, u.next]) {
        if (sp === undefined) continue;
        for (const fe of frontendsOf(sp)) if (!winnersBefore.has(fe.id)) winnersBefore.set(fe.id, this.registry.winner(fe.id));
      }
    }
    for (const u of updates) {
      if (u.prev !== undefined) for (const fe of frontendsOf(u.prev)) this.registry.release(fe.id, u.id);
      this.ports.delete(u.id);
    }
    for (const u of updates) {
      if (u.next === undefined) continue;
      this.ports.set(u.id, u.next);
      for (const fe of frontendsOf(u.next)) this.registry.claim(fe.id, u.id, fe.rank);
    }
    const affected = new Set(updates.map((u) => u.id));
    for (const [fe, before] of winnersBefore) {
      const after = this.registry.winner(fe);
      if (before === after) continue;
      if (before !== undefined) affected.add(before);
      if (after !== undefined) affected.add(after);
    }

    const elemBefore = new Map<string, Map<string, Elem | null>>();
    const objBefore = new Map<string, ObjectDef | null>();
    // All old contributions out first, then the new ones in: a frontend changing hands is then
    // never counted with the loser's value.
    for (const id of affected) {
      const old = this.contribs.get(id);
      if (old !== undefined) this.count(old, -1, elemBefore, objBefore);
      this.contribs.delete(id);
    }
    for (const id of affected) {
      const next = this.render(id);
      if (next === undefined) continue;
      this.contribs.set(id, next);
      this.count(next, 1, elemBefore, objBefore);
    }

    const d: Delta = { created: [], changed: [], removed: [], deleted: [], added: [] };
    for (const [set, keys] of elemBefore) {
      const inSet = this.elems.get(set);
      for (const [k, before] of keys) {
        const after = inSet?.get(k)?.v ?? null;
        if (before !== null && after !== null && sameElem(before, after)) continue;
        if (before !== null) d.deleted.push(before);
        if (after !== null) d.added.push(after);
      }
    }
    for (const [name, before] of objBefore) {
      const after = this.objects.get(name)?.v ?? null;
      if (before === null && after !== null) d.created.push(after);
      else if (before !== null && after === null) d.removed.push(before);
      else if (before !== null && after !== null && !sameObject(before, after)) d.changed.push(after);
    }
    return d;
  }

  /** Every object the table needs: the fixed ones, then the services' (sets and maps before chains). */
  allObjects(): ObjectDef[] {
    const dynamic = [...this.objects.values()].map((o) => o.v);
    const fixed = this.fixed;
    return [
      ...fixed.filter((o) => o.kind !== 'chain'), ...dynamic.filter((o) => o.kind !== 'chain').sort(byName),
      ...fixed.filter((o) => o.kind === 'chain'), ...dynamic.filter((o) => o.kind === 'chain').sort(byName),
    ];
  }

  /** Every element the table needs, grouped by set (in the order sets first appear). */
  allElements(): Map<string, Elem[]> {
    const bySet = new Map<string, Elem[]>();
    for (const e of fixedElements(this.cfg)) bySet.set(e.set, [...(bySet.get(e.set) ?? []), e]);
    for (const [set, keys] of this.elems) {
      if (keys.size === 0) continue;
      const l = bySet.get(set) ?? [];
      for (const { v } of keys.values()) l.push(v);
      bySet.set(set, l);
    }
    return bySet;
  }

  hasObject(name: string): boolean {
    return this.objects.has(name) || this.fixed.some((o) => o.name === name);
  }

  contested(): string[] {
    return this.registry.contested();
  }

  get elementCount(): number {
    return this.elemTotal;
  }
}

function byName(a: ObjectDef, b: ObjectDef): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}
