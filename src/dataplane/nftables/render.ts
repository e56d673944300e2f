// One service port (IPv4 or IPv6, for its family's table) -> the elements and objects it needs in the nftables layout. Pure.
//
// What each frontend does for each class of source (forward / reject / drop, which endpoint set,
// masquerade, the LB firewall) comes from the model's frontend records (model/frontends.ts);
// this file only turns them into map elements, in the order kube-proxy's nftables proxier writes them.

import { cidrContains, formatCIDR, inAnyCIDR, parseCIDR } from '../../model/ip.js';
import type { ParsedCIDR } from '../../model/ip.js';
import { frontendRecords, portPaths, samePath } from '../../model/frontends.js';
import type { FrontendPath, PathVerdict } from '../../model/frontends.js';
import type { FrontendKind, ServicePort } from '../../model/types.js';
import { servicePortName } from '../iptables/chains.js';
import {
  CLASS_CHAINS, CLUSTER_IPS, FIREWALL_ALLOW, FIREWALL_IPS, HAIRPIN, IP_CLUSTER_PICK, IP_PICK, NO_ENDPOINT_NODEPORTS,
  NO_ENDPOINT_SERVICES, NP_CLUSTER_PICK, NP_PICK, REJECT_CHAIN, SERVICE_IPS, SERVICE_NODEPORTS,
  affinityNames, affinitySetDef, endpointMapName, pickChainName, pickObjects,
} from './layout.js';
import type { KeyFamily, NftConfig, NftFamily, ObjectDef, Role } from './layout.js';
import { MAX_COMMENT } from './transaction.js';

const NO_ADDRESSES: readonly string[] = Object.freeze([]);

/** One element a port wants in a set or map. */
export interface Elem {
  set: string;
  /** nft syntax: "10.96.0.1 . tcp . 80". */
  key: string;
  /** Maps only: "goto ip-internal", "10.244.1.1 . 8080". */
  value?: string;
  comment?: string;
}

/** What one service port puts in the table. */
export interface Contribution {
  elems: Elem[];
  objects: ObjectDef[];
}

/** One frontend of a port, with the key that identifies it in the dispatch maps. */
export interface PortFrontend {
  kind: FrontendKind;
  family: KeyFamily;
  /** nft key text, "10.96.0.1 . tcp . 80" or "tcp . 30080". */
  key: string;
  /** Unique across families: "ip 10.96.0.1 . tcp . 80". */
  id: string;
  /** Lower wins when two ports claim the same key (as `rudder trace` looks them up: ClusterIP, then external IP, then LB IP). */
  rank: number;
}

const RANK: Record<FrontendKind, number> = { clusterIP: 0, externalIP: 1, loadBalancerIP: 2, nodePort: 0 };
/** Short kind codes in element comments, so a long service id never pushes the kind out. */
export const KIND_CODE: Record<FrontendKind, string> = { clusterIP: 'cluster-ip', externalIP: 'external-ip', loadBalancerIP: 'lb-ip', nodePort: 'nodeport' };

export function frontendsOf(sp: ServicePort): PortFrontend[] {
  const proto = sp.protocol.toLowerCase();
  const vip = (kind: FrontendKind, ip: string): PortFrontend => {
    const key = `${ip} . ${proto} . ${sp.port}`;
    return { kind, family: 'ip', key, id: `ip ${key}`, rank: RANK[kind] };
  };
  const out = [vip('clusterIP', sp.clusterIP)];
  for (const ip of sp.externalIPs) out.push(vip('externalIP', ip));
  for (const ip of sp.loadBalancerIPs) out.push(vip('loadBalancerIP', ip));
  if (sp.nodePort > 0) {
    const key = `${proto} . ${sp.nodePort}`;
    out.push({ kind: 'nodePort', family: 'np', key, id: `np ${key}`, rank: RANK.nodePort });
  }
  return out;
}

/** Endpoint id -> address and port, through the port's endpoint list (one map per render, no scans). */
function endpointLookup(sp: ServicePort): (id: string) => { ip: string; port: number } {
  let byId: Map<string, { ip: string; port: number }> | undefined;
  return (id) => {
    byId ??= new Map(sp.endpoints.map((e) => [e.id, { ip: e.ip, port: e.port }]));
    const ep = byId.get(id);
    if (ep !== undefined) return ep;
    const i = id.lastIndexOf(':');
    return { ip: id.slice(0, i).replace(/^\[(.*)\]$/, '$1'), port: Number(id.slice(i + 1)) };
  };
}

