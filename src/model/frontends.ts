// Per frontend, what each class of source gets: the decisions of kube-proxy's rules (traffic
// policies, no-endpoint REJECT / DROP, the eTP=Local short-circuits, masquerade) taken once, so
// that every data plane and `rudder trace` only read them. Pure.
//
// Only what depends on the single packet stays outside the records: the source-range check of
// LB IPs (sourceAllowed) and hairpin masquerade (the source is the chosen endpoint itself).

import type { Protocol } from '../source/objects.js';
import { inAnyCIDR } from './ip.js';
import { nodeAddresses, nodePortAddresses, primaryNodeIP } from './nodeport-addresses.js';
import type { FrontendKind, ProxyConfig, ServicePort } from './types.js';

export type PathVerdict = 'forward' | 'reject' | 'drop';

/**
 * Why a path is what it is, as `rudder trace` reports it. `no-local-endpoints` is the DROP of a
 * Local policy without local endpoints (internal or external, by the record's kind).
 */
export type PathRule =
  | 'internal-cluster' | 'internal-local' | 'no-endpoints' | 'no-local-endpoints'
  | 'external-cluster' | 'external-local' | 'external-pod-shortcircuit' | 'external-node-local';

/** What one class of source gets at a frontend. */
export interface FrontendPath {
  verdict: PathVerdict;
  /** Which resolved endpoint set `endpoints` is; 'none' unless forwarded. */
  set: 'cluster' | 'local' | 'none';
  /** Endpoint ids ("ip:port", "[ip]:port"), sorted; empty unless forwarded. */
  endpoints: readonly string[];
  /** Source-NAT to the node on the way (hairpin aside, which is decided per packet). */
  masquerade: boolean;
  rule: PathRule;
}

/** The three classes of source every frontend tells apart. */
export interface FrontendPaths {
  /** A process in a pod on this node (source inside the family's cluster CIDR). */
  fromPod: FrontendPath;
  /** A process in the node's own (host) network namespace. */
  fromNode: FrontendPath;
  /** A packet from outside the node; at a ClusterIP, the off-cluster case. */
  fromExternal: FrontendPath;
}

/**
 * One service port's decisions: `internal` for its ClusterIP, `external` for its external IPs,
 * LB IPs and NodePorts (kube-proxy treats them alike, the LB source ranges aside). Data planes
 * that key NodePorts by port rather than by address (iptables KUBE-NODEPORTS, the nftables
 * nodeport maps) read `external` directly; it is the very object the NodePort records carry.
 */
export interface PortPaths {
  internal: FrontendPaths;
  external: FrontendPaths;
}

export interface FrontendRecord extends FrontendPaths {
  /** `${ip}|${port}|${protocol}`; unique per table family once claims are resolved (see outranks). */
  key: string;
  kind: FrontendKind;
  /** A concrete address: a NodePort gets one record per NodePort address of its family. */
  ip: string;
  port: number;
  protocol: Protocol;
  family: 4 | 6;
  service: ServicePort;
  /** 0: no ClientIP affinity. */
  affinityTimeoutSeconds: number;
  /**
   * loadBalancerSourceRanges: only on loadBalancerIP records, and only while the service has
   * endpoints (without any, every source is rejected and kube-proxy installs no firewall).
   */
  sourceRanges: readonly string[];
  /**
   * Whether the node's primary IP of the family is in sourceRanges: a node reaching an LB IP
   * that is its own address arrives with that LB IP as source, and kube-proxy lets it through then.
   */
  primaryNodeIPInRanges: boolean;
  /** Lower wins a contested key: ClusterIP, external IP, LB IP, NodePort (then the lowest service port id). */
  rank: number;
}

const RANK: Record<FrontendKind, number> = { clusterIP: 0, externalIP: 1, loadBalancerIP: 2, nodePort: 3 };
const NONE: readonly string[] = Object.freeze([]);

export function frontendKey(ip: string, port: number, protocol: Protocol): string {
  return `${ip}|${port}|${protocol}`;
}

/** True when `a` wins a key that `b` claims too: deterministic whatever the order of claims. */
export function outranks(a: FrontendRecord, b: FrontendRecord): boolean {
  return a.rank !== b.rank ? a.rank < b.rank : a.service.id < b.service.id;
}

