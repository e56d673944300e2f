// Names and fixed parts of the nftables layout (see index.ts for why it looks like this). Pure.
//
// IPv4 service ports live in the table `ip rudder`, IPv6 ones in `ip6 rudder`: the same layout,
// with ip6 expressions and ipv6_addr types (`NftConfig.family` says which). Objects are named so that a name fixes
// the definition: the per-count chains and maps carry the count in their name, the affinity
// sets the timeout. A full sync can therefore `add` every object it wants without comparing
// definitions, and derive a stale map or set from its companion chain's name.

import { createHash } from 'node:crypto';
import { parseCIDR, parseIP } from '../../model/ip.js';
import type { ProxyConfig } from '../../model/types.js';
import { renderConfig as iptablesRenderConfig } from '../iptables/render.js';
import type { BaseChainSpec, SetKind } from './transaction.js';

/** The nftables address family of a table: `ip` (IPv4) or `ip6` (IPv6). */
export type NftFamily = 'ip' | 'ip6';
export const FAMILY: NftFamily = 'ip';
export const FAMILY6: NftFamily = 'ip6';
export const TABLE = 'rudder';

export function nftFamily(family: 4 | 6): NftFamily {
  return family === 4 ? 'ip' : 'ip6';
}

/** The address type of a family's sets and maps. */
export const ADDR_TYPE: Record<NftFamily, string> = { ip: 'ipv4_addr', ip6: 'ipv6_addr' };

// Dispatch: frontend -> class chain.
export const SERVICE_IPS = 'service-ips';
export const SERVICE_NODEPORTS = 'service-nodeports';
// Frontend -> pick chain, for the frontend's own endpoint set and (eTP=Local) for the cluster set.
export const IP_PICK = 'ip-pick';
export const IP_CLUSTER_PICK = 'ip-cluster-pick';
export const NP_PICK = 'np-pick';
export const NP_CLUSTER_PICK = 'np-cluster-pick';
// Filtering.
export const NO_ENDPOINT_SERVICES = 'no-endpoint-services';
export const NO_ENDPOINT_NODEPORTS = 'no-endpoint-nodeports';
export const FIREWALL_IPS = 'firewall-ips';
export const FIREWALL_ALLOW = 'firewall-allow';
export const CLUSTER_IPS = 'cluster-ips';
export const NODEPORT_IPS = 'nodeport-ips';
/** "endpoint . endpoint" pairs: a DNATed packet whose source is its own endpoint is masqueraded. */
export const HAIRPIN = 'hairpin';

// Class chains: what a frontend does before an endpoint is picked.
export const CLASS_CHAINS = {
  ipInternal: 'ip-internal',
  ipExternal: 'ip-external',
  ipExternalLocal: 'ip-external-local',
  npExternal: 'np-external',
  npExternalLocal: 'np-external-local',
} as const;
export const REJECT_CHAIN = 'reject-chain';
export const MARK_MASQ = 'mark-for-masquerade';
const SERVICES = 'services';
const MASQUERADING = 'masquerading';
const FIREWALL_CHECK = 'firewall-check';
const SERVICE_ENDPOINTS_CHECK = 'service-endpoints-check';
const NODEPORT_ENDPOINTS_CHECK = 'nodeport-endpoints-check';
const CLUSTER_IPS_CHECK = 'cluster-ips-check';

/** The frontend key of each family of dispatch maps: VIPs by address, NodePorts by port only. */
export type KeyFamily = 'ip' | 'np';
export const KEY_EXPR: Record<KeyFamily, string> = { ip: 'ip daddr . meta l4proto . th dport', np: 'meta l4proto . th dport' };

/** KEY_EXPR for a table's family (`ip6 daddr . ...` in `ip6 rudder`). */
export function keyExpr(f: KeyFamily, fam: NftFamily = 'ip'): string {
  return f === 'ip' ? `${fam} daddr . meta l4proto . th dport` : KEY_EXPR.np;
}

function keyType(f: KeyFamily, fam: NftFamily): string {
  return f === 'ip' ? `${ADDR_TYPE[fam]} . inet_proto . inet_service` : 'inet_proto . inet_service';
}

/** Which endpoint set a pick serves: the frontend's own (internal / external policy) or the cluster set (eTP=Local short-circuits). */
export type Role = 'own' | 'cluster';

/** Something the table holds besides elements: a chain (with its rules) or a set/map (with its declaration). */
export interface ObjectDef {
  kind: 'chain' | SetKind;
  name: string;
  /** Base chains only. */
  base?: BaseChainSpec;
  /** Sets and maps: the declaration inside `{ }`. */
  spec?: string;
  comment?: string;
  /** Chains: rules in order. */
  rules?: string[];
  /** Dynamic sets whose contents the data path writes (affinity): never flushed by a full sync. */
  keep?: boolean;
  /**
   * Maps declared with `typeof` that a full sync deletes and re-adds instead of flushing: nft
   * 1.0.6 rejects a new rule that refers to such a map once it exists in the kernel ("conflicting
   * protocols specified: ip vs. th"), but accepts it when the map is declared in the same transaction.
   */
  rebuild?: boolean;
}

