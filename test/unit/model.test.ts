import { test } from 'node:test';
import assert from 'node:assert/strict';
import { build, buildService, rebuildServices } from '../../src/model/build.js';
import { applyRebuilt, diff, diffServices, diffSharing, mergeChanges } from '../../src/model/diff.js';
import { categorizeEndpoints, topologyMode } from '../../src/model/policy.js';
import type { ServicePort } from '../../src/model/types.js';
import { config, service, slice, snapshotOf, type EpOpts } from '../support/fixtures.js';

const only = (ports: ServicePort[]): ServicePort => {
  assert.equal(ports.length, 1);
  return ports[0]!;
};

test('a ClusterIP service port takes its endpoints from the slice port with the same name and protocol', () => {
  const svc = service('web', { ports: [{ name: 'http', port: 80, targetPort: 'web' }, { name: 'dns', port: 53, protocol: 'UDP' }] });
  const s = slice('web-1', 'web', [{ ip: '10.244.1.2', node: 'node-1' }, { ip: '10.244.2.3', node: 'node-2' }], {
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }, { name: 'dns', port: 5353, protocol: 'UDP' }, { name: 'http', port: 9999, protocol: 'UDP' }],
  });
  const ports = buildService(svc, new Map([['web-1', s]]), config());
  assert.deepEqual(ports.map((p) => p.id), ['default/web:dns/UDP', 'default/web:http/TCP']);
  const http = ports[1]!;
  assert.deepEqual(http.clusterEndpoints, ['10.244.1.2:8080', '10.244.2.3:8080']);
  assert.equal(http.endpoints.find((e) => e.ip === '10.244.1.2')!.isLocal, true);
  assert.equal(http.endpoints.find((e) => e.ip === '10.244.2.3')!.isLocal, false);
  assert.deepEqual(ports[0]!.clusterEndpoints, ['10.244.1.2:5353', '10.244.2.3:5353']);
});

test('slices merge in name order and an endpoint listed twice counts once, the local copy winning', () => {
  const svc = service('web');
  const a = slice('web-a', 'web', [{ ip: '10.244.2.3', node: 'node-2' }]);
  const b = slice('web-b', 'web', [{ ip: '10.244.2.3', node: 'node-1' }, { ip: '10.244.1.7', node: 'node-1', ready: false }]);
  const sp = only(buildService(svc, new Map([['web-b', b], ['web-a', a]]), config()));
  assert.deepEqual(sp.endpoints.map((e) => [e.id, e.isLocal]), [['10.244.1.7:8080', true], ['10.244.2.3:8080', true]]);
  assert.deepEqual(sp.clusterEndpoints, ['10.244.2.3:8080'], 'not-ready endpoints are never used');
});

test('a dual-stack service gets one entry per family, each with its own slices, external IPs and source ranges', () => {
  const svc = service('web', {
    type: 'LoadBalancer',
    clusterIP: '10.96.0.10',
    spec: { clusterIPs: ['10.96.0.10', 'fd00::10'], externalIPs: ['198.18.1.5', '2001:db8::5'], loadBalancerSourceRanges: ['198.18.0.0/24', '2001:db8::/64'] },
    ports: [{ name: 'http', port: 80, nodePort: 30080 }],
  });
  const v4 = slice('web-v4', 'web', [{ ip: '10.244.1.2' }]);
  const v6 = slice('web-v6', 'web', [{ ip: 'fd00:244::2' }], { addressType: 'IPv6' });
  const ports = buildService(svc, new Map([['web-v4', v4], ['web-v6', v6]]), config());
  assert.deepEqual(ports.map((p) => p.id), ['default/web:http/TCP', 'default/web:http/TCP/v6']);
  assert.deepEqual(ports[0]!.externalIPs, ['198.18.1.5']);
  assert.deepEqual(ports[1]!.externalIPs, ['2001:db8::5']);
  assert.deepEqual(ports[1]!.loadBalancerSourceRanges, ['2001:db8::/64']);
  assert.deepEqual(ports[1]!.clusterEndpoints, ['[fd00:244::2]:8080']);
});

test('services labelled for another proxy produce nothing; labelled for this one they are served', () => {
  const other = service('a', { labels: { 'service.kubernetes.io/service-proxy-name': 'cilium' } });
  const mine = service('b', { labels: { 'service.kubernetes.io/service-proxy-name': 'rudder' } });
  assert.deepEqual(buildService(other, undefined, config()), []);
  assert.equal(buildService(mine, undefined, config()).length, 1);
});

const eps = (list: Array<[string, string, 'ready' | 'terminating' | 'dead']>) =>
  list.map(([ip, node, st]) => ({ ip, node, ready: st === 'ready', serving: st !== 'dead', terminating: st !== 'ready' }));

