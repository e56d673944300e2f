// Which endpoints each kind of traffic may use: traffic policies, terminating-endpoint fallback
// and topology hints, decided exactly as kube-proxy's CategorizeEndpoints decides them.

import type { EndpointInfo, ProxyConfig, ServicePort, TopologyMode } from './types.js';
import { externallyAccessible } from './types.js';

type PolicyInput = Pick<ServicePort, 'internalPolicyLocal' | 'externalPolicyLocal' | 'nodePort' | 'externalIPs' | 'loadBalancerIPs' | 'endpoints'>;

/** The resolved endpoint sets of a service port (see ServicePort for each field's meaning). */
export type Categorized = Pick<ServicePort, 'clusterEndpoints' | 'localEndpoints' | 'reachableEndpoints' | 'hasEndpoints'
  | 'topologyMode' | 'clusterTerminatingFallback' | 'localTerminatingFallback'>;

function usableServingTerminating(ep: EndpointInfo): boolean {
  return ep.serving && ep.terminating;
}

/**
 * Hints are honoured only when every ready endpoint carries them and at least one is meant for
 * this node (or zone); otherwise the whole set is used, so hints never black-hole traffic.
 */
export function topologyMode(endpoints: readonly EndpointInfo[], nodeName: string, zone: string): TopologyMode {
  let allNodeHints = true;
  let anyForNode = false;
  let allZoneHints = true;
  let anyForZone = false;
  let anyReady = false;
  for (const ep of endpoints) {
    if (!ep.ready) continue;
    anyReady = true;
    if (ep.zoneHints.length === 0) allZoneHints = false;
    else if (zone !== '' && ep.zoneHints.includes(zone)) anyForZone = true;
    if (ep.nodeHints.length === 0) allNodeHints = false;
    else if (ep.nodeHints.includes(nodeName)) anyForNode = true;
  }
  if (!anyReady) return '';
  if (allNodeHints && anyForNode) return 'PreferSameNode';
  if (allZoneHints && anyForZone) return 'PreferSameZone';
  return '';
}

function availableForTopology(ep: EndpointInfo, mode: TopologyMode, nodeName: string, zone: string): boolean {
  switch (mode) {
    case '':
      return true;
    case 'PreferSameNode':
      return ep.nodeHints.includes(nodeName);
    case 'PreferSameZone':
      return ep.zoneHints.includes(zone);
  }
}

const ids = (eps: readonly EndpointInfo[]): string[] => eps.map((e) => e.id);

export function categorizeEndpoints(sp: PolicyInput, cfg: Pick<ProxyConfig, 'nodeName' | 'zone'>): Categorized {
  const eps = sp.endpoints;
  // External traffic from pods short-circuits to the Cluster set even under eTP Local.
  const usesCluster = !sp.internalPolicyLocal || externallyAccessible(sp);
  const usesLocal = sp.internalPolicyLocal || sp.externalPolicyLocal;

  let cluster: EndpointInfo[] = [];
  let mode: TopologyMode = '';
  let clusterFallback = false;
  let hasEndpoints = false;
  if (usesCluster) {
    mode = topologyMode(eps, cfg.nodeName, cfg.zone);
    cluster = eps.filter((ep) => ep.ready && availableForTopology(ep, mode, cfg.nodeName, cfg.zone));
    if (cluster.length === 0) {
      // No ready endpoint anywhere, so no topology mode was chosen either: every serving one counts.
      cluster = eps.filter(usableServingTerminating);
      clusterFallback = cluster.length > 0;
    }
    hasEndpoints = cluster.length > 0;
  }

  if (!usesLocal) {
    const c = ids(cluster);
    return { clusterEndpoints: c, localEndpoints: [], reachableEndpoints: c, hasEndpoints, topologyMode: mode, clusterTerminatingFallback: clusterFallback, localTerminatingFallback: false };
  }

  let localReady = false;
  let localTerminating = false;
  for (const ep of eps) {
    if (ep.ready) {
      hasEndpoints = true;
      if (ep.isLocal) localReady = true;
    } else if (usableServingTerminating(ep)) {
      hasEndpoints = true;
      if (ep.isLocal) localTerminating = true;
    }
  }
  let local: EndpointInfo[] = [];
  if (localReady) local = eps.filter((ep) => ep.isLocal && ep.ready);
  else if (localTerminating) local = eps.filter((ep) => ep.isLocal && usableServingTerminating(ep));

  const clusterIds = ids(cluster);
  const localIds = ids(local);
  let reachable: string[];
  if (!usesCluster || cluster.length === 0) {
    reachable = localIds;
  } else {
    const seen = new Set(clusterIds);
    reachable = [...clusterIds];
    for (const id of localIds) if (!seen.has(id)) reachable.push(id);
    reachable.sort();
  }
  return {
    clusterEndpoints: clusterIds,
    localEndpoints: localIds,
    reachableEndpoints: reachable,
    hasEndpoints,
    topologyMode: mode,
    clusterTerminatingFallback: clusterFallback,
    localTerminatingFallback: !localReady && localTerminating,
  };
}
