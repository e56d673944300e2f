// Golden files for the nftables layout (full-sync transactions for kube-proxy's test services),
// the transaction builder, and the read-back parser on nft's JSON.
// UPDATE_GOLDEN=1 rewrites test/golden/nftables/*.nft; otherwise they are compared exactly.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { nftConfig, companionOf, pickObjects } from '../../src/dataplane/nftables/layout.js';
import { fullTransaction } from '../../src/dataplane/nftables/plan.js';
import { parseChains, programmedFrontends } from '../../src/dataplane/nftables/readback.js';
import { disjointRanges } from '../../src/dataplane/nftables/render.js';
import { TableState } from '../../src/dataplane/nftables/state.js';
import { Transaction } from '../../src/dataplane/nftables/transaction.js';
import type { ProxyConfig, ServicePort } from '../../src/model/types.js';
import { CFG, ep, sp } from '../support/iptables.js';
import { FakeNft } from '../support/nftables.js';
import { SCENARIOS } from '../support/scenarios.js';

const GOLDEN_DIR = fileURLToPath(new URL('../../../test/golden/nftables/', import.meta.url));

function renderFull(ports: ServicePort[], cfg: ProxyConfig = CFG, family: 4 | 6 = 4): string {
  const state = new TableState(nftConfig(cfg, 14, family).config);
  state.load([...ports].sort((a, b) => (a.id < b.id ? -1 : 1)));
  const { tx } = fullTransaction(state, { recreate: true, existingChains: new Set(), deleteChains: true });
  assert.equal(tx.error(), null);
  return tx.toString();
}

function golden(name: string, actual: string): void {
  const path = GOLDEN_DIR + name + '.nft';
  if (process.env['UPDATE_GOLDEN'] === '1') {
    mkdirSync(GOLDEN_DIR, { recursive: true });
    writeFileSync(path, actual);
    return;
  }
  assert.equal(actual, readFileSync(path, 'utf8'), `golden ${name}.nft differs (UPDATE_GOLDEN=1 rewrites it)`);
}

const scenarios = SCENARIOS;

for (const [name, s] of Object.entries(scenarios)) {
  test(`golden ${name}`, () => golden(name, renderFull(s.ports, s.cfg)));
}

// IPv6: the table ip6 rudder, same layout (ClusterIP with two endpoints and a NodePort, eTP=Local
// LB with source ranges, UDP affinity, no endpoints, an external IP).
const CFG6: ProxyConfig = { ...CFG, clusterCIDRs: [...CFG.clusterCIDRs, 'fd00:180::/40'], nodeIPs: [...CFG.nodeIPs, 'fd00:1::5'] };
const V6_PORTS: ServicePort[] = [
  sp({ namespace: 'ns1', name: 'web', clusterIP: 'fd00:30::41', family: 6, nodePort: 3006, externalIPs: ['2001:db8::7'],
    endpoints: [ep('fd00:180::1', 8080), ep('fd00:180::2', 8080), ep('fd00:181::3', 8080)] }),
  sp({ namespace: 'ns2', name: 'lb', clusterIP: 'fd00:30::42', family: 6, nodePort: 3007, loadBalancerIPs: ['2001:db8::10'],
    loadBalancerSourceRanges: ['2001:db8:1::/48', 'fd00:1::/64', '10.0.0.0/8'], externalPolicyLocal: true,
    endpoints: [ep('fd00:180::5', 80, { local: true }), ep('fd00:181::5', 80)] }),
  sp({ namespace: 'ns3', name: 'dns', clusterIP: 'fd00:30::43', family: 6, protocol: 'UDP', port: 53, affinityTimeoutSeconds: 30,
    endpoints: [ep('fd00:180::6', 53), ep('fd00:180::7', 53)] }),
  sp({ namespace: 'ns4', name: 'empty', clusterIP: 'fd00:30::44', family: 6 }),
];

test('golden ipv6-dual-stack (ip6 rudder)', () => {
  const text = renderFull(V6_PORTS, CFG6, 6);
  golden('ipv6-dual-stack', text);
  assert.doesNotMatch(text, / ip rudder |ipv4_addr|\bip (s|d)addr|dnat ip to|127\.0\.0\.0|10\.0\.0\.0/);
  assert.match(text, /2001:db8::10 \. tcp \. 80 \. 2001:db8::10\/128/, 'the node address admits the LB IP as source');
});

