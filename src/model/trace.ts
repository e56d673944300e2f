// Where does a packet go, and why? Answered from the same resolved sets the data planes program,
// following the order of kube-proxy's rules: service VIP match, firewall (source ranges),
// traffic policy, masquerade.

import type { Protocol } from '../source/objects.js';
import { inAnyCIDR, normalizeIP } from './ip.js';
import type { FrontendKind, ProxyConfig, ServicePort, ServiceTable } from './types.js';
import { allPorts, externalEndpoints, internalEndpoints } from './types.js';

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

/** An index from destination to service ports, built once per table for many traces. */
export interface TraceIndex {
  byVIP: Map<string, ServicePort[]>;
  byNodePort: Map<string, ServicePort>;
  clusterIPs: Set<string>;
}

const vipKey = (ip: string, port: number, proto: string): string => `${ip}|${port}|${proto}`;

export function indexTable(table: ServiceTable): TraceIndex {
  const byVIP = new Map<string, ServicePort[]>();
  const byNodePort = new Map<string, ServicePort>();
  const clusterIPs = new Set<string>();
  const add = (k: string, sp: ServicePort): void => {
    const l = byVIP.get(k);
    if (l === undefined) byVIP.set(k, [sp]);
    else l.push(sp);
  };
  for (const sp of allPorts(table)) {
    clusterIPs.add(sp.clusterIP);
    add(vipKey(sp.clusterIP, sp.port, sp.protocol), sp);
    for (const ip of sp.externalIPs) add(vipKey(ip, sp.port, sp.protocol), sp);
    for (const ip of sp.loadBalancerIPs) add(vipKey(ip, sp.port, sp.protocol), sp);
    if (sp.nodePort > 0) byNodePort.set(`${sp.family}|${sp.nodePort}|${sp.protocol}`, sp);
  }
  return { byVIP, byNodePort, clusterIPs };
}

/** The node addresses that accept NodePort traffic. */
export function nodePortAddresses(cfg: ProxyConfig): string[] {
  if (cfg.nodePortAddresses.length === 0) return cfg.nodeIPs;
  return cfg.nodeIPs.filter((ip) => inAnyCIDR(ip, cfg.nodePortAddresses));
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
  const name = (sp: ServicePort): string => sp.id;

  // 1. VIPs: ClusterIP, externalIP, LoadBalancer ingress IP.
  const candidates = index.byVIP.get(vipKey(dst, pkt.port, pkt.protocol)) ?? [];
  for (const sp of candidates) {
    if (sp.clusterIP === dst) return clusterIPPath(sp, cfg, src, why);
  }
  for (const sp of candidates) {
    if (sp.externalIPs.includes(dst)) {
      why.push(`${dst}:${pkt.port}/${pkt.protocol} is an external IP of ${name(sp)}.`);
      return externalPath(sp, 'externalIP', cfg, src, why);
    }
  }
  for (const sp of candidates) {
    if (sp.loadBalancerIPs.includes(dst)) {
      why.push(`${dst}:${pkt.port}/${pkt.protocol} is a load-balancer IP of ${name(sp)}.`);
      if (sp.hasEndpoints && sp.loadBalancerSourceRanges.length > 0) {
        const allowed = inAnyCIDR(src, sp.loadBalancerSourceRanges)
          || (sp.loadBalancerIPs.includes(src) && primaryNodeIPInRanges(sp, cfg));
        if (!allowed) {
          why.push(`The source ${src} is outside loadBalancerSourceRanges (${sp.loadBalancerSourceRanges.join(', ')}): the firewall drops it.`);
          return { verdict: 'drop', backends: [], masquerade: false, service: name(sp), frontend: 'loadBalancerIP', rule: 'source-range', explanation: why };
        }
        why.push(`The source ${src} is inside loadBalancerSourceRanges.`);
      }
      return externalPath(sp, 'loadBalancerIP', cfg, src, why);
    }
  }

  // 2. NodePorts on the node's NodePort addresses.
  if (nodePortAddresses(cfg).includes(dst)) {
    const family = dst.includes(':') ? 6 : 4;
    const sp = index.byNodePort.get(`${family}|${pkt.port}|${pkt.protocol}`);
    if (sp !== undefined) {
      why.push(`${dst} is a NodePort address of node ${cfg.nodeName} and ${pkt.port}/${pkt.protocol} is the NodePort of ${name(sp)}.`);
      return externalPath(sp, 'nodePort', cfg, src, why);
    }
  }

  // 3. A ClusterIP on a port no service uses: rejected rather than left to time out.
  if (index.clusterIPs.has(dst)) {
    why.push(`${dst} is a ClusterIP, but no service port matches ${pkt.port}/${pkt.protocol}: rejected.`);
    return { verdict: 'reject', backends: [], masquerade: false, rule: 'unknown-port', explanation: why };
  }
  why.push(`${dst}:${pkt.port}/${pkt.protocol} is not a service address of node ${cfg.nodeName}: the proxy leaves it alone.`);
  return { verdict: 'none', backends: [], masquerade: false, rule: 'not-a-service', explanation: why };
}

/** Pod traffic is told apart per IP family: a family without a cluster CIDR has no local detection. */
function detectsLocal(cfg: ProxyConfig, family: 4 | 6): boolean {
  return cfg.clusterCIDRs.some((c) => c.includes(':') === (family === 6));
}

/**
 * A node reaching its own LB IP arrives with the LB IP as source; that is allowed through the
 * source ranges only when they admit the node's primary address of that family.
 */
export function primaryNodeIPInRanges(sp: ServicePort, cfg: ProxyConfig): boolean {
  const primary = cfg.nodeIPs.find((ip) => ip.includes(':') === (sp.family === 6));
  return primary !== undefined && inAnyCIDR(primary, sp.loadBalancerSourceRanges);
}

