// The service table: what every data plane programs and what `rudder trace` explains.
// Plain data; endpoint sets arrive already resolved (traffic policy, terminating fallback,
// topology), so no data plane re-implements a rule of the semantics.

import type { IPFamily, LbAlgorithm, Protocol } from '../source/objects.js';

/** Node-level settings that change how the table is built. Never edited in place: what is derived from one is cached per object. */
export interface ProxyConfig {
  nodeName: string;
  /** This node's addresses; the primary one first. */
  nodeIPs: string[];
  /** topology.kubernetes.io/zone of this node, "" when unknown. */
  zone: string;
  /** Pod CIDRs of the cluster: sources outside them are "off-cluster" (masqueraded to ClusterIPs). Empty: no local detection. */
  clusterCIDRs: string[];
  /**
   * kube-proxy's --nodeport-addresses: CIDRs selecting which local addresses accept NodePort
   * traffic (a family without a CIDR of its own, or with a /0, accepts them on every address),
   * or ["primary"]: the primary node IP of each family. Empty: every local address.
   * Decided by nodePortSelection() in nodeport-addresses.ts.
   */
  nodePortAddresses: string[];
  /** Masquerade all traffic to ClusterIPs. */
  masqueradeAll: boolean;
  /** Services labelled service.kubernetes.io/service-proxy-name with another value are skipped. */
  proxyName: string;
  /**
   * The addresses the kernel treats as local in this network namespace (no loopback, no
   * link-local), as source/local-addresses.ts reads them; absent or empty: unknown, and the node
   * IPs stand in for them. Optional so that configs built before discovery existed still compile.
   */
  localAddresses?: string[];
}

export const DEFAULT_PROXY_NAME = 'rudder';

/** One endpoint of a service port, with everything a rule might test. */
export interface EndpointInfo {
  ip: string;
  port: number;
  /** "ip:port", or "[ip]:port" for IPv6: the id used in sets, rule comments and traces. */
  id: string;
  nodeName: string;
  isLocal: boolean;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  zone: string;
  zoneHints: string[];
  nodeHints: string[];
}

/** How the Cluster-policy set was chosen, for `trace` and metrics. */
export type TopologyMode = '' | 'PreferSameZone' | 'PreferSameNode';

export type FrontendKind = 'clusterIP' | 'externalIP' | 'loadBalancerIP' | 'nodePort';

/** A frontend of a port as the Service spells it; frontends.ts turns these into per-address records. */
export interface Frontend {
  kind: FrontendKind;
  /** The VIP; for nodePort, "" (every NodePort address of the node; see nodePortSelection). */
  ip: string;
  port: number;
}

/**
 * One service port in one IP family: kube-proxy's ServicePortName, resolved.
 * Immutable once built: the table replaces entries, it never edits them.
 */
export interface ServicePort {
  /** "namespace/name:portName/PROTO" (+ "/v6" for the IPv6 entry of a dual-stack service). */
  id: string;
  namespace: string;
  name: string;
  portName: string;
  protocol: Protocol;
  family: IPFamily;
  clusterIP: string;
  port: number;
  /** 0: no NodePort. */
  nodePort: number;
  externalIPs: string[];
  loadBalancerIPs: string[];
  loadBalancerSourceRanges: string[];
  /** 0: no session affinity; else the ClientIP affinity timeout. */
  affinityTimeoutSeconds: number;
  /** externalTrafficPolicy Local on a service that accepts external traffic. */
  externalPolicyLocal: boolean;
  internalPolicyLocal: boolean;
  healthCheckNodePort: number;
  /** Backend selection from the service.rudder.io/lb-algorithm annotation ("": the node's default); the eBPF plane's. */
  lbAlgorithm: LbAlgorithm;

