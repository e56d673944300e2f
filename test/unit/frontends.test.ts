// Frontend records, rule by rule, against hand-written expectations of kube-proxy's behaviour
// (pkg/proxy/iptables/proxier.go, pkg/proxy/nftables/proxier.go, pkg/proxy/util/nodeport_addresses.go).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classifySource, frontendRecords, outranks, portPaths, sourceAllowed } from '../../src/model/frontends.js';
import type { FrontendPath, FrontendRecord } from '../../src/model/frontends.js';
import { nodePortAddresses, nodePortSelection } from '../../src/model/nodeport-addresses.js';
import type { ProxyConfig } from '../../src/model/types.js';
import { CFG, ep, sp } from '../support/iptables.js';

/** The fields of a path a test states by hand. */
const fwd = (set: 'cluster' | 'local', endpoints: string[], masquerade: boolean, rule: string): FrontendPath =>
  ({ verdict: 'forward', set, endpoints, masquerade, rule } as FrontendPath);
const stop = (verdict: 'reject' | 'drop', rule: string): FrontendPath =>
  ({ verdict, set: 'none', endpoints: [], masquerade: false, rule } as FrontendPath);

function paths(r: FrontendRecord | undefined): { fromPod: FrontendPath; fromNode: FrontendPath; fromExternal: FrontendPath } {
  assert.ok(r !== undefined, 'record missing');
  const plain = (p: FrontendPath): FrontendPath => ({ verdict: p.verdict, set: p.set, endpoints: [...p.endpoints], masquerade: p.masquerade, rule: p.rule });
  return { fromPod: plain(r.fromPod), fromNode: plain(r.fromNode), fromExternal: plain(r.fromExternal) };
}

const byKind = (recs: readonly FrontendRecord[], kind: FrontendRecord['kind']) => recs.filter((r) => r.kind === kind);

const LOCAL = ep('10.180.0.2', 80, { local: true });
const REMOTE = ep('10.180.1.2', 80);

test('ClusterIP, Cluster policy: every source gets every endpoint; only off-cluster sources are masqueraded', () => {
  const s = sp({ namespace: 'ns', name: 'a', clusterIP: '172.30.0.1', endpoints: [REMOTE, LOCAL] });
  const [cip, ...rest] = frontendRecords(s, CFG);
  assert.equal(rest.length, 0);
  assert.equal(cip!.key, '172.30.0.1|80|TCP');
  assert.deepEqual([cip!.kind, cip!.ip, cip!.port, cip!.protocol, cip!.family, cip!.service], ['clusterIP', '172.30.0.1', 80, 'TCP', 4, s]);
  const all = ['10.180.0.2:80', '10.180.1.2:80'];
  assert.deepEqual(paths(cip), {
    fromPod: fwd('cluster', all, false, 'internal-cluster'),
    fromNode: fwd('cluster', all, true, 'internal-cluster'),
    fromExternal: fwd('cluster', all, true, 'internal-cluster'),
  });
});

test('iTP Local: local endpoints only, and DROP (not REJECT) when none is local', () => {
  const withLocal = sp({ namespace: 'ns', name: 'b', clusterIP: '172.30.0.2', internalPolicyLocal: true, endpoints: [REMOTE, LOCAL] });
  assert.deepEqual(paths(frontendRecords(withLocal, CFG)[0]).fromPod, fwd('local', ['10.180.0.2:80'], false, 'internal-local'));
  const none = sp({ namespace: 'ns', name: 'b', clusterIP: '172.30.0.2', internalPolicyLocal: true, endpoints: [REMOTE] });
  const drop = stop('drop', 'no-local-endpoints');
  assert.deepEqual(paths(frontendRecords(none, CFG)[0]), { fromPod: drop, fromNode: drop, fromExternal: drop });
});

test('no endpoints anywhere: REJECT at every frontend for every source, and no LB firewall', () => {
  const s = sp({ namespace: 'ns', name: 'c', clusterIP: '172.30.0.3', nodePort: 30003, externalIPs: ['192.168.99.3'],
    loadBalancerIPs: ['1.2.3.3'], loadBalancerSourceRanges: ['203.0.113.0/24'], endpoints: [ep('10.180.0.3', 80, { ready: false })] });
  const recs = frontendRecords(s, CFG);
  assert.deepEqual(recs.map((r) => r.kind), ['clusterIP', 'externalIP', 'loadBalancerIP', 'nodePort']);
  const reject = stop('reject', 'no-endpoints');
  for (const r of recs) assert.deepEqual(paths(r), { fromPod: reject, fromNode: reject, fromExternal: reject }, r.kind);
  assert.deepEqual(byKind(recs, 'loadBalancerIP')[0]!.sourceRanges, [], 'kube-proxy installs no firewall without endpoints');
});