test('nftConfig per family', () => {
  const v6 = nftConfig(CFG6, 14, 6).config;
  assert.equal(v6.family, 'ip6');
  assert.deepEqual(v6.clusterCIDRs, ['fd00:180::/40']);
  assert.equal(v6.nodePortIPs, null, 'without --nodeport-addresses: every local address');
  assert.equal(nftConfig(CFG6).config.family, 'ip');
  assert.deepEqual(disjointRanges(['fd00::/64', 'fd00::/48', '10.0.0.0/8', '2001:db8::1'], 6), ['2001:db8::1/128', 'fd00::/48']);
  assert.equal(companionOf('ip-pick-2', 'ip6')?.spec, pickObjects('ip', 'own', 2, 'ip6')[0].spec);
  assert.match(companionOf('aff-ep-abcdefghijklmnop-30', 'ip6')?.spec ?? '', /^type ipv6_addr ;/);
});

test('read-back of ip6 rudder: bracketed addresses', () => {
  const fake = new FakeNft();
  assert.equal(fake.run(renderFull(V6_PORTS, CFG6, 6)), null);
  const fe = programmedFrontends(fake.listTableJson('ip6', 'rudder')!);
  const web = fe.find((f) => f.address === '[fd00:30::41]:80');
  assert.deepEqual(web, { service: 'ns1/web:p80/TCP/v6', kind: 'clusterIP', address: '[fd00:30::41]:80', backends: ['[fd00:180::1]:8080', '[fd00:180::2]:8080', '[fd00:181::3]:8080'] });
  assert.deepEqual(fe.find((f) => f.address === '[fd00:30::43]:53')?.backends, ['[fd00:180::6]:53', '[fd00:180::7]:53']);
  assert.ok(fe.some((f) => f.address === '*:3006'));
});

test('transaction: adding never throws, bad input is reported, element operations are batched', () => {
  const tx = new Transaction();
  tx.addChain('services').addRule('services', 'ip daddr . meta l4proto . th dport vmap @service-ips');
  tx.addElement('cluster-ips', '10.96.0.1').addElement('cluster-ips', '10.96.0.2').deleteElement('cluster-ips', '10.96.0.3');
  tx.addElement('service-ips', '10.96.0.1 . tcp . 80', 'goto ip-internal', 'cluster-ip ns/a:http/TCP');
  assert.equal(tx.error(), null);
  assert.equal(tx.operations, 6);
  assert.equal(tx.toString(), [
    'add chain ip rudder services',
    'add rule ip rudder services ip daddr . meta l4proto . th dport vmap @service-ips',
    'add element ip rudder cluster-ips { 10.96.0.1, 10.96.0.2 }',
    'delete element ip rudder cluster-ips { 10.96.0.3 }',
    'add element ip rudder service-ips { 10.96.0.1 . tcp . 80 comment "cluster-ip ns/a:http/TCP" : goto ip-internal }',
    '',
  ].join('\n'));
  tx.addRule('services', 'accept\nflush ruleset');
  tx.addChain('9bad name');
  tx.addElement('m', 'a', 'b', 'x'.repeat(129));
  assert.match(tx.error() ?? '', /invalid rule/);
  assert.equal(new Transaction().isEmpty(), true);
  assert.equal(new Transaction('ip6', 'rudder').addTable().toString(), 'add table ip6 rudder\n');
  assert.match(new Transaction().addElement('s', 'a, b').error() ?? '', /invalid element key/);
});

test('source ranges become disjoint canonical prefixes (interval sets refuse overlaps)', () => {
  assert.deepEqual(disjointRanges(['10.1.2.3/8', '10.0.0.0/16', '192.168.1.1', '192.168.1.1/32', 'fd00::/64', '0.0.0.0/0', 'bad']), ['0.0.0.0/0']);
  assert.deepEqual(disjointRanges(['10.0.0.0/16', '10.1.0.0/16', '10.0.5.0/24', '203.0.113.7']), ['10.0.0.0/16', '10.1.0.0/16', '203.0.113.7/32']);
});

test('a stale chain names its companion set or map', () => {
  assert.deepEqual(companionOf('ip-pick-4'), pickObjects('ip', 'own', 4)[0]);
  assert.equal(companionOf('np-cpick-2')?.name, 'np-ceps-2');
  assert.equal(companionOf('aff-ep-abcdefghijklmnop-30')?.name, 'aff-abcdefghijklmnop-30');
  assert.equal(companionOf('aff-ep-abcdefghijklmnop-30')?.spec, 'type ipv4_addr ; flags dynamic,timeout ; timeout 30s ;');
  assert.equal(companionOf('services'), null);
});