/** Source ranges as disjoint canonical prefixes: interval sets refuse overlapping elements, and nested prefixes add nothing. */
export function disjointRanges(cidrs: readonly string[], family: 4 | 6 = 4): string[] {
  const nets = new Map<string, ParsedCIDR>();
  for (const c of cidrs) {
    const p = parseCIDR(c.trim());
    if (p !== null && p.family === family) nets.set(formatCIDR(p), p);
  }
  const out: string[] = [];
  for (const [c, p] of nets) {
    let nested = false;
    for (const q of nets.values()) if (q.prefix < p.prefix && cidrContains(q, { family, value: p.network })) nested = true;
    if (!nested) out.push(c);
  }
  return out.sort();
}

/** A path that forwards nobody: reject without endpoints anywhere, drop without usable ones. */
function noEndpointVerdict(v: PathVerdict): string {
  return v === 'reject' ? `goto ${REJECT_CHAIN}` : 'drop';
}

/**
 * Renders one service port of `cfg.family`. `owns(frontend id)` tells whether this port wins that frontend
 * (another port may claim the same address and port); frontends it loses produce nothing.
 */
export function renderPort(sp: ServicePort, cfg: NftConfig, owns: (frontendId: string) => boolean): Contribution {
  const elems: Elem[] = [];
  const objects = new Map<string, ObjectDef>();
  const proto = sp.protocol.toLowerCase();
  const name = servicePortName(sp);
  const fam = cfg.family;
  const ipOf = endpointLookup(sp);
  const aff = sp.affinityTimeoutSeconds > 0 ? affinityNames(name, proto, sp.affinityTimeoutSeconds) : null;
  const affSets = new Map<'cluster' | 'local', readonly string[]>();

  const { internal, external } = portPaths(sp, cfg.node);
  // A ClusterIP decides the same for every source but masquerade (the ip-internal chain's job).
  const inner = internal.fromPod;
  const outer = external.fromExternal;
  // eTP=Local: pods and the node short-circuit to another set than outside clients, through the
  // cluster pick maps the class chain consults for them.
  const shortCircuit = samePath(external.fromNode, outer) ? null : external.fromNode;
  // Even when outside clients are dropped, the short-circuits still forward.
  const forwardsSomeone = [external.fromPod, external.fromNode, outer].some((p) => p.verdict === 'forward');

  /** Points the frontend's pick map at the chain that picks one of the path's endpoints, with what that chain needs. */
  const pick = (pickMap: string, f: KeyFamily, role: Role, key: string, p: FrontendPath): void => {
    const ids = p.endpoints;
    if (p.verdict !== 'forward' || p.set === 'none' || ids.length === 0) return;
    if (aff !== null) {
      affSets.set(p.set, ids);
      elems.push({ set: pickMap, key, value: `goto ${aff.policy(p.set)}` });
      return;
    }
    const n = ids.length;
    for (const o of pickObjects(f, role, n, fam)) objects.set(o.name, o);
    const map = endpointMapName(f, role, n);
    for (let i = 0; i < n; i++) {
      const ep = ipOf(ids[i]!);
      elems.push({ set: map, key: `${key} . ${i}`, value: `${ep.ip} . ${ep.port}` });
    }
    elems.push({ set: pickMap, key, value: `goto ${pickChainName(f, role, n)}` });
  };

  elems.push({ set: CLUSTER_IPS, key: sp.clusterIP });
  // VIP records only: NodePorts are keyed by port in this layout, whatever the address.
  const lbRecords = frontendRecords(sp, cfg.node, NO_ADDRESSES).filter((r) => r.kind === 'loadBalancerIP');
  const firewalled = lbRecords.find((r) => r.sourceRanges.length > 0);
  const allowed = firewalled === undefined ? [] : disjointRanges(firewalled.sourceRanges, fam === 'ip' ? 4 : 6);
  const usesFirewall = allowed.length > 0;
  // A VIP-style LB address is often local to the node: node-originated requests then arrive with
  // the VIP as source, and are let through when the ranges admit the node's primary address.
  const allowFromNode = usesFirewall && firewalled!.primaryNodeIPInRanges;

  for (const fe of frontendsOf(sp)) {
    if (!owns(fe.id)) continue;
    const ip = fe.family === 'ip';
    // The kernel keeps 128 bytes of comment: a longer id (ids are ASCII) is cut, never rejected.
    const comment = `${KIND_CODE[fe.kind]} ${sp.id}`.slice(0, MAX_COMMENT);
    const dispatch = ip ? SERVICE_IPS : SERVICE_NODEPORTS;
    const noEndpoints = ip ? NO_ENDPOINT_SERVICES : NO_ENDPOINT_NODEPORTS;
    if (fe.kind === 'clusterIP') {
      if (inner.verdict === 'forward') {
        elems.push({ set: SERVICE_IPS, key: fe.key, value: `goto ${CLASS_CHAINS.ipInternal}`, comment });
        pick(IP_PICK, 'ip', 'own', fe.key, inner);
      } else {
        elems.push({ set: NO_ENDPOINT_SERVICES, key: fe.key, value: noEndpointVerdict(inner.verdict), comment });
      }
      continue;
    }
    if (forwardsSomeone) {
      // Outside clients masqueraded (Cluster policy): the class chain that masquerades everyone;
      // else the one that sends pods and the node to the cluster pick.
      const cls = outer.masquerade
        ? (ip ? CLASS_CHAINS.ipExternal : CLASS_CHAINS.npExternal)
        : (ip ? CLASS_CHAINS.ipExternalLocal : CLASS_CHAINS.npExternalLocal);
      elems.push({ set: dispatch, key: fe.key, value: `goto ${cls}`, comment });
      pick(ip ? IP_PICK : NP_PICK, fe.family, 'own', fe.key, outer);
      if (shortCircuit !== null) pick(ip ? IP_CLUSTER_PICK : NP_CLUSTER_PICK, fe.family, 'cluster', fe.key, shortCircuit);
    }
    if (outer.verdict !== 'forward') elems.push({ set: noEndpoints, key: fe.key, value: noEndpointVerdict(outer.verdict), comment });
    // NodePorts are not subject to loadBalancerSourceRanges, as in kube-proxy.
    if (fe.kind === 'loadBalancerIP' && usesFirewall) {
      elems.push({ set: FIREWALL_IPS, key: fe.key });
      for (const cidr of allowed) elems.push({ set: FIREWALL_ALLOW, key: `${fe.key} . ${cidr}` });
      if (allowFromNode) {
        for (const lb of lbRecords) {
          if (!inAnyCIDR(lb.ip, allowed)) elems.push({ set: FIREWALL_ALLOW, key: `${fe.key} . ${lb.ip}/${fam === 'ip' ? 32 : 128}` });
        }
      }
    }
  }

  // Hairpin pairs for every endpoint this node may DNAT to (shared with other ports).
  const seen = new Set<string>();
  for (const id of sp.reachableEndpoints) {
    const { ip } = ipOf(id);
    if (seen.has(ip)) continue;
    seen.add(ip);
    elems.push({ set: HAIRPIN, key: `${ip} . ${ip}` });
  }

  if (aff !== null) renderAffinity(sp, proto, fam, aff, affSets, objects, ipOf);
  return { elems, objects: [...objects.values()] };
}