test('eTP Cluster: external sources, pods and the node all masqueraded to every endpoint', () => {
  const s = sp({ namespace: 'ns', name: 'd', clusterIP: '172.30.0.4', nodePort: 30004, endpoints: [LOCAL, REMOTE] });
  const np = byKind(frontendRecords(s, CFG), 'nodePort')[0];
  const p = fwd('cluster', ['10.180.0.2:80', '10.180.1.2:80'], true, 'external-cluster');
  assert.deepEqual(paths(np), { fromPod: p, fromNode: p, fromExternal: p });
});

test('eTP Local: pods short-circuit unmasqueraded, the node is masqueraded, outside clients local-only and kept', () => {
  const s = sp({ namespace: 'ns', name: 'e', clusterIP: '172.30.0.5', externalIPs: ['192.168.99.5'], externalPolicyLocal: true, endpoints: [LOCAL, REMOTE] });
  const all = ['10.180.0.2:80', '10.180.1.2:80'];
  assert.deepEqual(paths(byKind(frontendRecords(s, CFG), 'externalIP')[0]), {
    fromPod: fwd('cluster', all, false, 'external-pod-shortcircuit'),
    fromNode: fwd('cluster', all, true, 'external-node-local'),
    fromExternal: fwd('local', ['10.180.0.2:80'], false, 'external-local'),
  });
  const clusterIP = paths(frontendRecords(s, CFG)[0]);
  assert.deepEqual(clusterIP.fromPod, fwd('cluster', all, false, 'internal-cluster'), 'eTP never changes the ClusterIP');
});

test('eTP Local without local endpoints: outside clients dropped, pods and the node still forwarded', () => {
  const s = sp({ namespace: 'ns', name: 'f', clusterIP: '172.30.0.6', nodePort: 30006, externalPolicyLocal: true, endpoints: [REMOTE] });
  assert.deepEqual(paths(byKind(frontendRecords(s, CFG), 'nodePort')[0]), {
    fromPod: fwd('cluster', ['10.180.1.2:80'], false, 'external-pod-shortcircuit'),
    fromNode: fwd('cluster', ['10.180.1.2:80'], true, 'external-node-local'),
    fromExternal: stop('drop', 'no-local-endpoints'),
  });
});

test('eTP Local without a cluster CIDR: pods cannot be told apart and are treated as outside clients', () => {
  const cfg: ProxyConfig = { ...CFG, clusterCIDRs: [] };
  const s = sp({ namespace: 'ns', name: 'g', clusterIP: '172.30.0.7', externalIPs: ['192.168.99.7'], externalPolicyLocal: true, endpoints: [LOCAL, REMOTE] });
  const p = paths(byKind(frontendRecords(s, cfg), 'externalIP')[0]);
  assert.deepEqual(p.fromPod, fwd('local', ['10.180.0.2:80'], false, 'external-local'));
  assert.deepEqual(p.fromExternal, p.fromPod);
});

test('masqueradeAll: every source to a ClusterIP is masqueraded, pods included', () => {
  const s = sp({ namespace: 'ns', name: 'h', clusterIP: '172.30.0.8', endpoints: [REMOTE] });
  const p = paths(frontendRecords(s, { ...CFG, masqueradeAll: true })[0]);
  const m = fwd('cluster', ['10.180.1.2:80'], true, 'internal-cluster');
  assert.deepEqual(p, { fromPod: m, fromNode: m, fromExternal: m });
});

test('off-cluster masquerade needs a cluster CIDR of the same family', () => {
  const v4 = sp({ namespace: 'ns', name: 'i', clusterIP: '172.30.0.9', endpoints: [REMOTE] });
  assert.equal(frontendRecords(v4, { ...CFG, clusterCIDRs: [] })[0]!.fromExternal.masquerade, false, 'no cluster CIDR: no local detection');
  const v6 = sp({ namespace: 'ns', name: 'i', clusterIP: 'fd00:30::9', family: 6, endpoints: [ep('fd00:180::1', 80)] });
  assert.equal(frontendRecords(v6, CFG)[0]!.fromExternal.masquerade, false, 'an IPv4 cluster CIDR detects nothing for IPv6');
  assert.equal(frontendRecords(v6, { ...CFG, clusterCIDRs: ['10.0.0.0/8', 'fd00:180::/40'] })[0]!.fromExternal.masquerade, true);
});

