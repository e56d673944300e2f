// Keeps the latest object per key as source events arrive and records which services they
// touch, so a sync rebuilds only those. Event handling is O(1) per event and never touches
// the kernel.

import type { Snapshot } from '../model/build.js';
import type { EndpointSlice, Node, ProxyObject, Service, SourceEvent } from '../source/objects.js';
import { objectKey, serviceKey } from '../source/objects.js';

export interface PendingChanges {
  /** Services whose Service object or slices changed since the last take. */
  services: Set<string>;
  /** This node's Node object changed (zone, addresses): everything must be rebuilt. */
  nodeChanged: boolean;
  /** When each service's oldest pending change arrived (ms, tracker clock). */
  firstChangeAt: Map<string, number>;
  /**
   * The last-change-trigger-time of each EndpointSlice version received (ms since the epoch),
   * those later than the tracker's start only: what kube-proxy's network programming latency is
   * measured from. The initial list's slices are not changes this proxy made late.
   */
  triggerTimes: number[];
  serviceChanges: number;
  endpointChanges: number;
}

export class Tracker implements Snapshot {
  readonly services = new Map<string, Service>();
  readonly slices = new Map<string, Map<string, EndpointSlice>>();
  node: Node | null = null;
  /** Counts since start, for metrics. */
  serviceChangesTotal = 0;
  endpointChangesTotal = 0;

  private readonly sliceOwner = new Map<string, string>();
  private pending: PendingChanges = Tracker.empty();
  private readonly syncedKinds = new Set<ProxyObject['kind']>();

  /** When this tracker started (wall clock): trigger times before it are the initial state's. */
  private readonly startedAt: number;

  constructor(private readonly nodeName: string, private readonly now: () => number = Date.now, wallClock: () => number = Date.now) {
    this.startedAt = wallClock();
  }

  private static empty(): PendingChanges {
    return { services: new Set(), nodeChanged: false, firstChangeAt: new Map(), triggerTimes: [], serviceChanges: 0, endpointChanges: 0 };
  }

  /** True once every kind has been listed once: before that a sync would withdraw live services. */
  get ready(): boolean {
    return this.syncedKinds.has('Service') && this.syncedKinds.has('EndpointSlice');
  }

  get pendingCounts(): { services: number; endpoints: number } {
    return { services: this.pending.serviceChanges, endpoints: this.pending.endpointChanges };
  }

  /** When the oldest pending change arrived, or null when nothing is pending. O(pending). */
  oldestPending(): number | null {
    let oldest: number | null = null;
    for (const at of this.pending.firstChangeAt.values()) if (oldest === null || at < oldest) oldest = at;
    return oldest;
  }

  hasPending(): boolean {
    return this.pending.services.size > 0 || this.pending.nodeChanged;
  }

  /** Applies one event; returns true when it changed what the proxy must program. */
  handle(e: SourceEvent): boolean {
    switch (e.type) {
      case 'upsert':
        return this.upsert(e.object);
      case 'delete':
        return this.remove(e.kind, e.key);
      case 'synced': {
        this.syncedKinds.add(e.kind);
        const keep = new Set(e.keys);
        let changed = false;
        for (const key of this.keysOf(e.kind)) if (!keep.has(key)) changed = this.remove(e.kind, key) || changed;
        return changed;
      }
    }
  }

  /** Hands over the pending changes and starts a new batch. */
  take(): PendingChanges {
    const p = this.pending;
    this.pending = Tracker.empty();
    return p;
  }

  /** Puts changes back after a sync that could not use them (they merge with newer ones). */
  restore(p: PendingChanges): void {
    for (const svc of p.services) {
      this.pending.services.add(svc);
      const at = p.firstChangeAt.get(svc);
      const cur = this.pending.firstChangeAt.get(svc);
      if (at !== undefined && (cur === undefined || at < cur)) this.pending.firstChangeAt.set(svc, at);
    }
    this.pending.serviceChanges += p.serviceChanges;
    this.pending.endpointChanges += p.endpointChanges;
    this.pending.nodeChanged ||= p.nodeChanged;
    this.pending.triggerTimes.push(...p.triggerTimes);
  }

  private touch(svc: string, what: 'service' | 'endpoints'): void {
    this.pending.services.add(svc);
    if (!this.pending.firstChangeAt.has(svc)) this.pending.firstChangeAt.set(svc, this.now());
    if (what === 'service') {
      this.pending.serviceChanges++;
      this.serviceChangesTotal++;
    } else {
      this.pending.endpointChanges++;
      this.endpointChangesTotal++;
    }
  }

  private *keysOf(kind: ProxyObject['kind']): Generator<string> {
    if (kind === 'Service') for (const s of this.services.values()) yield objectKey(s);
    else if (kind === 'EndpointSlice') yield* this.sliceOwner.keys();
    else if (this.node !== null) yield objectKey(this.node);
  }

  private upsert(o: ProxyObject): boolean {
    switch (o.kind) {
      case 'Service': {
        const key = serviceKey(o.namespace, o.name);
        this.services.set(key, o);
        this.touch(key, 'service');
        return true;
      }
      case 'EndpointSlice': {
        const key = objectKey(o);
        const owner = serviceKey(o.namespace, o.serviceName);
        const prevOwner = this.sliceOwner.get(key);
        if (prevOwner !== undefined && prevOwner !== owner) this.dropSlice(key, prevOwner, o.name);
        this.sliceOwner.set(key, owner);
        let m = this.slices.get(owner);
        if (m === undefined) this.slices.set(owner, (m = new Map()));
        m.set(o.name, o);
        this.touch(owner, 'endpoints');
        if (o.lastChangeTriggerTime !== undefined && o.lastChangeTriggerTime > this.startedAt) this.pending.triggerTimes.push(o.lastChangeTriggerTime);
        return true;
      }
      case 'Node': {
        if (o.name !== this.nodeName) return false;
        const before = this.node === null ? null : JSON.stringify(this.node);
        this.node = o;
        if (before === JSON.stringify(o)) return false;
        this.pending.nodeChanged = true;
        return true;
      }
    }
  }

  private dropSlice(key: string, owner: string, name: string): void {
    const m = this.slices.get(owner);
    m?.delete(name);
    if (m !== undefined && m.size === 0) this.slices.delete(owner);
    this.sliceOwner.delete(key);
    this.touch(owner, 'endpoints');
  }

  private remove(kind: ProxyObject['kind'], key: string): boolean {
    if (kind === 'Service') {
      const svc = key.startsWith('Service/') ? key.slice('Service/'.length) : key;
      if (!this.services.delete(svc)) return false;
      this.touch(svc, 'service');
      return true;
    }
    if (kind === 'EndpointSlice') {
      const owner = this.sliceOwner.get(key);
      if (owner === undefined) return false;
      this.dropSlice(key, owner, key.slice(key.lastIndexOf('/') + 1));
      return true;
    }
    if (this.node !== null && key === objectKey(this.node)) {
      this.node = null;
      this.pending.nodeChanged = true;
      return true;
    }
    return false;
  }
}
