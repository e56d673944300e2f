// Chain names, exactly as kube-proxy's iptables proxier names them, so a node can switch between
// kube-proxy and Rudder (either way) and each one recognises and cleans up the other's chains.
//
// Per-service chains are prefix + the first 16 characters of base32(sha256(input)), where input is
// the ServicePortName string ("namespace/name:port", or "namespace/name" for an unnamed port),
// followed by the lower-case protocol, followed for KUBE-SEP- chains by the endpoint "ip:port".
// (pkg/proxy/iptables/proxier.go: portProtoHash, servicePortEndpointChainName.)

import { createHash } from 'node:crypto';
import type { ServicePort } from '../../model/types.js';

/** Top-level chains (the same names exist in both the nat and filter tables where noted). */
export const KUBE_SERVICES = 'KUBE-SERVICES'; // nat + filter
export const KUBE_EXTERNAL_SERVICES = 'KUBE-EXTERNAL-SERVICES'; // filter
export const KUBE_NODEPORTS = 'KUBE-NODEPORTS'; // nat + filter
export const KUBE_POSTROUTING = 'KUBE-POSTROUTING'; // nat
export const KUBE_MARK_MASQ = 'KUBE-MARK-MASQ'; // nat
export const KUBE_FORWARD = 'KUBE-FORWARD'; // filter
export const KUBE_PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL'; // filter

/** The top-level chains rewritten on every sync, in kube-proxy's declaration order. */
export const FILTER_TOP_CHAINS = [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL] as const;
export const NAT_TOP_CHAINS = [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ] as const;

export const SVC_PREFIX = 'KUBE-SVC-';
export const SVL_PREFIX = 'KUBE-SVL-';
export const EXT_PREFIX = 'KUBE-EXT-';
export const FW_PREFIX = 'KUBE-FW-';
export const SEP_PREFIX = 'KUBE-SEP-';
const SERVICE_CHAIN_PREFIXES = [SVC_PREFIX, SVL_PREFIX, SEP_PREFIX, FW_PREFIX, EXT_PREFIX];

/** A per-service chain (SVC/SVL/EXT/FW/SEP): Rudder's or kube-proxy's, identical either way. */
export function isServiceChainName(chain: string): boolean {
  return SERVICE_CHAIN_PREFIXES.some((p) => chain.startsWith(p));
}

/** One jump rule from a built-in chain into ours; kube-proxy's iptablesJumpChains, same order. */
export interface JumpRule {
  table: 'nat' | 'filter';
  from: string;
  to: string;
  comment: string;
  /** Matches placed before the comment, as kube-proxy places them. */
  extra: readonly string[];
}

const NEW = ['-m', 'conntrack', '--ctstate', 'NEW'] as const;
export const JUMP_RULES: readonly JumpRule[] = [
  { table: 'filter', from: 'INPUT', to: KUBE_EXTERNAL_SERVICES, comment: 'kubernetes externally-visible service portals', extra: NEW },
  { table: 'filter', from: 'FORWARD', to: KUBE_EXTERNAL_SERVICES, comment: 'kubernetes externally-visible service portals', extra: NEW },
  { table: 'filter', from: 'INPUT', to: KUBE_NODEPORTS, comment: 'kubernetes health check service ports', extra: [] },
  { table: 'filter', from: 'FORWARD', to: KUBE_SERVICES, comment: 'kubernetes service portals', extra: NEW },
  { table: 'filter', from: 'OUTPUT', to: KUBE_SERVICES, comment: 'kubernetes service portals', extra: NEW },
  { table: 'filter', from: 'FORWARD', to: KUBE_FORWARD, comment: 'kubernetes forwarding rules', extra: [] },
  { table: 'filter', from: 'INPUT', to: KUBE_PROXY_FIREWALL, comment: 'kubernetes load balancer firewall', extra: NEW },
  { table: 'filter', from: 'OUTPUT', to: KUBE_PROXY_FIREWALL, comment: 'kubernetes load balancer firewall', extra: NEW },
  { table: 'filter', from: 'FORWARD', to: KUBE_PROXY_FIREWALL, comment: 'kubernetes load balancer firewall', extra: NEW },
  { table: 'nat', from: 'OUTPUT', to: KUBE_SERVICES, comment: 'kubernetes service portals', extra: [] },
  { table: 'nat', from: 'PREROUTING', to: KUBE_SERVICES, comment: 'kubernetes service portals', extra: [] },
  { table: 'nat', from: 'POSTROUTING', to: KUBE_POSTROUTING, comment: 'kubernetes postrouting rules', extra: [] },
];

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 (standard alphabet) of the first `chars` characters' worth of `bytes`. */
function base32Prefix(bytes: Uint8Array, chars: number): string {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = ((buffer << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += B32[(buffer >>> (bits - 5)) & 31];
      bits -= 5;
      if (out.length === chars) return out;
    }
  }
  return out;
}

function hash16(input: string): string {
  return base32Prefix(createHash('sha256').update(input).digest(), 16);
}

/** kube-proxy's ServicePortName.String(): "namespace/name:port", or "namespace/name" for an unnamed port. */
export function servicePortName(sp: Pick<ServicePort, 'namespace' | 'name' | 'portName'>): string {
  return sp.portName === '' ? `${sp.namespace}/${sp.name}` : `${sp.namespace}/${sp.name}:${sp.portName}`;
}

/** The chain names one service port may own. Computed once per ServicePort object (they are immutable). */
export interface PortChains {
  /** ServicePortName string, used in every rule comment. */
  name: string;
  /** Lower-case protocol, as written after -p and -m. */
  proto: string;
  svc: string;
  svl: string;
  ext: string;
  fw: string;
  /** KUBE-SEP- chain of an endpoint id ("ip:port"); memoised. */
  sep(endpointId: string): string;
}

const cache = new WeakMap<ServicePort, PortChains>();

export function portChains(sp: ServicePort): PortChains {
  let c = cache.get(sp);
  if (c !== undefined) return c;
  const name = servicePortName(sp);
  const proto = sp.protocol.toLowerCase();
  const base = hash16(name + proto);
  const seps = new Map<string, string>();
  c = {
    name,
    proto,
    svc: SVC_PREFIX + base,
    svl: SVL_PREFIX + base,
    ext: EXT_PREFIX + base,
    fw: FW_PREFIX + base,
    sep(endpointId: string): string {
      let s = seps.get(endpointId);
      if (s === undefined) {
        s = SEP_PREFIX + hash16(name + proto + endpointId);
        seps.set(endpointId, s);
      }
      return s;
    },
  };
  cache.set(sp, c);
  return c;
}
