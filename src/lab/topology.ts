// A lab topology as plain data, the default two-node topology, and the checks that keep a topology
// inside the lab's own address ranges before anything is created.
//
// Address plan of the default topology:
//   node network  198.18.0.0/24   node-1 .2, node-2 .3, client .100   (benchmarking range, never routed)
//   external      198.18.1.0/24   LoadBalancer ingress IPs and externalIPs; the client routes it to node-1
//   cluster CIDR  10.244.0.0/16   node-N owns 10.244.N.0/24; its pods' gateway is 10.244.N.1
//   service CIDR  10.96.0.0/12

import { LabError } from './errors.js';
import { cidrContains, cidrOverlaps, cidrWithin, lastAddress, nthAddress, parseCidr4, parseIPv4, type Cidr4 } from './ipv4.js';

export interface NodeSpec {
  /** Role name, also the namespace suffix: lowercase letters, digits, '-', at most 16 chars. */
  name: string;
  /** Address on the node network. */
  ip: string;
  /** This node's pod CIDR, inside the cluster CIDR; its first host address is the pods' gateway. */
  podCIDR: string;
  /** topology.kubernetes.io/zone, for topology-hint tests (informational for the lab itself). */
  zone?: string;
}

export interface PodSpec {
  name: string;
  /** Name of the node the pod runs on. */
  node: string;
  /** Pod IP, inside its node's pod CIDR. */
  ip: string;
  /** TCP ports the pod's HTTP server listens on. */
  ports: number[];
  /** UDP ports the pod's echo server listens on. */
  udpPorts: number[];
}

export interface ClientSpec {
  /** Role name of an external client (a namespace on the node network, not a node). */
  name: string;
  ip: string;
}

export interface RouteSpec {
  /** Role whose namespace gets the route. */
  ns: string;
  /** Destination CIDR; must lie inside one of the lab's ranges (never a default route). */
  dst: string;
  /** Next hop, an address on the node network. */
  via: string;
}

export interface Topology {
  nodeNetwork: string;
  clusterCIDR: string;
  serviceCIDR: string;
  /** LoadBalancer ingress IPs and externalIPs used by tests. */
  externalCIDR: string;
  nodes: NodeSpec[];
  pods: PodSpec[];
  clients: ClientSpec[];
  /** Extra routes, applied last (e.g. the client's route to the external range). */
  routes: RouteSpec[];
}

/** The role name of the namespace that holds the node network's bridge. */
export const FABRIC_ROLE = 'fabric';

/** Name of the bridge inside the fabric namespace. */
export const FABRIC_BRIDGE = 'br0';

/**
 * Two nodes with two pods each and one external client; every pod serves HTTP on 8080 and 8081
 * and UDP echo on 5300. The client routes the service CIDR and the external range to node-1.
 */
export function defaultTopology(): Topology {
  const pod = (name: string, node: string, ip: string): PodSpec => ({ name, node, ip, ports: [8080, 8081], udpPorts: [5300] });
  return {
    nodeNetwork: '198.18.0.0/24',
    clusterCIDR: '10.244.0.0/16',
    serviceCIDR: '10.96.0.0/12',
    externalCIDR: '198.18.1.0/24',
    nodes: [
      { name: 'node-1', ip: '198.18.0.2', podCIDR: '10.244.1.0/24', zone: 'zone-a' },
      { name: 'node-2', ip: '198.18.0.3', podCIDR: '10.244.2.0/24', zone: 'zone-b' },
    ],
    pods: [
      pod('pod-1a', 'node-1', '10.244.1.10'),
      pod('pod-1b', 'node-1', '10.244.1.11'),
      pod('pod-2a', 'node-2', '10.244.2.10'),
      pod('pod-2b', 'node-2', '10.244.2.11'),
    ],
    clients: [{ name: 'client', ip: '198.18.0.100' }],
    routes: [
      { ns: 'client', dst: '198.18.1.0/24', via: '198.18.0.2' },
      { ns: 'client', dst: '10.96.0.0/12', via: '198.18.0.2' },
    ],
  };
}

/** The address a node's pods use as their gateway: the first host address of its pod CIDR. */
export function podGateway(node: NodeSpec): string {
  const c = parseCidr4(node.podCIDR);
  if (c === null) throw new LabError('ETOPOLOGY', `node ${node.name}: podCIDR ${JSON.stringify(node.podCIDR)} is not an IPv4 CIDR`);
  return nthAddress(c, 1);
}

/** Interface name (<= 15 chars) used for `base`, or a numbered fallback when it would not fit. */
export function ifName(prefix: string, base: string, index: number): string {
  const name = `${prefix}${base}`;
  return name.length <= 15 ? name : `${prefix}${index}`;
}

const ROLE_NAME = /^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$/;

/**
 * Checks that a topology is well formed and stays inside the lab's ranges.
 * Throws LabError ETOPOLOGY naming the object and field at the first problem.
 */