  /** Every endpoint known for this port (any state), sorted by id. */
  endpoints: EndpointInfo[];
  /** Ids of the endpoints Cluster-policy traffic may use (ready, else serving-terminating; topology applied). */
  clusterEndpoints: string[];
  /** Ids of the node-local endpoints Local-policy traffic may use (ready, else serving-terminating). */
  localEndpoints: string[];
  /** Union of the sets above that this service actually uses: every endpoint this node can reach. */
  reachableEndpoints: string[];
  /** Some usable endpoint exists anywhere in the cluster (else traffic is rejected). */
  hasEndpoints: boolean;
  topologyMode: TopologyMode;
  /** The Cluster set fell back to serving-terminating endpoints (no ready endpoint anywhere). */
  clusterTerminatingFallback: boolean;
  /** The Local set fell back to serving-terminating endpoints. */
  localTerminatingFallback: boolean;
}

export function externallyAccessible(sp: Pick<ServicePort, 'nodePort' | 'externalIPs' | 'loadBalancerIPs'>): boolean {
  return sp.nodePort > 0 || sp.externalIPs.length > 0 || sp.loadBalancerIPs.length > 0;
}

export function usesLocalEndpoints(sp: ServicePort): boolean {
  return sp.internalPolicyLocal || sp.externalPolicyLocal;
}

/** The endpoint set ClusterIP traffic uses; empty with hasEndpoints set means "drop" (iTP Local, none local). */
export function internalEndpoints(sp: ServicePort): string[] {
  return sp.internalPolicyLocal ? sp.localEndpoints : sp.clusterEndpoints;
}

/** The endpoint set external traffic from outside the node uses. */
export function externalEndpoints(sp: ServicePort): string[] {
  return sp.externalPolicyLocal ? sp.localEndpoints : sp.clusterEndpoints;
}

export function frontends(sp: ServicePort): Frontend[] {
  const out: Frontend[] = [{ kind: 'clusterIP', ip: sp.clusterIP, port: sp.port }];
  for (const ip of sp.externalIPs) out.push({ kind: 'externalIP', ip, port: sp.port });
  for (const ip of sp.loadBalancerIPs) out.push({ kind: 'loadBalancerIP', ip, port: sp.port });
  if (sp.nodePort > 0) out.push({ kind: 'nodePort', ip: '', port: sp.nodePort });
  return out;
}

/**
 * The service table: for each service ("namespace/name"), its ports sorted by id. Grouped by
 * service because every change arrives per service (a Service or one of its slices changed).
 */
export type ServiceTable = ReadonlyMap<string, readonly ServicePort[]>;

export function* allPorts(table: ServiceTable): Generator<ServicePort> {
  for (const ports of table.values()) yield* ports;
}

/** The table's ports of one IP family, sorted by id (the order data planes write them in). O(table). */
export function familyPorts(table: ServiceTable, family: IPFamily): ServicePort[] {
  const ports: ServicePort[] = [];
  for (const sp of allPorts(table)) if (sp.family === family) ports.push(sp);
  return ports.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** What changed between two tables, per service port. Data planes handle each kind exhaustively. */
export type Change =
  | { kind: 'added'; id: string; next: ServicePort }
  | { kind: 'removed'; id: string; prev: ServicePort }
  /** Frontends or policies changed (endpoints may have changed too). */
  | { kind: 'serviceChanged'; id: string; prev: ServicePort; next: ServicePort }
  /** Only the endpoints or the resolved sets changed. */
  | { kind: 'endpointsChanged'; id: string; prev: ServicePort; next: ServicePort };

export type ChangeKind = Change['kind'];

/**
 * The entry before and after a change (undefined where there is none). Exhaustive over Change:
 * a new kind of change does not compile until it is handled here.
 */
export function beforeAfter(c: Change): { prev: ServicePort | undefined; next: ServicePort | undefined } {
  switch (c.kind) {
    case 'added':
      return { prev: undefined, next: c.next };
    case 'removed':
      return { prev: c.prev, next: undefined };
    case 'serviceChanged':
    case 'endpointsChanged':
      return { prev: c.prev, next: c.next };
    default: {
      const never: never = c;
      throw new TypeError(`unhandled change ${JSON.stringify(never)}`);
    }
  }
}