// Shaped as nft 1.0.6 prints it (elements with and without comments, an affinity chain).
const REAL_JSON = JSON.stringify({ nftables: [
  { metainfo: { version: '1.0.6', json_schema_version: 1 } },
  { table: { family: 'ip', name: 'rudder', handle: 7 } },
  { map: { family: 'ip', name: 'service-ips', table: 'rudder', type: ['ipv4_addr', 'inet_proto', 'inet_service'], handle: 1, map: 'verdict', elem: [
    [{ elem: { val: { concat: ['10.96.0.1', 'tcp', 80] }, comment: 'cluster-ip ns/web:http/TCP' } }, { goto: { target: 'ip-internal' } }],
    [{ elem: { val: { concat: ['10.96.0.2', 'udp', 53] }, comment: 'cluster-ip kube-system/dns:dns/UDP' } }, { goto: { target: 'ip-internal' } }],
  ] } },
  { map: { family: 'ip', name: 'service-nodeports', table: 'rudder', handle: 2, map: 'verdict', elem: [
    [{ elem: { val: { concat: ['tcp', 30080] }, comment: 'nodeport ns/web:http/TCP' } }, { goto: { target: 'np-external' } }],
  ] } },
  { map: { family: 'ip', name: 'ip-pick', table: 'rudder', handle: 3, map: 'verdict', elem: [
    [{ concat: ['10.96.0.1', 'tcp', 80] }, { goto: { target: 'ip-pick-2' } }],
    [{ concat: ['10.96.0.2', 'udp', 53] }, { goto: { target: 'aff-c-abcdefghijklmnop-10' } }],
  ] } },
  { map: { family: 'ip', name: 'np-pick', table: 'rudder', handle: 4, map: 'verdict', elem: [[{ concat: ['tcp', 30080] }, { goto: { target: 'np-pick-1' } }]] } },
  { map: { family: 'ip', name: 'ip-eps-2', table: 'rudder', handle: 5, map: 'ipv4_addr . inet_service', elem: [
    [{ concat: ['10.96.0.1', 'tcp', 80, 1] }, { concat: ['10.244.1.2', 8080] }],
    [{ concat: ['10.96.0.1', 'tcp', 80, 0] }, { concat: ['10.244.1.1', 8080] }],
  ] } },
  { map: { family: 'ip', name: 'np-eps-1', table: 'rudder', handle: 6, map: 'ipv4_addr . inet_service', elem: [[{ concat: ['tcp', 30080, 0] }, { concat: ['10.244.1.1', 8080] }]] } },
  { chain: { family: 'ip', table: 'rudder', name: 'aff-c-abcdefghijklmnop-10', handle: 9 } },
  { rule: { family: 'ip', table: 'rudder', chain: 'aff-c-abcdefghijklmnop-10', handle: 10, expr: [
    { match: { op: '==', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: '@aff-x-10' } }, { goto: { target: 'aff-ep-x-10' } }] } },
  { rule: { family: 'ip', table: 'rudder', chain: 'aff-c-abcdefghijklmnop-10', handle: 11, expr: [
    { vmap: { key: { numgen: { mode: 'random', mod: 2, offset: 0 } }, data: { set: [[0, { goto: { target: 'aff-ep-x-10' } }], [1, { goto: { target: 'aff-ep-y-10' } }]] } } }] } },
  { rule: { family: 'ip', table: 'rudder', chain: 'aff-ep-x-10', handle: 12, expr: [
    { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'udp' } }, { dnat: { addr: '10.244.1.7', port: 53 } }] } },
  { rule: { family: 'ip', table: 'rudder', chain: 'aff-ep-y-10', handle: 13, expr: [{ dnat: { addr: '10.244.2.7', port: 53 } }] } },
  { chain: { family: 'ip', table: 'other', name: 'not-ours', handle: 1 } },
] });

test('read-back: frontends, their backends through pick maps and affinity chains', () => {
  assert.deepEqual(programmedFrontends(REAL_JSON), [
    { service: 'ns/web:http/TCP', kind: 'clusterIP', address: '10.96.0.1:80', backends: ['10.244.1.1:8080', '10.244.1.2:8080'] },
    { service: 'kube-system/dns:dns/UDP', kind: 'clusterIP', address: '10.96.0.2:53', backends: ['10.244.1.7:53', '10.244.2.7:53'] },
    { service: 'ns/web:http/TCP', kind: 'nodePort', address: '*:30080', backends: ['10.244.1.1:8080'] },
  ]);
  assert.deepEqual([...parseChains(REAL_JSON)], ['aff-c-abcdefghijklmnop-10']);
  assert.deepEqual(programmedFrontends('{"nftables": []}'), []);
  assert.throws(() => programmedFrontends('not json'), SyntaxError);
});