test('source ranges only on LB records, with the node-as-source allowance when the primary node IP is inside', () => {
  const s = sp({ namespace: 'ns', name: 'j', clusterIP: '172.30.0.10', nodePort: 30010, externalIPs: ['192.168.99.10'],
    loadBalancerIPs: ['5.6.7.8', '5.6.7.9'], loadBalancerSourceRanges: ['192.168.0.0/24', '203.0.113.0/25'], endpoints: [REMOTE] });
  const recs = frontendRecords(s, CFG);
  for (const r of recs) {
    if (r.kind === 'loadBalancerIP') {
      assert.deepEqual([...r.sourceRanges], ['192.168.0.0/24', '203.0.113.0/25']);
      assert.equal(r.primaryNodeIPInRanges, true, '192.168.0.2 is in 192.168.0.0/24');
    } else {
      assert.deepEqual([r.kind, [...r.sourceRanges], r.primaryNodeIPInRanges], [r.kind, [], false]);
    }
  }
  const lb = byKind(recs, 'loadBalancerIP')[0]!;
  assert.equal(sourceAllowed(lb, '203.0.113.7'), true);
  assert.equal(sourceAllowed(lb, '198.51.100.1'), false);
  assert.equal(sourceAllowed(lb, '5.6.7.9'), true, "the service's other LB IP as source: the node reaching it");
  const outside = byKind(frontendRecords(s, { ...CFG, nodeIPs: ['172.16.0.2'] }), 'loadBalancerIP')[0]!;
  assert.equal(outside.primaryNodeIPInRanges, false);
  assert.equal(sourceAllowed(outside, '5.6.7.9'), false);
});

test('NodePorts: one record per NodePort address of the family, keyed by address and NodePort', () => {
  const cfg: ProxyConfig = { ...CFG, nodeIPs: ['192.168.0.2', '10.0.5.2', 'fd00::2'] };
  const s = sp({ namespace: 'ns', name: 'k', clusterIP: '172.30.0.11', port: 8080, protocol: 'UDP', nodePort: 30011, endpoints: [REMOTE] });
  const nps = byKind(frontendRecords(s, cfg), 'nodePort');
  assert.deepEqual(nps.map((r) => [r.key, r.ip, r.port]), [['192.168.0.2|30011|UDP', '192.168.0.2', 30011], ['10.0.5.2|30011|UDP', '10.0.5.2', 30011]]);
  assert.equal(nps[0]!.fromExternal, nps[1]!.fromExternal, 'every address of a NodePort shares one decision');
  assert.equal(nps[0]!.fromExternal, portPaths(s, cfg).external.fromExternal, 'and it is the port-level one port-keyed layouts read');
  const only = byKind(frontendRecords(s, { ...cfg, nodePortAddresses: ['10.0.0.0/8'] }), 'nodePort');
  assert.deepEqual(only.map((r) => r.ip), ['10.0.5.2']);
  const discovered = byKind(frontendRecords(s, { ...cfg, localAddresses: ['192.168.0.2', '198.18.0.9'] }), 'nodePort');
  assert.deepEqual(discovered.map((r) => r.ip), ['192.168.0.2', '198.18.0.9'], 'the local addresses, once known, replace the node IPs');
  assert.deepEqual(byKind(frontendRecords(s, cfg, []), 'nodePort'), [], 'a port-keyed layout may ask for none');
});

test('NodePort addresses: CIDRs per family, /0, loopback, and a family without CIDRs of its own', () => {
  const cfg: ProxyConfig = { ...CFG, nodeIPs: ['192.168.0.2', '127.0.0.1', 'fd00::2'], localAddresses: [], nodePortAddresses: ['192.168.0.0/16', '127.0.0.0/8'] };
  const v4 = nodePortSelection(cfg, 4);
  assert.deepEqual([v4.matchAll, [...v4.addresses]], [false, ['192.168.0.2']]);
  assert.deepEqual([...v4.warnings], ['nodePortAddresses matches loopback 127.0.0.1: localhost NodePorts are not supported']);
  const v6 = nodePortSelection(cfg, 6);
  assert.deepEqual([v6.matchAll, [...v6.addresses]], [true, ['fd00::2']], 'kube-proxy: no IPv6 CIDR means every IPv6 address');
  const zero = nodePortSelection({ ...cfg, nodePortAddresses: ['192.168.0.0/16', '0.0.0.0/0'] }, 4);
  assert.deepEqual([zero.matchAll, [...zero.addresses], [...zero.warnings]], [true, ['192.168.0.2'], []], 'a /0 matches all; loopback still never');
  assert.deepEqual(nodePortAddresses({ ...cfg, nodePortAddresses: [] }), ['192.168.0.2', 'fd00::2']);
});

