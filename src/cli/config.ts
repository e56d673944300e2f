// Flags shared by every command that builds a service table, and the ProxyConfig they make.

import { DEFAULT_PROXY_NAME, type ProxyConfig } from '../model/types.js';
import { normalizeCIDR, normalizeIP } from '../model/ip.js';
import { NODEPORT_ADDRESSES_PRIMARY } from '../model/nodeport-addresses.js';
import type { Node } from '../source/objects.js';
import { UsageError, flagAll, flagBool, flagOne, type FlagSpecs, type Parsed } from './args.js';

export const PROXY_FLAGS: FlagSpecs = {
  file: { alias: 'f', repeat: true, value: 'PATH', help: 'manifest file or directory (YAML/JSON; repeatable)' },
  node: { value: 'NAME', help: 'this node\'s name (default: the hostname)' },
  'node-ip': { repeat: true, list: true, value: 'IP', help: 'this node\'s address(es) (default: from its Node object)' },
  zone: { value: 'ZONE', help: 'this node\'s zone (default: its topology.kubernetes.io/zone label)' },
  'cluster-cidr': { list: true, repeat: true, value: 'CIDR', help: 'pod CIDR(s); sources outside are masqueraded to ClusterIPs' },
  'nodeport-addresses': { list: true, repeat: true, value: 'CIDR,...|primary', help: 'node addresses that accept NodePort traffic, or "primary": the primary node IP of each family (default: every local address)' },
  'masquerade-all': { boolean: true, help: 'masquerade all traffic to ClusterIPs' },
  'proxy-name': { value: 'NAME', help: `serve services whose service-proxy-name label is NAME (default ${DEFAULT_PROXY_NAME})` },
};

function ips(flag: string, values: string[]): string[] {
  return values.map((v) => {
    const n = normalizeIP(v);
    if (n === null) throw new UsageError(`--${flag}: ${JSON.stringify(v)} is not an IP address`);
    return n;
  });
}

function cidrs(flag: string, values: string[]): string[] {
  return values.map((v) => {
    const n = normalizeCIDR(v);
    if (n === null) throw new UsageError(`--${flag}: ${JSON.stringify(v)} is not a CIDR`);
    return n;
  });
}

/** kube-proxy's --nodeport-addresses: CIDRs, or "primary" on its own. */
function nodePortAddressFlags(values: string[]): string[] {
  if (values.length === 1 && values[0] === NODEPORT_ADDRESSES_PRIMARY) return values;
  if (values.includes(NODEPORT_ADDRESSES_PRIMARY)) throw new UsageError(`--nodeport-addresses: "${NODEPORT_ADDRESSES_PRIMARY}" cannot be combined with CIDRs`);
  return cidrs('nodeport-addresses', values);
}

/** The settings the flags fix; node IPs and zone may still come from the Node object. */
export interface ConfigFlags {
  nodeName: string;
  nodeIPs: string[];
  zone: string | undefined;
  clusterCIDRs: string[];
  nodePortAddresses: string[];
  masqueradeAll: boolean;
  proxyName: string;
}

export function configFlags(p: Parsed, defaultNodeName: string): ConfigFlags {
  return {
    nodeName: flagOne(p, 'node') ?? defaultNodeName,
    nodeIPs: ips('node-ip', flagAll(p, 'node-ip')),
    zone: flagOne(p, 'zone'),
    clusterCIDRs: cidrs('cluster-cidr', flagAll(p, 'cluster-cidr')),
    nodePortAddresses: nodePortAddressFlags(flagAll(p, 'nodeport-addresses')),
    masqueradeAll: flagBool(p, 'masquerade-all'),
    proxyName: flagOne(p, 'proxy-name') ?? DEFAULT_PROXY_NAME,
  };
}

/** Flags win; what they leave open comes from this node's Node object. */
export function proxyConfig(f: ConfigFlags, node: Node | null): ProxyConfig {
  return {
    nodeName: f.nodeName,
    nodeIPs: f.nodeIPs.length > 0 ? f.nodeIPs : node?.addresses ?? [],
    zone: f.zone ?? node?.zone ?? '',
    clusterCIDRs: f.clusterCIDRs,
    nodePortAddresses: f.nodePortAddresses,
    masqueradeAll: f.masqueradeAll,
    proxyName: f.proxyName,
  };
}