/**
 * ClientIP affinity, as kube-proxy's nftables proxier does it: one dynamic set of client
 * addresses per endpoint (with the service's timeout), checked before the random pick and
 * refreshed by the endpoint's chain. These are the only per-service objects of the layout.
 */
function renderAffinity(sp: ServicePort, proto: string, fam: NftFamily, aff: ReturnType<typeof affinityNames>, sets: ReadonlyMap<'cluster' | 'local', readonly string[]>,
  objects: Map<string, ObjectDef>, ipOf: (id: string) => { ip: string; port: number }): void {
  const timeout = sp.affinityTimeoutSeconds;
  const used = new Set<string>();
  for (const set of ['cluster', 'local'] as const) {
    const ids = sets.get(set);
    if (ids === undefined) continue;
    const rules = ids.map((id) => `${fam} saddr @${aff.endpointSet(id)} goto ${aff.endpointChain(id)}`);
    const targets = ids.map((id, i) => `${i} : goto ${aff.endpointChain(id)}`);
    rules.push(ids.length === 1 ? `goto ${aff.endpointChain(ids[0]!)}` : `numgen random mod ${ids.length} vmap { ${targets.join(', ')} }`);
    objects.set(aff.policy(set), { kind: 'chain', name: aff.policy(set), rules });
    for (const id of ids) used.add(id);
  }
  for (const id of [...used].sort()) {
    const ep = ipOf(id);
    const setName = aff.endpointSet(id);
    objects.set(setName, affinitySetDef(setName, timeout, fam));
    objects.set(aff.endpointChain(id), {
      kind: 'chain',
      name: aff.endpointChain(id),
      rules: [`update @${setName} { ${fam} saddr }`, `meta l4proto ${proto} dnat to ${fam === 'ip' ? ep.ip : `[${ep.ip}]`}:${ep.port}`],
    });
  }
}