test('NodePort addresses: "primary" is the primary node IP of each family', () => {
  const cfg: ProxyConfig = { ...CFG, nodeIPs: ['192.168.0.2', '10.0.5.2', 'fd00::2'], nodePortAddresses: ['primary'],
    localAddresses: ['10.0.5.2', '192.168.0.2', 'fd00::2', 'fd00::3'] };
  assert.deepEqual(nodePortAddresses(cfg), ['192.168.0.2', 'fd00::2']);
  assert.equal(nodePortSelection(cfg, 4).matchAll, false);
  const s = sp({ namespace: 'ns', name: 'l', clusterIP: '172.30.0.12', nodePort: 30012, endpoints: [REMOTE] });
  assert.deepEqual(byKind(frontendRecords(s, cfg), 'nodePort').map((r) => r.ip), ['192.168.0.2']);
  // kube-proxy turns "primary" into /32 and /128 CIDRs: a family without a primary IP has no CIDR, so all its addresses.
  const v4only: ProxyConfig = { ...cfg, nodeIPs: ['192.168.0.2'] };
  assert.deepEqual(nodePortAddresses(v4only), ['192.168.0.2', 'fd00::2', 'fd00::3']);
  assert.equal(nodePortSelection(v4only, 6).matchAll, true);
});

test('keys, ranks and affinity: ClusterIP outranks external IP outranks LB IP outranks NodePort, then the lower id', () => {
  const a = sp({ namespace: 'a', name: 'x', clusterIP: '172.30.0.13', externalIPs: ['172.30.0.14'], loadBalancerIPs: ['172.30.0.15'], nodePort: 30013,
    affinityTimeoutSeconds: 600, endpoints: [REMOTE] });
  const b = sp({ namespace: 'b', name: 'y', clusterIP: '172.30.0.14', loadBalancerIPs: ['172.30.0.13'], endpoints: [REMOTE] });
  const ra = frontendRecords(a, CFG);
  const rb = frontendRecords(b, CFG);
  assert.deepEqual(ra.map((r) => r.affinityTimeoutSeconds), [600, 600, 600, 600]);
  assert.deepEqual(ra.map((r) => r.rank), [0, 1, 2, 3]);
  const aExt = byKind(ra, 'externalIP')[0]!;
  assert.equal(aExt.key, rb[0]!.key);
  assert.equal(outranks(rb[0]!, aExt), true, "b's ClusterIP wins over a's external IP on 172.30.0.14:80");
  assert.equal(outranks(ra[0]!, byKind(rb, 'loadBalancerIP')[0]!), true);
  const a2 = sp({ namespace: 'a', name: 'z', clusterIP: '172.30.0.13', endpoints: [REMOTE] });
  assert.equal(outranks(ra[0]!, frontendRecords(a2, CFG)[0]!), true, 'same kind: a/x beats a/z');
  assert.equal(outranks(frontendRecords(a2, CFG)[0]!, ra[0]!), false);
});

test('records are cached per service port and config content, and follow a config change', () => {
  const s = sp({ namespace: 'ns', name: 'm', clusterIP: '172.30.0.16', nodePort: 30016, endpoints: [REMOTE] });
  const first = frontendRecords(s, CFG);
  assert.equal(frontendRecords(s, { ...CFG }), first, 'an equal config rebuilt for the next sync hits the cache');
  const masq = frontendRecords(s, { ...CFG, masqueradeAll: true });
  assert.notEqual(masq, first);
  assert.equal(masq[0]!.fromPod.masquerade, true);
  assert.deepEqual(byKind(frontendRecords(s, { ...CFG, nodeIPs: ['192.168.0.3'] }), 'nodePort').map((r) => r.ip), ['192.168.0.3']);
});

test('source classes: the cluster CIDR first, then the node own addresses, else external', () => {
  const cfg: ProxyConfig = { ...CFG, nodeIPs: ['192.168.0.2'], localAddresses: ['192.168.0.2', '198.18.0.9'] };
  assert.equal(classifySource('10.1.2.3', cfg), 'fromPod');
  assert.equal(classifySource('10.0.0.1', { ...cfg, localAddresses: ['10.0.0.1'] }), 'fromPod', 'a node address inside the cluster CIDR counts as a pod, as -s clusterCIDR does');
  assert.equal(classifySource('192.168.0.2', cfg), 'fromNode');
  assert.equal(classifySource('198.18.0.9', cfg), 'fromNode', 'any local address is the node');
  assert.equal(classifySource('203.0.113.1', cfg), 'fromExternal');
  assert.equal(classifySource('10.1.2.3', { ...cfg, clusterCIDRs: [] }), 'fromExternal', 'without a cluster CIDR nothing is a pod');
});
