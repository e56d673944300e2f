// Synthetic services for the benchmarks: N services with 4 endpoints each on 8 nodes; the first
// 2,000 are NodePort services (a cluster has at most 2,768 NodePorts), the rest ClusterIP.

import { DEFAULT_PROXY_NAME, type ProxyConfig } from '../src/model/types.js';
import type { EndpointSlice, Service } from '../src/source/objects.js';

export const benchConfig: ProxyConfig = {
  nodeName: 'node-1', nodeIPs: ['198.18.0.2'], zone: 'zone-a', clusterCIDRs: ['10.244.0.0/16'],
  nodePortAddresses: [], masqueradeAll: false, proxyName: DEFAULT_PROXY_NAME,
};

function ip(first: number, i: number): string {
  return `${first}.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
}

export function benchService(i: number): Service {
  return {
    kind: 'Service', namespace: `ns${i % 50}`, name: `svc-${i}`, type: i < 2000 ? 'NodePort' : 'ClusterIP', clusterIPs: [ip(10, 0x600000 + i)],
    ports: [{ name: 'http', protocol: 'TCP', port: 80, nodePort: i < 2000 ? 30000 + i : 0, targetPort: 8080 }],
    externalIPs: [], loadBalancerIPs: [], loadBalancerSourceRanges: [], affinityTimeoutSeconds: 0,
    externalTrafficPolicy: 'Cluster', internalTrafficPolicy: 'Cluster', healthCheckNodePort: 0, proxyName: '', trafficDistribution: '', lbAlgorithm: '',
  };
}

/** Generation `gen` marks a different endpoint as terminating, so every generation is a real change. */
export function benchSlice(i: number, gen: number): EndpointSlice {
  return {
    kind: 'EndpointSlice', namespace: `ns${i % 50}`, name: `svc-${i}-abcde`, serviceName: `svc-${i}`, family: 4,
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
    endpoints: [0, 1, 2, 3].map((k) => ({
      address: ip(11, i * 4 + k), ready: k !== gen % 4, serving: true, terminating: k === gen % 4,
      nodeName: `node-${(i + k) % 8}`, zone: '', zoneHints: [], nodeHints: [],
    })),
  };
}