/** Pod traffic is told apart per family: a family without a cluster CIDR has no local detection. */
export function detectsLocal(cfg: Pick<ProxyConfig, 'clusterCIDRs'>, family: 4 | 6): boolean {
  return cfg.clusterCIDRs.some((c) => c.includes(':') === (family === 6));
}

export type SourceClass = 'fromPod' | 'fromNode' | 'fromExternal';

/**
 * Which class a source address falls in, as kube-proxy's rules tell them apart: the cluster CIDR
 * first (a node address inside it counts as a pod, as `-s clusterCIDR` does), then the node's own
 * addresses (`addrtype --src-type LOCAL`), else external.
 */
export function classifySource(src: string, cfg: ProxyConfig): SourceClass {
  if (inAnyCIDR(src, cfg.clusterCIDRs)) return 'fromPod';
  if (cfg.nodeIPs.includes(src) || nodeAddresses(cfg).includes(src)) return 'fromNode';
  return 'fromExternal';
}

/** Whether an LB record's firewall admits `src` (always, without source ranges). */
export function sourceAllowed(rec: FrontendRecord, src: string): boolean {
  if (rec.sourceRanges.length === 0) return true;
  return inAnyCIDR(src, rec.sourceRanges) || (rec.primaryNodeIPInRanges && rec.service.loadBalancerIPs.includes(src));
}

/** Whether two paths are the same decision (a data plane needs no rule to tell their sources apart). */
export function samePath(a: FrontendPath, b: FrontendPath): boolean {
  return a === b || (a.verdict === b.verdict && a.set === b.set && a.endpoints === b.endpoints && a.masquerade === b.masquerade);
}

function path(verdict: PathVerdict, set: FrontendPath['set'], endpoints: readonly string[], masquerade: boolean, rule: PathRule): FrontendPath {
  return Object.freeze({ verdict, set, endpoints, masquerade, rule });
}

function all(p: FrontendPath): FrontendPaths {
  return Object.freeze({ fromPod: p, fromNode: p, fromExternal: p });
}

function internalPaths(sp: ServicePort, cfg: ProxyConfig): FrontendPaths {
  if (!sp.hasEndpoints) return all(path('reject', 'none', NONE, false, 'no-endpoints'));
  if (sp.internalPolicyLocal && sp.localEndpoints.length === 0) return all(path('drop', 'none', NONE, false, 'no-local-endpoints'));
  const set = sp.internalPolicyLocal ? 'local' : 'cluster';
  const eps = sp.internalPolicyLocal ? sp.localEndpoints : sp.clusterEndpoints;
  const rule = sp.internalPolicyLocal ? 'internal-local' : 'internal-cluster';
  const pod = path('forward', set, eps, cfg.masqueradeAll, rule);
  // What does not come from a pod may have been routed here by another node: masqueraded, so
  // the reply comes back through this node (kube-proxy: `! -s clusterCIDR -j KUBE-MARK-MASQ`).
  const offCluster = cfg.masqueradeAll || detectsLocal(cfg, sp.family) ? path('forward', set, eps, true, rule) : pod;
  return Object.freeze({ fromPod: pod, fromNode: offCluster, fromExternal: offCluster });
}

function externalPaths(sp: ServicePort, cfg: ProxyConfig): FrontendPaths {
  if (!sp.hasEndpoints) return all(path('reject', 'none', NONE, false, 'no-endpoints'));
  // Cluster policy may send external traffic to another node: masqueraded so replies return here.
  if (!sp.externalPolicyLocal) return all(path('forward', 'cluster', sp.clusterEndpoints, true, 'external-cluster'));
  // Local policy keeps the client address and never forwards elsewhere: no local endpoint, DROP.
  const outside = sp.localEndpoints.length === 0
    ? path('drop', 'none', NONE, false, 'no-local-endpoints')
    : path('forward', 'local', sp.localEndpoints, false, 'external-local');
  // Pods reach external addresses as if from outside and back: short-circuited to the cluster set.
  const pod = detectsLocal(cfg, sp.family) ? path('forward', 'cluster', sp.clusterEndpoints, false, 'external-pod-shortcircuit') : outside;
  // The node's own connections: the VIP may be its own address, so they are masqueraded.
  const node = path('forward', 'cluster', sp.clusterEndpoints, true, 'external-node-local');
  return Object.freeze({ fromPod: pod, fromNode: node, fromExternal: outside });
}