function categorize(svcOpts: Parameters<typeof service>[1], endpoints: EpOpts[]) {
  const sp = only(buildService(service('s', svcOpts), new Map([['s', slice('s', 's', endpoints)]]), config()));
  return sp;
}

test('terminating fallback: serving-terminating endpoints are used only when no endpoint is ready anywhere', () => {
  const mixed = categorize({}, eps([['10.244.1.2', 'node-1', 'terminating'], ['10.244.2.2', 'node-2', 'ready']]));
  assert.deepEqual(mixed.clusterEndpoints, ['10.244.2.2:8080']);
  assert.equal(mixed.clusterTerminatingFallback, false);
  const allTerm = categorize({}, eps([['10.244.1.2', 'node-1', 'terminating'], ['10.244.2.2', 'node-2', 'dead']]));
  assert.deepEqual(allTerm.clusterEndpoints, ['10.244.1.2:8080']);
  assert.equal(allTerm.clusterTerminatingFallback, true);
  assert.equal(allTerm.hasEndpoints, true);
  const none = categorize({}, eps([['10.244.2.2', 'node-2', 'dead']]));
  assert.equal(none.hasEndpoints, false);
});

test('the Local set falls back to local serving-terminating endpoints independently of the Cluster set', () => {
  const sp = categorize(
    { type: 'NodePort', spec: { externalTrafficPolicy: 'Local' }, ports: [{ name: 'http', port: 80, nodePort: 30080 }] },
    eps([['10.244.1.2', 'node-1', 'terminating'], ['10.244.2.2', 'node-2', 'ready']]),
  );
  assert.deepEqual(sp.clusterEndpoints, ['10.244.2.2:8080']);
  assert.deepEqual(sp.localEndpoints, ['10.244.1.2:8080']);
  assert.equal(sp.localTerminatingFallback, true);
  assert.deepEqual(sp.reachableEndpoints, ['10.244.1.2:8080', '10.244.2.2:8080']);
});

test('internalTrafficPolicy Local without external access uses no Cluster set; without local endpoints nothing is reachable', () => {
  const sp = categorize({ spec: { internalTrafficPolicy: 'Local' } }, eps([['10.244.2.2', 'node-2', 'ready']]));
  assert.deepEqual(sp.clusterEndpoints, []);
  assert.deepEqual(sp.localEndpoints, []);
  assert.deepEqual(sp.reachableEndpoints, []);
  assert.equal(sp.hasEndpoints, true, 'endpoints exist elsewhere: drop, not reject');
});

test('eTP Local on a ClusterIP service without external addresses has no effect', () => {
  const sp = categorize({ spec: { externalTrafficPolicy: 'Local' } }, eps([['10.244.2.2', 'node-2', 'ready']]));
  assert.equal(sp.externalPolicyLocal, false);
  assert.deepEqual(sp.localEndpoints, []);
});

test('topology: zone hints are honoured only when every ready endpoint has them and one is for this zone', () => {
  const base = { ready: true, serving: true, terminating: false, port: 80, nodeName: 'n', isLocal: false, zone: '', nodeHints: [] as string[] };
  const ep = (ip: string, zones: string[]) => ({ ...base, ip, id: `${ip}:80`, zoneHints: zones });
  assert.equal(topologyMode([ep('a', ['zone-a']), ep('b', ['zone-b'])], 'node-1', 'zone-a'), 'PreferSameZone');
  assert.equal(topologyMode([ep('a', ['zone-a']), ep('b', [])], 'node-1', 'zone-a'), '', 'one endpoint without hints disables them');
  assert.equal(topologyMode([ep('a', ['zone-b']), ep('b', ['zone-c'])], 'node-1', 'zone-a'), '', 'no endpoint for our zone: ignore hints');
  assert.equal(topologyMode([ep('a', ['zone-a'])], 'node-1', ''), '', 'a node without a zone ignores zone hints');
  const cat = categorizeEndpoints({ internalPolicyLocal: false, externalPolicyLocal: false, nodePort: 0, externalIPs: [], loadBalancerIPs: [], endpoints: [ep('a', ['zone-a']), ep('b', ['zone-b'])] }, { nodeName: 'node-1', zone: 'zone-a' });
  assert.deepEqual(cat.clusterEndpoints, ['a:80']);
  assert.equal(cat.topologyMode, 'PreferSameZone');
});

test('topology: node hints (PreferSameNode) win over zone hints when every ready endpoint has them', () => {
  const sp = categorize({}, [
    { ip: '10.244.1.2', node: 'node-1', zoneHints: ['zone-a'], nodeHints: ['node-1'] },
    { ip: '10.244.1.3', node: 'node-9', zoneHints: ['zone-a'], nodeHints: ['node-9'] },
  ]);
  assert.equal(sp.topologyMode, 'PreferSameNode');
  assert.deepEqual(sp.clusterEndpoints, ['10.244.1.2:8080']);
});