export function sameObject(a: ObjectDef, b: ObjectDef): boolean {
  if (a.kind !== b.kind || a.spec !== b.spec || a.comment !== b.comment || a.keep !== b.keep || a.rebuild !== b.rebuild) return false;
  if (a.base?.type !== b.base?.type || a.base?.hook !== b.base?.hook || a.base?.priority !== b.base?.priority) return false;
  const ra = a.rules ?? [];
  const rb = b.rules ?? [];
  return ra.length === rb.length && ra.every((r, i) => r === rb[i]);
}

/** Node-level inputs of the layout, from ProxyConfig. */
export interface NftConfig {
  /** Which table: `ip rudder` (IPv4 service ports) or `ip6 rudder` (IPv6). */
  family: NftFamily;
  /** "0x4000" for bit 14. */
  masqueradeMark: string;
  masqueradeAll: boolean;
  /** Pod CIDRs of the family: sources inside are pods. Empty: no pod detection (no short-circuit, no off-cluster masquerade). */
  clusterCIDRs: string[];
  /** null: NodePorts on every local address (`fib daddr type local`); else only on these. */
  nodePortIPs: readonly string[] | null;
  /** The node config the model's frontend records are decided with. */
  node: ProxyConfig;
}

/**
 * Derives one family's settings (default IPv4). Never throws; problems come back as warnings.
 * NodePort addresses come from the model, as for the iptables data plane; every cluster CIDR of
 * the family identifies pods, as `rudder trace` assumes.
 */
export function nftConfig(cfg: ProxyConfig, masqueradeBit = 14, family: 4 | 6 = 4): { config: NftConfig; warnings: string[] } {
  const { config: ipt, warnings } = iptablesRenderConfig(cfg, masqueradeBit, family);
  const clusterCIDRs = cfg.clusterCIDRs.filter((c) => parseCIDR(c)?.family === family);
  return {
    config: { family: nftFamily(family), masqueradeMark: ipt.masqueradeMark, masqueradeAll: cfg.masqueradeAll, clusterCIDRs, nodePortIPs: ipt.nodePortIPs, node: cfg },
    // The iptables plane can use only one cluster CIDR; this one uses them all.
    warnings: warnings.filter((w) => !w.startsWith(`several IPv${family} clusterCIDRs`)),
  };
}

export function isIPv4(ip: string): boolean {
  return parseIP(ip)?.family === 4;
}

// ---- per-count pick chains and maps ---------------------------------------------------------

const PICK_PREFIX: Record<Role, string> = { own: 'pick', cluster: 'cpick' };
const EPS_PREFIX: Record<Role, string> = { own: 'eps', cluster: 'ceps' };

export function pickChainName(f: KeyFamily, role: Role, n: number): string {
  return `${f}-${PICK_PREFIX[role]}-${n}`;
}

export function endpointMapName(f: KeyFamily, role: Role, n: number): string {
  return `${f}-${EPS_PREFIX[role]}-${n}`;
}

/** The chain and map that pick one of `n` endpoints at random for any frontend with `n` of them. */
export function pickObjects(f: KeyFamily, role: Role, n: number, fam: NftFamily = 'ip'): [ObjectDef, ObjectDef] {
  const map = endpointMapName(f, role, n);
  const key = `${keyExpr(f, fam)} . numgen random mod ${n}`;
  return [
    { kind: 'map', name: map, spec: `typeof ${key} : ${fam} daddr . th dport ;`, rebuild: true },
    { kind: 'chain', name: pickChainName(f, role, n), rules: [`dnat ${fam} to ${key} map @${map}`] },
  ];
}

// ---- affinity: per service port, like kube-proxy (see index.ts) ------------------------------

function hash16(input: string): string {
  return createHash('sha256').update(input).digest('base64url').slice(0, 16).replace(/[-_]/g, 'x');
}

/** Names of the affinity objects of one service port; `timeout` is part of each name. */
export function affinityNames(portName: string, proto: string, timeout: number): {
  policy(set: 'cluster' | 'local'): string;
  endpointChain(endpointId: string): string;
  endpointSet(endpointId: string): string;
} {
  const base = hash16(`${portName}/${proto}`);
  return {
    policy: (set) => `aff-${set === 'cluster' ? 'c' : 'l'}-${base}-${timeout}`,
    endpointChain: (id) => `aff-ep-${hash16(`${portName}/${proto}/${id}`)}-${timeout}`,
    endpointSet: (id) => `aff-${hash16(`${portName}/${proto}/${id}`)}-${timeout}`,
  };
}