function noEndpoints(sp: ServicePort, frontend: FrontendKind, why: string[]): TraceResult {
  why.push(`${sp.id} has no ready or serving-terminating endpoints anywhere: rejected (ICMP port unreachable / TCP reset).`);
  return { verdict: 'reject', backends: [], masquerade: false, service: sp.id, frontend, rule: 'no-endpoints', explanation: why };
}

function describeSet(sp: ServicePort, set: 'cluster' | 'local', why: string[]): void {
  if (set === 'cluster') {
    if (sp.topologyMode !== '') why.push(`Topology hints apply (${sp.topologyMode}): only endpoints hinted for this ${sp.topologyMode === 'PreferSameNode' ? 'node' : 'zone'} are used.`);
    if (sp.clusterTerminatingFallback) why.push('No endpoint is ready, so serving-terminating endpoints are used.');
  } else if (sp.localTerminatingFallback) {
    why.push('No local endpoint is ready, so local serving-terminating endpoints are used.');
  }
}

function finish(sp: ServicePort, frontend: FrontendKind, rule: string, ids: readonly string[], masq: boolean, src: string, why: string[]): TraceResult {
  const backends = [...ids].sort();
  const hairpin = backends.some((b) => ipOf(b) === src);
  if (hairpin && !masq) why.push(`The source ${src} is itself one of the endpoints: hairpin traffic is masqueraded.`);
  const masquerade = masq || hairpin;
  why.push(`A new connection goes to one of ${backends.join(', ')}${masquerade ? ', source-NATed to the node' : ', source address kept'}.`);
  if (sp.affinityTimeoutSeconds > 0) why.push(`Session affinity ClientIP: later connections from ${src} stick to the same endpoint for ${sp.affinityTimeoutSeconds} s.`);
  const out: TraceResult = { verdict: 'forward', backends, masquerade, service: sp.id, frontend, rule, explanation: why };
  if (sp.affinityTimeoutSeconds > 0) out.affinityTimeoutSeconds = sp.affinityTimeoutSeconds;
  return out;
}

function clusterIPPath(sp: ServicePort, cfg: ProxyConfig, src: string, why: string[]): TraceResult {
  why.push(`${sp.clusterIP}:${sp.port}/${sp.protocol} is the ClusterIP of ${sp.id}.`);
  if (!sp.hasEndpoints) return noEndpoints(sp, 'clusterIP', why);
  const ids = internalEndpoints(sp);
  if (sp.internalPolicyLocal) {
    if (ids.length === 0) {
      why.push('internalTrafficPolicy is Local and this node has no usable endpoint: dropped.');
      return { verdict: 'drop', backends: [], masquerade: false, service: sp.id, frontend: 'clusterIP', rule: 'no-local-endpoints', explanation: why };
    }
    why.push('internalTrafficPolicy is Local: only endpoints on this node are used.');
    describeSet(sp, 'local', why);
  } else {
    describeSet(sp, 'cluster', why);
  }
  let masq = false;
  if (cfg.masqueradeAll) {
    masq = true;
    why.push('masqueradeAll is set: traffic to ClusterIPs is source-NATed.');
  } else if (detectsLocal(cfg, sp.family) && !inAnyCIDR(src, cfg.clusterCIDRs)) {
    masq = true;
    why.push(`The source ${src} is outside the cluster CIDR (${cfg.clusterCIDRs.join(', ')}): off-cluster traffic to a ClusterIP is masqueraded.`);
  }
  return finish(sp, 'clusterIP', sp.internalPolicyLocal ? 'internal-local' : 'internal-cluster', ids, masq, src, why);
}

function externalPath(sp: ServicePort, frontend: FrontendKind, cfg: ProxyConfig, src: string, why: string[]): TraceResult {
  if (!sp.hasEndpoints) return noEndpoints(sp, frontend, why);
  if (!sp.externalPolicyLocal) {
    why.push('externalTrafficPolicy is Cluster: external traffic may cross nodes, so it is masqueraded.');
    describeSet(sp, 'cluster', why);
    return finish(sp, frontend, 'external-cluster', sp.clusterEndpoints, true, src, why);
  }
  if (detectsLocal(cfg, sp.family) && inAnyCIDR(src, cfg.clusterCIDRs)) {
    why.push(`externalTrafficPolicy is Local, but the source ${src} is a pod: pod traffic to external addresses short-circuits to the cluster-wide endpoints.`);
    describeSet(sp, 'cluster', why);
    return finish(sp, frontend, 'external-pod-shortcircuit', sp.clusterEndpoints, false, src, why);
  }
  if (cfg.nodeIPs.includes(src)) {
    why.push(`externalTrafficPolicy is Local, but the source ${src} is this node: node traffic is masqueraded and uses the cluster-wide endpoints.`);
    describeSet(sp, 'cluster', why);
    return finish(sp, frontend, 'external-node-local', sp.clusterEndpoints, true, src, why);
  }
  const ids = externalEndpoints(sp);
  if (ids.length === 0) {
    why.push(`externalTrafficPolicy is Local and node ${cfg.nodeName} has no usable endpoint: dropped (the client IP is never hidden by forwarding elsewhere).`);
    return { verdict: 'drop', backends: [], masquerade: false, service: sp.id, frontend, rule: 'no-local-endpoints', explanation: why };
  }
  why.push('externalTrafficPolicy is Local: only endpoints on this node are used and the client address is kept.');
  describeSet(sp, 'local', why);
  return finish(sp, frontend, 'external-local', ids, false, src, why);
}
