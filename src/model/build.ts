// Snapshot -> service table, with kube-proxy's semantics. Pure: no I/O, no clock.
// The whole-table build and the per-service rebuild share buildService(), so a change to one
// service costs the same whatever the number of services.

import type { EndpointSlice, Service } from '../source/objects.js';
import { categorizeEndpoints } from './policy.js';
import type { EndpointInfo, ProxyConfig, ServicePort, ServiceTable } from './types.js';

/** The proxy's view of the cluster: the latest Services and their EndpointSlices. */
export interface Snapshot {
  /** By "namespace/name". */
  services: ReadonlyMap<string, Service>;
  /** By the owning service's "namespace/name", then by slice name. */
  slices: ReadonlyMap<string, ReadonlyMap<string, EndpointSlice>>;
}

export function endpointId(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * Why a service produces no entries (a proxy-name label for another proxy), or null.
 * Headless and ExternalName services never reach the model: the decoder ignores them.
 */
export function skipReason(svc: Service, cfg: ProxyConfig): string | null {
  if (svc.proxyName !== '' && svc.proxyName !== cfg.proxyName) {
    return `labelled service.kubernetes.io/service-proxy-name=${svc.proxyName}, not ${cfg.proxyName}`;
  }
  return null;
}

function familyOf(validated: string): 4 | 6 {
  return validated.includes(':') ? 6 : 4;
}

/** Addresses or CIDRs (validated text) of one family. */
function byFamily(items: readonly string[], family: 4 | 6): string[] {
  return items.length === 0 ? EMPTY : items.filter((x) => familyOf(x) === family);
}

const EMPTY = Object.freeze([]) as readonly string[] as string[];

/**
 * Builds the entries of one service, one per port and IP family, sorted by id.
 * Slices are merged in name order; an endpoint listed twice counts once (the node-local copy
 * wins), as kube-proxy's endpoint cache does.
 */
export function buildService(
  svc: Service,
  slices: ReadonlyMap<string, EndpointSlice> | undefined,
  cfg: ProxyConfig,
): ServicePort[] {
  if (skipReason(svc, cfg) !== null) return [];
  let sortedSlices: EndpointSlice[] = [];
  if (slices !== undefined) {
    sortedSlices = [...slices.values()];
    if (sortedSlices.length > 1) sortedSlices.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
  const out: ServicePort[] = [];
  for (const clusterIP of svc.clusterIPs) {
    // Addresses were validated by the decoder: the family is in the text.
    const family = familyOf(clusterIP);
    const externalIPs = byFamily(svc.externalIPs, family);
    const loadBalancerIPs = byFamily(svc.loadBalancerIPs, family);
    const loadBalancerSourceRanges = byFamily(svc.loadBalancerSourceRanges, family);
    for (const p of svc.ports) {
      const endpoints = collectEndpoints(sortedSlices, family, p.name, p.protocol, cfg.nodeName);
      const nodePort = p.nodePort;
      const accessible = nodePort > 0 || externalIPs.length > 0 || loadBalancerIPs.length > 0;
      const externalPolicyLocal = accessible && svc.externalTrafficPolicy === 'Local';
      const internalPolicyLocal = svc.internalTrafficPolicy === 'Local';
      const c = categorizeEndpoints({ internalPolicyLocal, externalPolicyLocal, nodePort, externalIPs, loadBalancerIPs, endpoints }, cfg);
      out.push({
        id: `${svc.namespace}/${svc.name}:${p.name}/${p.protocol}${family === 6 ? '/v6' : ''}`,
        namespace: svc.namespace,
        name: svc.name,
        portName: p.name,
        protocol: p.protocol,
        family,
        clusterIP,
        port: p.port,
        nodePort,
        externalIPs,
        loadBalancerIPs,
        loadBalancerSourceRanges,
        affinityTimeoutSeconds: svc.affinityTimeoutSeconds,
        externalPolicyLocal,
        internalPolicyLocal,
        healthCheckNodePort: externalPolicyLocal ? svc.healthCheckNodePort : 0,
        lbAlgorithm: svc.lbAlgorithm,
        endpoints,
        clusterEndpoints: c.clusterEndpoints,
        localEndpoints: c.localEndpoints,
        reachableEndpoints: c.reachableEndpoints,
        hasEndpoints: c.hasEndpoints,
        topologyMode: c.topologyMode,
        clusterTerminatingFallback: c.clusterTerminatingFallback,
        localTerminatingFallback: c.localTerminatingFallback,
      });
    }
  }
  if (out.length > 1) out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return out;
}

function collectEndpoints(
  slices: readonly EndpointSlice[],
  family: 4 | 6,
  portName: string,
  protocol: string,
  nodeName: string,
): EndpointInfo[] {
  const byId = new Map<string, EndpointInfo>();
  let sorted = true;
  let lastId = '';
  for (const slice of slices) {
    if (slice.family !== family) continue;
    for (const sp of slice.ports) {
      if (sp.name !== portName || sp.protocol !== protocol) continue;
      for (const ep of slice.endpoints) {
        const id = endpointId(ep.address, sp.port);
        const isLocal = ep.nodeName !== '' && ep.nodeName === nodeName;
        if (byId.has(id) && !isLocal) continue;
        if (id <= lastId) sorted = false;
        lastId = id;
        byId.set(id, {
          ip: ep.address,
          port: sp.port,
          id,
          nodeName: ep.nodeName,
          isLocal,
          ready: ep.ready,
          serving: ep.serving,
          terminating: ep.terminating,
          zone: ep.zone,
          zoneHints: ep.zoneHints,
          nodeHints: ep.nodeHints,
        });
      }
    }
  }
  const out = [...byId.values()];
  if (!sorted) out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return out;
}

/** Builds the whole table. */
export function build(snapshot: Snapshot, cfg: ProxyConfig): Map<string, readonly ServicePort[]> {
  const table = new Map<string, readonly ServicePort[]>();
  for (const [key, svc] of snapshot.services) {
    const ports = buildService(svc, snapshot.slices.get(key), cfg);
    if (ports.length > 0) table.set(key, ports);
  }
  return table;
}

/** Rebuilds the entries of the named services only; the result maps each key to its new ports (empty: gone). */
export function rebuildServices(
  snapshot: Snapshot,
  cfg: ProxyConfig,
  serviceKeys: Iterable<string>,
): Map<string, readonly ServicePort[]> {
  const out = new Map<string, readonly ServicePort[]>();
  for (const key of serviceKeys) {
    const svc = snapshot.services.get(key);
    out.set(key, svc === undefined ? [] : buildService(svc, snapshot.slices.get(key), cfg));
  }
  return out;
}

export type { ServiceTable };
