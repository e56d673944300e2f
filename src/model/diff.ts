// Table -> typed changes. Pure. Computed once per sync; every data plane consumes the same list.

import type { Change, EndpointInfo, ServicePort, ServiceTable } from './types.js';
import { beforeAfter } from './types.js';

function sameList<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function sameEndpoint(a: EndpointInfo, b: EndpointInfo): boolean {
  return a.id === b.id && a.nodeName === b.nodeName && a.isLocal === b.isLocal && a.ready === b.ready
    && a.serving === b.serving && a.terminating === b.terminating && a.zone === b.zone
    && sameList(a.zoneHints, b.zoneHints) && sameList(a.nodeHints, b.nodeHints);
}

/** Frontends and policies: everything but the endpoints. */
export function sameService(a: ServicePort, b: ServicePort): boolean {
  return a.clusterIP === b.clusterIP && a.port === b.port && a.nodePort === b.nodePort
    && a.protocol === b.protocol && a.family === b.family
    && sameList(a.externalIPs, b.externalIPs) && sameList(a.loadBalancerIPs, b.loadBalancerIPs)
    && sameList(a.loadBalancerSourceRanges, b.loadBalancerSourceRanges)
    && a.affinityTimeoutSeconds === b.affinityTimeoutSeconds
    && a.externalPolicyLocal === b.externalPolicyLocal && a.internalPolicyLocal === b.internalPolicyLocal
    && a.healthCheckNodePort === b.healthCheckNodePort && a.lbAlgorithm === b.lbAlgorithm;
}

export function sameEndpoints(a: ServicePort, b: ServicePort): boolean {
  if (a.endpoints.length !== b.endpoints.length) return false;
  for (let i = 0; i < a.endpoints.length; i++) if (!sameEndpoint(a.endpoints[i]!, b.endpoints[i]!)) return false;
  return sameList(a.clusterEndpoints, b.clusterEndpoints) && sameList(a.localEndpoints, b.localEndpoints)
    && sameList(a.reachableEndpoints, b.reachableEndpoints) && a.hasEndpoints === b.hasEndpoints
    && a.topologyMode === b.topologyMode;
}

/** The changes that turn one service's ports `prev` into `next` (both sorted by id). */
export function diffService(prev: readonly ServicePort[], next: readonly ServicePort[], out: Change[] = []): Change[] {
  let i = 0;
  let j = 0;
  while (i < prev.length || j < next.length) {
    const p = prev[i];
    const n = next[j];
    if (n === undefined || (p !== undefined && p.id < n.id)) {
      out.push({ kind: 'removed', id: p!.id, prev: p! });
      i++;
    } else if (p === undefined || n.id < p.id) {
      out.push({ kind: 'added', id: n.id, next: n });
      j++;
    } else {
      if (!sameService(p, n)) out.push({ kind: 'serviceChanged', id: n.id, prev: p, next: n });
      else if (!sameEndpoints(p, n)) out.push({ kind: 'endpointsChanged', id: n.id, prev: p, next: n });
      i++;
      j++;
    }
  }
  return out;
}

/** All changes between two tables. O(services); use diffServices for incremental syncs. */
export function diff(prev: ServiceTable, next: ServiceTable): Change[] {
  const out: Change[] = [];
  for (const [key, ports] of prev) diffService(ports, next.get(key) ?? [], out);
  for (const [key, ports] of next) if (!prev.has(key)) diffService([], ports, out);
  return out;
}

/**
 * All changes between two tables, like diff(), and every service whose ports did not change gets
 * its previous entries back in `next` (which the caller has just built and owns): what data planes
 * and the model cache per ServicePort object (frontend records, desired map entries) stays valid
 * across a full rebuild, so an unchanged service costs a comparison, not a recomputation.
 */
export function diffSharing(prev: ServiceTable, next: Map<string, readonly ServicePort[]>): Change[] {
  const out: Change[] = [];
  for (const [key, ports] of next) {
    const before = prev.get(key);
    const n = out.length;
    diffService(before ?? [], ports, out);
    if (before !== undefined && out.length === n) next.set(key, before);
  }
  for (const [key, ports] of prev) if (!next.has(key)) diffService(ports, [], out);
  return out;
}

/** Changes for the rebuilt services only; `rebuilt` maps service keys to their new ports. */
export function diffServices(prev: ServiceTable, rebuilt: ReadonlyMap<string, readonly ServicePort[]>): Change[] {
  const out: Change[] = [];
  for (const [key, ports] of rebuilt) diffService(prev.get(key) ?? [], ports, out);
  return out;
}

/** Applies rebuilt services to a table in place (the sync loop owns the only mutable table). */
export function applyRebuilt(table: Map<string, readonly ServicePort[]>, rebuilt: ReadonlyMap<string, readonly ServicePort[]>): void {
  for (const [key, ports] of rebuilt) {
    if (ports.length === 0) table.delete(key);
    else table.set(key, ports);
  }
}

/**
 * One list of changes equivalent to applying `older` then `newer` (per id: the first "before",
 * the last "after"). A sync whose transaction failed hands its changes to the next one this way,
 * so what depends on transitions (conntrack cleanup, counters) sees them once they land.
 */
export function mergeChanges(older: readonly Change[], newer: readonly Change[]): Change[] {
  const span = new Map<string, { prev: ServicePort | undefined; next: ServicePort | undefined }>();
  for (const c of [...older, ...newer]) {
    const { prev, next } = beforeAfter(c);
    const seen = span.get(c.id);
    span.set(c.id, { prev: seen === undefined ? prev : seen.prev, next });
  }
  const out: Change[] = [];
  for (const [id, { prev, next }] of span) {
    if (prev === undefined && next !== undefined) out.push({ kind: 'added', id, next });
    else if (prev !== undefined && next === undefined) out.push({ kind: 'removed', id, prev });
    else if (prev !== undefined && next !== undefined) {
      if (!sameService(prev, next)) out.push({ kind: 'serviceChanged', id, prev, next });
      else if (!sameEndpoints(prev, next)) out.push({ kind: 'endpointsChanged', id, prev, next });
    }
  }
  return out;
}