/**
 * The decisions a config's records depend on, as one string: configs are rebuilt at every sync,
 * so the caches below compare this rather than the config object.
 */
function configSignature(cfg: ProxyConfig): string {
  let sig = signatures.get(cfg);
  if (sig === undefined) {
    sig = JSON.stringify([cfg.masqueradeAll, cfg.clusterCIDRs, cfg.nodeIPs, cfg.nodePortAddresses, cfg.localAddresses ?? []]);
    signatures.set(cfg, sig);
  }
  return sig;
}

const signatures = new WeakMap<ProxyConfig, string>();
const pathCache = new WeakMap<ServicePort, { sig: string; paths: PortPaths }>();
const recordCache = new WeakMap<ServicePort, { sig: string; addrs: readonly string[]; records: readonly FrontendRecord[] }>();

/** A service port's decisions; cached per ServicePort (immutable) and config. Never throws. */
export function portPaths(sp: ServicePort, cfg: ProxyConfig): PortPaths {
  const sig = configSignature(cfg);
  const hit = pathCache.get(sp);
  if (hit !== undefined && hit.sig === sig) return hit.paths;
  const paths: PortPaths = Object.freeze({ internal: internalPaths(sp, cfg), external: externalPaths(sp, cfg) });
  pathCache.set(sp, { sig, paths });
  return paths;
}

function sameAddresses(a: readonly string[], b: readonly string[]): boolean {
  return a === b || (a.length === b.length && a.every((x, i) => x === b[i]));
}

/**
 * Every frontend of a service port, one record per concrete address, in the order ClusterIP,
 * external IPs, LB IPs, NodePorts (one per address of `nodePortAddrs` of the port's family; a
 * data plane that keys NodePorts by port may pass [] and read portPaths().external). Cached per
 * ServicePort, config and address list, so a sync costs what its changed ports cost. Never throws.
 */
export function frontendRecords(sp: ServicePort, cfg: ProxyConfig, nodePortAddrs: readonly string[] = nodePortAddresses(cfg)): readonly FrontendRecord[] {
  const sig = configSignature(cfg);
  const hit = recordCache.get(sp);
  if (hit !== undefined && hit.sig === sig && sameAddresses(hit.addrs, nodePortAddrs)) return hit.records;
  const { internal, external } = portPaths(sp, cfg);
  const family = sp.family;
  const ranges = sp.hasEndpoints ? sp.loadBalancerSourceRanges : NONE;
  const primary = primaryNodeIP(cfg, family);
  const nodeInRanges = ranges.length > 0 && primary !== '' && inAnyCIDR(primary, ranges);
  const out: FrontendRecord[] = [];
  const add = (kind: FrontendKind, ip: string, port: number, paths: FrontendPaths): void => {
    const lb = kind === 'loadBalancerIP';
    out.push(Object.freeze({
      key: frontendKey(ip, port, sp.protocol), kind, ip, port, protocol: sp.protocol, family, service: sp,
      affinityTimeoutSeconds: sp.affinityTimeoutSeconds,
      sourceRanges: lb ? ranges : NONE, primaryNodeIPInRanges: lb && nodeInRanges,
      rank: RANK[kind], ...paths,
    }));
  };
  add('clusterIP', sp.clusterIP, sp.port, internal);
  for (const ip of sp.externalIPs) add('externalIP', ip, sp.port, external);
  for (const ip of sp.loadBalancerIPs) add('loadBalancerIP', ip, sp.port, external);
  if (sp.nodePort > 0) {
    for (const ip of nodePortAddrs) if (ip.includes(':') === (family === 6)) add('nodePort', ip, sp.nodePort, external);
  }
  const records = Object.freeze(out);
  recordCache.set(sp, { sig, addrs: nodePortAddrs, records });
  return records;
}