test('diff reports added, removed, service and endpoint changes, and nothing for identical tables', () => {
  const cfg = config();
  const s1 = service('a');
  const s2 = service('b', { clusterIP: '10.96.0.11' });
  const sl = slice('a-1', 'a', [{ ip: '10.244.1.2' }]);
  const t1 = build(snapshotOf([s1, s2, sl]), cfg);
  assert.deepEqual(diff(t1, build(snapshotOf([s1, s2, sl]), cfg)), []);
  const sl2 = slice('a-1', 'a', [{ ip: '10.244.1.2' }, { ip: '10.244.1.3' }]);
  const s2b = service('b', { clusterIP: '10.96.0.11', ports: [{ name: 'http', port: 81 }] });
  const s3 = service('c', { clusterIP: '10.96.0.12' });
  const t2 = build(snapshotOf([s1, s2b, s3, sl2]), cfg);
  const kinds = diff(t1, t2).map((c) => `${c.kind} ${c.id}`).sort();
  assert.deepEqual(kinds, ['added default/c:http/TCP', 'endpointsChanged default/a:http/TCP', 'serviceChanged default/b:http/TCP']);
  assert.deepEqual(diff(t2, t1).map((c) => c.kind).sort(), ['endpointsChanged', 'removed', 'serviceChanged']);
});

test('an incremental rebuild of the touched services gives the same changes and table as a full rebuild', () => {
  const cfg = config();
  const objs = [];
  for (let i = 0; i < 50; i++) {
    objs.push(service(`s${i}`, { clusterIP: `10.96.1.${i}` }));
    objs.push(slice(`s${i}-x`, `s${i}`, [{ ip: `10.244.1.${i}`, node: 'node-1' }]));
  }
  const tracker = snapshotOf(objs);
  tracker.take();
  const table = build(tracker, cfg);
  const before = build(tracker, cfg);
  tracker.handle({ type: 'upsert', object: slice('s7-x', 's7', [{ ip: '10.244.1.7', ready: false }, { ip: '10.244.2.7' }]) });
  tracker.handle({ type: 'delete', kind: 'Service', key: 'Service/default/s9' });
  const pending = tracker.take();
  assert.deepEqual([...pending.services].sort(), ['default/s7', 'default/s9']);
  const rebuilt = rebuildServices(tracker, cfg, pending.services);
  const changes = diffServices(table, rebuilt);
  applyRebuilt(table, rebuilt);
  assert.deepEqual(changes, diff(before, build(tracker, cfg)));
  assert.deepEqual(table, build(tracker, cfg));
});

test('mergeChanges composes two syncs: first before, last after; a round trip cancels out', () => {
  const cfg = config();
  const t0 = build(snapshotOf([service('a')]), cfg);
  const t1 = build(snapshotOf([service('a'), slice('a-1', 'a', [{ ip: '10.244.1.2' }]), service('b', { clusterIP: '10.96.0.11' })]), cfg);
  const t2 = build(snapshotOf([service('a'), service('c', { clusterIP: '10.96.0.12' })]), cfg);
  const merged = mergeChanges(diff(t0, t1), diff(t1, t2));
  assert.deepEqual(merged.map((c) => `${c.kind} ${c.id}`).sort(), diff(t0, t2).map((c) => `${c.kind} ${c.id}`).sort());
  assert.deepEqual(mergeChanges(diff(t0, t1), diff(t1, t0)), []);
});

test('a full rebuild shares the entries of services that did not change, and finds the same changes as diff()', () => {
  const cfg = config();
  const objs = [service('a', { clusterIP: '10.96.0.1' }), slice('a-1', 'a', [{ ip: '10.244.1.1' }]), service('b', { clusterIP: '10.96.0.2' }), slice('b-1', 'b', [{ ip: '10.244.1.2' }]), service('c', { clusterIP: '10.96.0.3' })];
  const prev = build(snapshotOf(objs), cfg);
  const changed = [objs[0]!, objs[1]!, service('b', { clusterIP: '10.96.0.2' }), slice('b-1', 'b', [{ ip: '10.244.1.9' }]), service('d', { clusterIP: '10.96.0.4' })];
  const next = build(snapshotOf(changed), cfg);
  const expected = diff(prev, next);
  const got = diffSharing(prev, next);
  assert.deepEqual(got.map((c) => `${c.kind} ${c.id}`).sort(), expected.map((c) => `${c.kind} ${c.id}`).sort());
  assert.equal(next.get('default/a'), prev.get('default/a'), 'unchanged: the previous entries, same objects');
  assert.notEqual(next.get('default/b'), prev.get('default/b'), 'changed: the new entries');
  assert.equal(next.has('default/c'), false);
});
