// Where does a packet go, and why? Answered from the frontend records every data plane programs
// (frontends.ts): the record the destination matches, then the path of the source's class. Only
// what depends on the packet itself is decided here: the LB source-range check and hairpin.

import type { Protocol } from '../source/objects.js';
import { classifySource, frontendKey, frontendRecords, outranks, sourceAllowed } from './frontends.js';
import type { FrontendPath, FrontendRecord } from './frontends.js';
import { normalizeIP } from './ip.js';
import type { FrontendKind, ProxyConfig, ServicePort, ServiceTable } from './types.js';
import { allPorts } from './types.js';

export { nodePortAddresses } from './nodeport-addresses.js';

export interface Packet {
  src: string;
  dst: string;
  port: number;
  protocol: Protocol;
}

export type Verdict = 'forward' | 'reject' | 'drop' | 'none';

export interface TraceResult {
  verdict: Verdict;
  /** Endpoints a new connection may reach, "ip:port", sorted. */
  backends: string[];
  /** Source-NAT on the way to (some of) the backends. */
  masquerade: boolean;
  /** The service port that matched, "namespace/name:port/PROTO". */
  service?: string;
  frontend?: FrontendKind;
  /** Which rule decided, as a short machine-readable tag. */
  rule: string;
  /** ClientIP affinity timeout, when the service has one. */
  affinityTimeoutSeconds?: number;
  /** The reasoning, one sentence per step, for humans. */
  explanation: string[];
}

/**
 * An index from destination to frontend record, for many traces over one table. The records
 * depend on the node config (NodePort addresses), so they are indexed on first use per config.
 */
export interface TraceIndex {
  /** The winning record per frontend key (`ip|port|PROTO`). */
  records(cfg: ProxyConfig): ReadonlyMap<string, FrontendRecord>;
  clusterIPs: ReadonlySet<string>;
}

/** O(table); build it once when tracing many packets. */
export function indexTable(table: ServiceTable): TraceIndex {
  const clusterIPs = new Set<string>();
  for (const sp of allPorts(table)) clusterIPs.add(sp.clusterIP);
  const byConfig = new WeakMap<ProxyConfig, Map<string, FrontendRecord>>();
  return {
    clusterIPs,
    records(cfg) {
      let m = byConfig.get(cfg);
      if (m !== undefined) return m;
      m = new Map();
      for (const sp of allPorts(table)) {
        for (const rec of frontendRecords(sp, cfg)) {
          const seen = m.get(rec.key);
          if (seen === undefined || outranks(rec, seen)) m.set(rec.key, rec);
        }
      }
      byConfig.set(cfg, m);
      return m;
    },
  };
}

function ipOf(id: string): string {
  return id.startsWith('[') ? id.slice(1, id.indexOf(']')) : id.slice(0, id.lastIndexOf(':'));
}

/**
 * Traces one new connection. Throws TypeError only for malformed packets (the CLI validates
 * its flags first).
 */
export function trace(table: ServiceTable, cfg: ProxyConfig, pkt: Packet, index: TraceIndex = indexTable(table)): TraceResult {
  const src = normalizeIP(pkt.src);
  const dst = normalizeIP(pkt.dst);
  if (src === null || dst === null) throw new TypeError(`not an IP address: ${src === null ? pkt.src : pkt.dst}`);
  const why: string[] = [];
  const rec = index.records(cfg).get(frontendKey(dst, pkt.port, pkt.protocol));
  if (rec !== undefined) return answer(rec, cfg, src, why);
  // A ClusterIP on a port no service uses: rejected rather than left to time out.
  if (index.clusterIPs.has(dst)) {
    why.push(`${dst} is a ClusterIP, but no service port matches ${pkt.port}/${pkt.protocol}: rejected.`);
    return { verdict: 'reject', backends: [], masquerade: false, rule: 'unknown-port', explanation: why };
  }
  why.push(`${dst}:${pkt.port}/${pkt.protocol} is not a service address of node ${cfg.nodeName}: the proxy leaves it alone.`);
  return { verdict: 'none', backends: [], masquerade: false, rule: 'not-a-service', explanation: why };
}

