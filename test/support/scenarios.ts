// Representative service ports that both netfilter data planes render to golden files, so the
// two layouts can be read side by side.

import type { ProxyConfig, ServicePort } from '../../src/model/types.js';
import { CFG, ep, sp } from './iptables.js';

export interface Scenario {
  ports: ServicePort[];
  cfg?: ProxyConfig;
}

export const SCENARIOS: Record<string, Scenario> = {
  'clusterip-3-endpoints': {
    ports: [sp({ namespace: 'ns1', name: 'svc1', clusterIP: '172.30.0.41',
      endpoints: [ep('10.180.0.1', 8080), ep('10.180.0.2', 8080, { local: true }), ep('10.180.0.3', 8080)] })],
  },
  'no-endpoints-reject': {
    ports: [sp({ namespace: 'ns6', name: 'svc6', clusterIP: '172.30.0.46', nodePort: 3006,
      externalIPs: ['192.168.99.66'], loadBalancerIPs: ['1.2.3.6'], endpoints: [ep('10.180.0.6', 80, { ready: false })] })],
  },
  'nodeport-etp-local': {
    ports: [sp({ namespace: 'ns2', name: 'svc2', clusterIP: '172.30.0.42', nodePort: 3001, externalPolicyLocal: true,
      healthCheckNodePort: 30000, endpoints: [ep('10.180.0.2', 80, { local: true }), ep('10.180.1.2', 80)] })],
  },
  'etp-local-no-local-endpoints': {
    ports: [sp({ namespace: 'ns2', name: 'svc2b', clusterIP: '172.30.0.52', nodePort: 3011, externalPolicyLocal: true,
      loadBalancerIPs: ['1.2.3.4'], externalIPs: ['192.168.99.22'], healthCheckNodePort: 30001, endpoints: [ep('10.180.1.2', 80)] })],
  },
  'lb-source-ranges': {
    ports: [sp({ namespace: 'ns5', name: 'svc5', clusterIP: '172.30.0.45', nodePort: 3002, loadBalancerIPs: ['5.6.7.8'],
      loadBalancerSourceRanges: ['203.0.113.0/25', '192.168.0.0/24'], endpoints: [ep('10.180.0.3', 80), ep('10.180.0.4', 80)] })],
  },
  'external-ips': {
    ports: [sp({ namespace: 'ns4', name: 'svc4', clusterIP: '172.30.0.44', externalIPs: ['192.168.99.33'],
      endpoints: [ep('10.180.0.4', 80), ep('10.180.0.5', 80, { local: true })] })],
  },
  'session-affinity-udp': {
    ports: [sp({ namespace: 'kube-system', name: 'dns', portName: 'dns', protocol: 'UDP', port: 53, clusterIP: '172.30.0.10',
      affinityTimeoutSeconds: 10800, endpoints: [ep('10.180.0.7', 53), ep('10.180.0.8', 53)] })],
  },
  'itp-local-no-local-endpoints': {
    ports: [sp({ namespace: 'ns8', name: 'svc8', clusterIP: '172.30.0.48', internalPolicyLocal: true,
      endpoints: [ep('10.180.0.8', 80), ep('10.180.0.9', 80)] })],
  },
  'itp-local-with-local-endpoint': {
    ports: [sp({ namespace: 'ns9', name: 'svc9', clusterIP: '172.30.0.49', internalPolicyLocal: true,
      endpoints: [ep('10.180.0.8', 80), ep('10.180.0.9', 80, { local: true })] })],
  },
  'nodeport-addresses': {
    cfg: { ...CFG, nodeIPs: ['192.168.0.2', '192.168.1.2', '172.16.0.2', '127.0.0.1'], nodePortAddresses: ['192.168.0.0/16', '127.0.0.0/8', 'fd00::/64'] },
    ports: [sp({ namespace: 'ns3', name: 'svc3', portName: '', clusterIP: '172.30.0.43', nodePort: 3003, endpoints: [ep('10.180.0.3', 80)] })],
  },
  'masquerade-all-terminating-fallback': {
    cfg: { ...CFG, masqueradeAll: true },
    ports: [sp({ namespace: 'ns10', name: 'svc10', clusterIP: '172.30.0.50',
      endpoints: [ep('10.180.0.10', 80, { ready: false, terminating: true }), ep('10.180.0.11', 80, { ready: false })] })],
  },
  'etp-local-affinity-lb-node-allowed': {
    ports: [sp({ namespace: 'ns11', name: 'svc11', clusterIP: '172.30.0.51', nodePort: 3012, externalPolicyLocal: true,
      loadBalancerIPs: ['5.6.7.9'], loadBalancerSourceRanges: ['192.168.0.0/16', '192.168.0.0/24', '203.0.113.7'], affinityTimeoutSeconds: 30,
      endpoints: [ep('10.180.0.12', 80, { local: true }), ep('10.180.1.12', 80)] })],
  },
};
