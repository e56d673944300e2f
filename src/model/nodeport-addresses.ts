// Which node addresses accept NodePort traffic, decided once for every data plane, `rudder trace`
// and `rudder services`, as kube-proxy decides it: pkg/proxy/util/nodeport_addresses.go for the
// CIDRs, cmd/kube-proxy (>= 1.29) for the "primary" keyword. Pure.

import { inAnyCIDR, parseCIDR, parseIP } from './ip.js';
import type { ProxyConfig } from './types.js';

/** `--nodeport-addresses primary`: only the primary node IP of each family. */
export const NODEPORT_ADDRESSES_PRIMARY = 'primary';

/** One family's NodePort addresses. */
export interface NodePortSelection {
  family: 4 | 6;
  /**
   * Every local address of the family but loopback accepts NodePorts: a data plane can match the
   * kernel's own idea of "local" (addrtype LOCAL, fib daddr type local) instead of a list that
   * goes stale when an address is added.
   */
  matchAll: boolean;
  /**
   * The addresses, in the order the node lists them, as far as Rudder knows them (the local
   * addresses when discovered, else the node IPs); never loopback, since localhost NodePorts need
   * route_localnet, which Rudder does not set (kube-proxy's --iptables-localhost-nodeports=false).
   */
  addresses: readonly string[];
  /** Worth one log line each (a CIDR that selects a loopback address). */
  warnings: readonly string[];
}

const LOOPBACK = { 4: '127.0.0.0/8', 6: '::1/128' } as const;

function familyOf(ip: string): 4 | 6 | null {
  return parseIP(ip)?.family ?? null;
}

/** The node's primary address of a family (the first node IP of it), "" when it has none. */
export function primaryNodeIP(cfg: Pick<ProxyConfig, 'nodeIPs'>, family: 4 | 6): string {
  return cfg.nodeIPs.find((ip) => familyOf(ip) === family) ?? '';
}

/** The node's own addresses as far as Rudder knows them: the discovered local addresses, else the node IPs. */
export function nodeAddresses(cfg: Pick<ProxyConfig, 'nodeIPs' | 'localAddresses'>): readonly string[] {
  const local = cfg.localAddresses ?? [];
  return local.length > 0 ? local : cfg.nodeIPs;
}

/**
 * The CIDRs of one family that select NodePort addresses, or null for "every address". As in
 * kube-proxy, a family without a CIDR of its own matches everything even when the other family
 * has CIDRs, and a /0 makes the other CIDRs irrelevant.
 */
function selectingCIDRs(cfg: ProxyConfig, family: 4 | 6): string[] | null {
  let given = cfg.nodePortAddresses;
  if (given.length === 1 && given[0] === NODEPORT_ADDRESSES_PRIMARY) {
    given = [];
    for (const f of [4, 6] as const) {
      const ip = primaryNodeIP(cfg, f);
      if (ip !== '' && !inAnyCIDR(ip, [LOOPBACK[f]])) given.push(`${ip}/${f === 4 ? 32 : 128}`);
    }
  }
  const cidrs = given.filter((c) => parseCIDR(c)?.family === family);
  if (cidrs.length === 0 || cidrs.some((c) => parseCIDR(c)?.prefix === 0)) return null;
  return cidrs;
}

const cache = new WeakMap<ProxyConfig, Partial<Record<4 | 6, NodePortSelection>>>();

/** One family's NodePort addresses; computed once per config object. Never throws. */
export function nodePortSelection(cfg: ProxyConfig, family: 4 | 6): NodePortSelection {
  let perFamily = cache.get(cfg);
  if (perFamily === undefined) cache.set(cfg, (perFamily = {}));
  const known = perFamily[family];
  if (known !== undefined) return known;
  const cidrs = selectingCIDRs(cfg, family);
  const addresses: string[] = [];
  const warnings: string[] = [];
  for (const ip of nodeAddresses(cfg)) {
    if (familyOf(ip) !== family || addresses.includes(ip)) continue;
    if (cidrs !== null && !inAnyCIDR(ip, cidrs)) continue;
    if (inAnyCIDR(ip, [LOOPBACK[family]])) {
      if (cidrs !== null) warnings.push(`nodePortAddresses matches loopback ${ip}: localhost NodePorts are not supported`);
      continue;
    }
    addresses.push(ip);
  }
  const sel: NodePortSelection = { family, matchAll: cidrs === null, addresses, warnings };
  perFamily[family] = sel;
  return sel;
}

/** The node addresses that accept NodePort traffic, IPv4 ones first. */
export function nodePortAddresses(cfg: ProxyConfig): string[] {
  return [...nodePortSelection(cfg, 4).addresses, ...nodePortSelection(cfg, 6).addresses];
}