export function affinitySetDef(name: string, timeout: number, fam: NftFamily = 'ip'): ObjectDef {
  return { kind: 'set', name, spec: `type ${ADDR_TYPE[fam]} ; flags dynamic,timeout ; timeout ${timeout}s ;`, keep: true };
}

/**
 * The set or map that goes with a chain of ours (so a stale one can be removed after a restart,
 * knowing only the chains: listing sets would read every element). Null if the chain has none.
 */
export function companionOf(chain: string, fam: NftFamily = 'ip'): ObjectDef | null {
  const pick = /^(ip|np)-(pick|cpick)-(\d+)$/.exec(chain);
  if (pick !== null) return pickObjects(pick[1] as KeyFamily, pick[2] === 'pick' ? 'own' : 'cluster', Number(pick[3]), fam)[0];
  const aff = /^aff-ep-([A-Za-z0-9]{16})-(\d+)$/.exec(chain);
  if (aff !== null) return affinitySetDef(`aff-${aff[1]}-${aff[2]}`, Number(aff[2]), fam);
  return null;
}

// ---- the fixed objects ----------------------------------------------------------------------

const vmap = (name: string, type: string, comment?: string): ObjectDef =>
  ({ kind: 'map', name, spec: `type ${type} : verdict ;`, ...(comment === undefined ? {} : { comment }) });
const set = (name: string, type: string, flags = ''): ObjectDef =>
  ({ kind: 'set', name, spec: `type ${type} ;${flags === '' ? '' : ` flags ${flags} ;`}` });
const chain = (name: string, rules: string[], base?: BaseChainSpec): ObjectDef =>
  ({ kind: 'chain', name, rules, ...(base === undefined ? {} : { base }) });

const NEW = 'ct state new';
/** Fixed sets that only some configs use (a full sync removes them when the config does not). */
export const FIXED_SET_NAMES = [NODEPORT_IPS];

/**
 * The sets, maps and chains whose existence does not depend on the services, in creation order
 * (sets and maps first, since rules refer to them). Rules depend only on `c`.
 */