export function validateTopology(t: Topology): void {
  const fail = (msg: string): never => { throw new LabError('ETOPOLOGY', msg); };
  const cidr = (what: string, s: string): Cidr4 => parseCidr4(s) ?? fail(`${what}: ${JSON.stringify(s)} is not an IPv4 CIDR (host bits clear)`);
  const ip = (what: string, s: string): number => parseIPv4(s) ?? fail(`${what}: ${JSON.stringify(s)} is not an IPv4 address`);

  const nodeNet = cidr('nodeNetwork', t.nodeNetwork);
  const cluster = cidr('clusterCIDR', t.clusterCIDR);
  const service = cidr('serviceCIDR', t.serviceCIDR);
  const external = cidr('externalCIDR', t.externalCIDR);
  const ranges: [string, Cidr4][] = [['nodeNetwork', nodeNet], ['clusterCIDR', cluster], ['serviceCIDR', service], ['externalCIDR', external]];
  for (const [name, c] of ranges) if (c.prefix < 8) fail(`${name}: ${formatCidr(c)} is too wide for a lab range (prefix < 8)`);
  for (let i = 0; i < ranges.length; i++) {
    for (let j = i + 1; j < ranges.length; j++) {
      const [an, a] = ranges[i]!;
      const [bn, b] = ranges[j]!;
      if (cidrOverlaps(a, b)) fail(`${an} and ${bn} overlap`);
    }
  }

  const roles = new Set<string>([FABRIC_ROLE]);
  const addRole = (what: string, name: string): void => {
    if (!ROLE_NAME.test(name)) fail(`${what}: name ${JSON.stringify(name)} must be 1-16 chars of a-z, 0-9, '-'`);
    if (roles.has(name)) fail(`${what}: name ${JSON.stringify(name)} is used twice (or is reserved)`);
    roles.add(name);
  };
  const usedIPs = new Map<number, string>();
  const claimIP = (what: string, v: number): void => {
    const other = usedIPs.get(v);
    if (other !== undefined) fail(`${what}: address is also used by ${other}`);
    usedIPs.set(v, what);
  };
  const onNodeNetwork = (what: string, s: string): void => {
    const v = ip(what, s);
    if (!cidrContains(nodeNet, v) || v === nodeNet.network || v === lastAddress(nodeNet)) fail(`${what}: ${s} is not a host address of nodeNetwork ${t.nodeNetwork}`);
    claimIP(what, v);
  };

  if (t.nodes.length === 0) fail('nodes: a lab needs at least one node');
  const podCIDRs = new Map<string, Cidr4>();
  for (const n of t.nodes) {
    addRole(`node ${n.name}`, n.name);
    onNodeNetwork(`node ${n.name} ip`, n.ip);
    const pc = cidr(`node ${n.name} podCIDR`, n.podCIDR);
    if (!cidrWithin(pc, cluster)) fail(`node ${n.name} podCIDR: ${n.podCIDR} is not inside clusterCIDR ${t.clusterCIDR}`);
    if (pc.prefix > 30) fail(`node ${n.name} podCIDR: ${n.podCIDR} is too small for a gateway and pods`);
    for (const [other, oc] of podCIDRs) if (cidrOverlaps(pc, oc)) fail(`node ${n.name} podCIDR: overlaps node ${other}'s`);
    podCIDRs.set(n.name, pc);
    claimIP(`node ${n.name} pod gateway`, pc.network + 1);
  }
  for (const c of t.clients) {
    addRole(`client ${c.name}`, c.name);
    onNodeNetwork(`client ${c.name} ip`, c.ip);
  }
  const port = (what: string, p: number): void => {
    if (!Number.isInteger(p) || p < 1 || p > 65535) fail(`${what}: ${p} is not a port number`);
  };
  for (const p of t.pods) {
    addRole(`pod ${p.name}`, p.name);
    const pc = podCIDRs.get(p.node) ?? fail(`pod ${p.name} node: no node named ${JSON.stringify(p.node)}`);
    const v = ip(`pod ${p.name} ip`, p.ip);
    if (!cidrContains(pc, v) || v === pc.network || v === lastAddress(pc)) fail(`pod ${p.name} ip: ${p.ip} is not a host address of node ${p.node}'s podCIDR ${formatCidr(pc)}`);
    claimIP(`pod ${p.name} ip`, v);
    if (new Set(p.ports).size !== p.ports.length) fail(`pod ${p.name} ports: duplicates`);
    if (new Set(p.udpPorts).size !== p.udpPorts.length) fail(`pod ${p.name} udpPorts: duplicates`);
    p.ports.forEach((x) => port(`pod ${p.name} ports`, x));
    p.udpPorts.forEach((x) => port(`pod ${p.name} udpPorts`, x));
  }
  for (const [i, r] of t.routes.entries()) {
    const what = `routes[${i}]`;
    if (!roles.has(r.ns) || r.ns === FABRIC_ROLE) fail(`${what} ns: no node, pod or client named ${JSON.stringify(r.ns)}`);
    const d = cidr(`${what} dst`, r.dst);
    if (!ranges.some(([, c]) => cidrWithin(d, c))) fail(`${what} dst: ${r.dst} is outside the lab's ranges (a lab never routes elsewhere)`);
    ip(`${what} via`, r.via);
  }
}

/** Throws LabError EUNSAFE unless `dst` lies inside one of the topology's ranges. */
export function assertLabDestination(t: Topology, dst: string): void {
  const d = parseCidr4(dst.includes('/') ? dst : `${dst}/32`);
  if (d === null) throw new LabError('EUNSAFE', `route destination ${JSON.stringify(dst)} is not an IPv4 CIDR`);
  const inside = [t.nodeNetwork, t.clusterCIDR, t.serviceCIDR, t.externalCIDR].some((r) => {
    const c = parseCidr4(r);
    return c !== null && cidrWithin(d, c);
  });
  if (!inside) throw new LabError('EUNSAFE', `route destination ${dst} is outside the lab's ranges`);
}

function formatCidr(c: Cidr4): string {
  return `${nthAddress(c, 0)}/${c.prefix}`;
}