function answer(rec: FrontendRecord, cfg: ProxyConfig, src: string, why: string[]): TraceResult {
  const sp = rec.service;
  const at = `${rec.ip}:${rec.port}/${rec.protocol}`;
  switch (rec.kind) {
    case 'clusterIP': why.push(`${at} is the ClusterIP of ${sp.id}.`); break;
    case 'externalIP': why.push(`${at} is an external IP of ${sp.id}.`); break;
    case 'loadBalancerIP': why.push(`${at} is a load-balancer IP of ${sp.id}.`); break;
    case 'nodePort': why.push(`${rec.ip} is a NodePort address of node ${cfg.nodeName} and ${rec.port}/${rec.protocol} is the NodePort of ${sp.id}.`); break;
  }
  if (rec.sourceRanges.length > 0) {
    if (!sourceAllowed(rec, src)) {
      why.push(`The source ${src} is outside loadBalancerSourceRanges (${rec.sourceRanges.join(', ')}): the firewall drops it.`);
      return { verdict: 'drop', backends: [], masquerade: false, service: sp.id, frontend: rec.kind, rule: 'source-range', explanation: why };
    }
    why.push(`The source ${src} is inside loadBalancerSourceRanges.`);
  }
  const p = rec[classifySource(src, cfg)];
  explainPath(rec, p, cfg, src, why);
  if (p.verdict !== 'forward') {
    return { verdict: p.verdict, backends: [], masquerade: false, service: sp.id, frontend: rec.kind, rule: p.rule, explanation: why };
  }
  return finish(rec, p, src, why);
}

function explainPath(rec: FrontendRecord, p: FrontendPath, cfg: ProxyConfig, src: string, why: string[]): void {
  const sp = rec.service;
  switch (p.rule) {
    case 'no-endpoints':
      why.push(`${sp.id} has no ready or serving-terminating endpoints anywhere: rejected (ICMP port unreachable / TCP reset).`);
      return;
    case 'no-local-endpoints':
      why.push(rec.kind === 'clusterIP'
        ? 'internalTrafficPolicy is Local and this node has no usable endpoint: dropped.'
        : `externalTrafficPolicy is Local and node ${cfg.nodeName} has no usable endpoint: dropped (the client IP is never hidden by forwarding elsewhere).`);
      return;
    case 'internal-local':
      why.push('internalTrafficPolicy is Local: only endpoints on this node are used.');
      break;
    case 'internal-cluster':
      break;
    case 'external-cluster':
      why.push('externalTrafficPolicy is Cluster: external traffic may cross nodes, so it is masqueraded.');
      break;
    case 'external-pod-shortcircuit':
      why.push(`externalTrafficPolicy is Local, but the source ${src} is a pod: pod traffic to external addresses short-circuits to the cluster-wide endpoints.`);
      break;
    case 'external-node-local':
      why.push(`externalTrafficPolicy is Local, but the source ${src} is this node: node traffic is masqueraded and uses the cluster-wide endpoints.`);
      break;
    case 'external-local':
      why.push('externalTrafficPolicy is Local: only endpoints on this node are used and the client address is kept.');
      break;
  }
  describeSet(sp, p.set, why);
  if (rec.kind === 'clusterIP' && p.masquerade) {
    why.push(cfg.masqueradeAll
      ? 'masqueradeAll is set: traffic to ClusterIPs is source-NATed.'
      : `The source ${src} is outside the cluster CIDR (${cfg.clusterCIDRs.join(', ')}): off-cluster traffic to a ClusterIP is masqueraded.`);
  }
}

function describeSet(sp: ServicePort, set: FrontendPath['set'], why: string[]): void {
  if (set === 'cluster') {
    if (sp.topologyMode !== '') why.push(`Topology hints apply (${sp.topologyMode}): only endpoints hinted for this ${sp.topologyMode === 'PreferSameNode' ? 'node' : 'zone'} are used.`);
    if (sp.clusterTerminatingFallback) why.push('No endpoint is ready, so serving-terminating endpoints are used.');
  } else if (set === 'local' && sp.localTerminatingFallback) {
    why.push('No local endpoint is ready, so local serving-terminating endpoints are used.');
  }
}

function finish(rec: FrontendRecord, p: FrontendPath, src: string, why: string[]): TraceResult {
  const backends = [...p.endpoints];
  // Hairpin: a pod reaching itself through the service must be masqueraded to get the reply.
  const hairpin = backends.some((b) => ipOf(b) === src);
  if (hairpin && !p.masquerade) why.push(`The source ${src} is itself one of the endpoints: hairpin traffic is masqueraded.`);
  const masquerade = p.masquerade || hairpin;
  why.push(`A new connection goes to one of ${backends.join(', ')}${masquerade ? ', source-NATed to the node' : ', source address kept'}.`);
  const timeout = rec.affinityTimeoutSeconds;
  if (timeout > 0) why.push(`Session affinity ClientIP: later connections from ${src} stick to the same endpoint for ${timeout} s.`);
  const out: TraceResult = { verdict: 'forward', backends, masquerade, service: rec.service.id, frontend: rec.kind, rule: p.rule, explanation: why };
  if (timeout > 0) out.affinityTimeoutSeconds = timeout;
  return out;
}