export function fixedObjects(c: NftConfig): ObjectDef[] {
  const fam = c.family;
  const addr = ADDR_TYPE[fam];
  const ipKey = keyExpr('ip', fam);
  const npKey = keyExpr('np', fam);
  const ipType = keyType('ip', fam);
  const npType = keyType('np', fam);
  const loopback = fam === 'ip' ? '127.0.0.0/8' : '::1';
  const pods = c.clusterCIDRs.length === 0 ? '' : c.clusterCIDRs.length === 1 ? c.clusterCIDRs[0]! : `{ ${c.clusterCIDRs.join(', ')} }`;
  // NodePorts: on the selected addresses, or on every local address but loopback.
  const onNodePortAddress = c.nodePortIPs === null ? `fib daddr type local ${fam} daddr != ${loopback}` : `${fam} daddr @${NODEPORT_IPS}`;
  const withNodePorts = c.nodePortIPs === null || c.nodePortIPs.length > 0;

  const internal: string[] = [];
  if (c.masqueradeAll) internal.push(`jump ${MARK_MASQ}`);
  // Off-cluster sources to a ClusterIP may have been routed here by another node: masquerade them.
  else if (pods !== '') internal.push(`${fam} saddr != ${pods} jump ${MARK_MASQ}`);
  internal.push(`${ipKey} vmap @${IP_PICK}`);

  const externalLocal = (key: string, pick: string, clusterPick: string): string[] => [
    // Pods reach external addresses as if from outside and back: the cluster set, client kept.
    ...(pods === '' ? [] : [`${fam} saddr ${pods} ${key} vmap @${clusterPick}`]),
    // The node itself: masqueraded (the VIP may be its own address) and sent to the cluster set.
    `fib saddr type local jump ${MARK_MASQ}`,
    `fib saddr type local ${key} vmap @${clusterPick}`,
    // Everyone else: local endpoints only; without any the packet stays un-NATed and is dropped
    // by the no-endpoint check.
    `${key} vmap @${pick}`,
  ];

  const objects: ObjectDef[] = [
    vmap(SERVICE_IPS, ipType, 'rudder layout 1: ClusterIP, external IP and LB IP frontends'),
    vmap(SERVICE_NODEPORTS, npType, 'NodePort frontends'),
    vmap(IP_PICK, ipType),
    vmap(IP_CLUSTER_PICK, ipType),
    vmap(NP_PICK, npType),
    vmap(NP_CLUSTER_PICK, npType),
    vmap(NO_ENDPOINT_SERVICES, ipType, 'VIPs without usable endpoints: reject or drop'),
    vmap(NO_ENDPOINT_NODEPORTS, npType, 'NodePorts without usable endpoints: reject or drop'),
    set(FIREWALL_IPS, ipType),
    set(FIREWALL_ALLOW, `${ipType} . ${addr}`, 'interval'),
    set(CLUSTER_IPS, addr),
    set(HAIRPIN, `${addr} . ${addr}`),
  ];
  if (c.nodePortIPs !== null) objects.push(set(NODEPORT_IPS, addr));
  objects.push(
    chain(MARK_MASQ, [`meta mark set meta mark | ${c.masqueradeMark}`]),
    chain(MASQUERADING, [
      // Hairpin: a pod that reached itself through a service must be masqueraded to get the reply.
      `ct status dnat ${fam} saddr . ${fam} daddr @${HAIRPIN} jump ${MARK_MASQ}`,
      `meta mark & ${c.masqueradeMark} == 0 return`,
      // Clear the mark so a packet that re-traverses the stack is not masqueraded twice.
      `meta mark set meta mark ^ ${c.masqueradeMark}`,
      'masquerade fully-random',
    ]),
    // TCP is refused with a reset: the kernel rate-limits the ICMP a plain reject sends per host,
    // and a pod that just sent hairpin traffic (answered with ICMP redirects) would lose it.
    chain(REJECT_CHAIN, ['meta l4proto tcp reject with tcp reset', 'reject']),
    chain(FIREWALL_CHECK, [`${ipKey} @${FIREWALL_IPS} ${ipKey} . ${fam} saddr != @${FIREWALL_ALLOW} drop`]),
    chain(SERVICE_ENDPOINTS_CHECK, [`${ipKey} vmap @${NO_ENDPOINT_SERVICES}`]),
    chain(NODEPORT_ENDPOINTS_CHECK, withNodePorts ? [`${onNodePortAddress} ${npKey} vmap @${NO_ENDPOINT_NODEPORTS}`] : []),
    // What reaches a ClusterIP un-NATed is a port no service uses: rejected, not left to time out.
    chain(CLUSTER_IPS_CHECK, [`${fam} daddr @${CLUSTER_IPS} goto ${REJECT_CHAIN}`]),
    chain(CLASS_CHAINS.ipInternal, internal),
    chain(CLASS_CHAINS.ipExternal, [`jump ${MARK_MASQ}`, `${ipKey} vmap @${IP_PICK}`]),
    chain(CLASS_CHAINS.ipExternalLocal, externalLocal(ipKey, IP_PICK, IP_CLUSTER_PICK)),
    chain(CLASS_CHAINS.npExternal, [`jump ${MARK_MASQ}`, `${npKey} vmap @${NP_PICK}`]),
    chain(CLASS_CHAINS.npExternalLocal, externalLocal(npKey, NP_PICK, NP_CLUSTER_PICK)),
    chain(SERVICES, [`${ipKey} vmap @${SERVICE_IPS}`, ...(withNodePorts ? [`${onNodePortAddress} ${npKey} vmap @${SERVICE_NODEPORTS}`] : [])]),
    // Firewall on pre-DNAT addresses; the other checks after DNAT (what was DNATed no longer
    // matches), so eTP=Local short-circuits and node-local traffic escape the no-endpoint drop.
    chain('filter-prerouting', [`${NEW} jump ${FIREWALL_CHECK}`], { type: 'filter', hook: 'prerouting', priority: -110 }),
    chain('filter-output', [`${NEW} jump ${FIREWALL_CHECK}`], { type: 'filter', hook: 'output', priority: -110 }),
    chain('filter-input', [`${NEW} jump ${NODEPORT_ENDPOINTS_CHECK}`, `${NEW} jump ${SERVICE_ENDPOINTS_CHECK}`], { type: 'filter', hook: 'input', priority: -110 }),
    chain('filter-forward', [`${NEW} jump ${SERVICE_ENDPOINTS_CHECK}`, `${NEW} jump ${CLUSTER_IPS_CHECK}`], { type: 'filter', hook: 'forward', priority: -110 }),
    chain('filter-output-post-dnat', [`${NEW} jump ${SERVICE_ENDPOINTS_CHECK}`, `${NEW} jump ${CLUSTER_IPS_CHECK}`], { type: 'filter', hook: 'output', priority: -90 }),
    chain('nat-prerouting', [`jump ${SERVICES}`], { type: 'nat', hook: 'prerouting', priority: -100 }),
    chain('nat-output', [`jump ${SERVICES}`], { type: 'nat', hook: 'output', priority: -100 }),
    chain('nat-postrouting', [`jump ${MASQUERADING}`], { type: 'nat', hook: 'postrouting', priority: 100 }),
  );
  return objects;
}

/** Elements of the fixed sets that follow from the config alone. */
export function fixedElements(c: NftConfig): Array<{ set: string; key: string }> {
  return (c.nodePortIPs ?? []).map((ip) => ({ set: NODEPORT_IPS, key: ip }));
}
