import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DataPlane } from '../../src/dataplane/dataplane.js';
import { FakeDataPlane, FaultyDataPlane, expectedState } from '../../src/dataplane/fake.js';
import { ProxyHealth } from '../../src/observe/health.js';
import { memoryLogger } from '../../src/observe/log.js';
import { Metrics } from '../../src/observe/metrics.js';
import { startAdmin } from '../../src/observe/server.js';
import { trace } from '../../src/model/trace.js';
import { packetQuery } from '../../src/cli/trace.js';
import { Syncer } from '../../src/sync/syncer.js';
import { Tracker } from '../../src/sync/tracker.js';
import { config, service, slice } from '../support/fixtures.js';

function setup<D extends DataPlane>(dp: D, opts: { fullSyncIntervalMs?: number; now?: () => number } = {}) {
  const tracker = new Tracker('node-1');
  const metrics = new Metrics({ defaultMetrics: false });
  const health = new ProxyHealth(60_000, opts.now);
  const syncer = new Syncer({ tracker, dataplane: dp, config: () => config(), logger: memoryLogger(), metrics, health, fullSyncIntervalMs: opts.fullSyncIntervalMs ?? 60_000, now: opts.now });
  return { tracker, syncer, dp, metrics, health };
}

test('no sync happens before the initial list of services and slices', async () => {
  const { tracker, syncer, dp } = setup(new FakeDataPlane());
  tracker.handle({ type: 'upsert', object: service('a') });
  assert.equal(await syncer.sync(), null);
  assert.equal(dp.applies.length, 0);
  tracker.handle({ type: 'synced', kind: 'Service', keys: ['Service/default/a'] });
  tracker.handle({ type: 'synced', kind: 'EndpointSlice', keys: [] });
  const r = await syncer.sync();
  assert.equal(r?.full, true);
  assert.equal(dp.state.size, 1, 'the change seen before the list completed is not lost');
});

test('after the first full sync, a change is applied as a partial sync of just that service', async () => {
  const { tracker, syncer, dp, metrics } = setup(new FakeDataPlane());
  tracker.handle({ type: 'synced', kind: 'Service', keys: [] });
  tracker.handle({ type: 'synced', kind: 'EndpointSlice', keys: [] });
  for (let i = 0; i < 20; i++) tracker.handle({ type: 'upsert', object: service(`s${i}`, { clusterIP: `10.96.0.${i + 1}` }) });
  await syncer.sync();
  tracker.handle({ type: 'upsert', object: slice('s3-x', 's3', [{ ip: '10.244.1.2' }]) });
  const r = await syncer.sync();
  assert.deepEqual(r && { full: r.full, changes: r.changes }, { full: false, changes: 1 });
  assert.deepEqual(dp.applies.map((a) => a.full), [true, false]);
  assert.deepEqual(dp.state, expectedState(syncer.table));
  const text = await metrics.registry.metrics();
  assert.match(text, /^kubeproxy_sync_proxy_rules_endpoint_changes_total 1$/m);
  assert.match(text, /^kubeproxy_sync_proxy_rules_service_changes_total 20$/m);
  assert.match(text, /^rudder_service_ports 20$/m);
  assert.match(text, /^kubeproxy_sync_partial_proxy_rules_duration_seconds_count 1$/m);
  // No slice carried a last-change-trigger-time: nothing to measure network programming from.
  assert.match(text, /^kubeproxy_network_programming_duration_seconds_count 0$/m);
});

test('network programming latency is kube-proxy\'s: from a slice\'s last-change-trigger-time, endpoint changes only, the initial state left out; failed syncs are timed too', async () => {
  const dp = new FaultyDataPlane(new FakeDataPlane(), 0);
  // The tracker started a minute ago (wall clock).
  const tracker = new Tracker('node-1', Date.now, () => Date.now() - 60_000);
  const metrics = new Metrics({ defaultMetrics: false });
  const syncer = new Syncer({ tracker, dataplane: dp, config: () => config(), logger: memoryLogger(), metrics, fullSyncIntervalMs: 3_600_000 });
  const triggered = (at: number, eps: Parameters<typeof slice>[2]) => {
    const s = slice('a-1', 'a', eps);
    s.lastChangeTriggerTime = at;
    return s;
  };
  tracker.handle({ type: 'upsert', object: service('a') });
  tracker.handle({ type: 'upsert', object: triggered(Date.now() - 120_000, [{ ip: '10.244.1.2' }]) });
  tracker.handle({ type: 'synced', kind: 'Service', keys: ['Service/default/a'] });
  tracker.handle({ type: 'synced', kind: 'EndpointSlice', keys: ['EndpointSlice/default/a-1'] });
  await syncer.sync();
  const count = async (): Promise<number> => Number(/^kubeproxy_network_programming_duration_seconds_count (\d+)$/m.exec(await metrics.registry.metrics())![1]);
  const sum = async (): Promise<number> => Number(/^kubeproxy_network_programming_duration_seconds_sum (\S+)$/m.exec(await metrics.registry.metrics())![1]);
  assert.equal(await count(), 0, 'a trigger time from before the proxy started is the initial state');

  tracker.handle({ type: 'upsert', object: triggered(Date.now() - 2_000, [{ ip: '10.244.1.3' }]) });
  await syncer.sync();
  assert.equal(await count(), 1);
  const s = await sum();
  assert.ok(s >= 2 && s < 3, `measured from the trigger time, 2 s before: ${s}`);

  tracker.handle({ type: 'upsert', object: service('a', { clusterIP: '10.96.0.99' }) });
  await syncer.sync();
  assert.equal(await count(), 1, 'a Service change is not an endpoints change');

  // A failed sync is timed, and the trigger time waits for the sync that lands.
  dp.failRate = 1;
  tracker.handle({ type: 'upsert', object: triggered(Date.now() - 1_000, [{ ip: '10.244.1.4' }]) });
  await assert.rejects(syncer.sync());
  const syncs = (t: string): number => Number(/^kubeproxy_sync_proxy_rules_duration_seconds_count (\d+)$/m.exec(t)![1]);
  assert.equal(syncs(await metrics.registry.metrics()), 4);
  assert.equal(await count(), 1);
  dp.failRate = 0;
  await syncer.sync();
  assert.equal(await count(), 2);
});

test('a failed transaction keeps the previous state, the next sync is full, and the changes are not lost', async () => {
  const inner = new FakeDataPlane();
  const dp = new FaultyDataPlane(inner, 0);
  const { tracker, syncer, metrics } = setup(dp);
  tracker.handle({ type: 'synced', kind: 'Service', keys: [] });
  tracker.handle({ type: 'synced', kind: 'EndpointSlice', keys: [] });
  tracker.handle({ type: 'upsert', object: service('a') });
  await syncer.sync();
  const before = new Map(inner.state);
  tracker.handle({ type: 'upsert', object: slice('a-1', 'a', [{ ip: '10.244.1.2' }]) });
  dp.failRate = 1;
  await assert.rejects(syncer.sync(), /injected fault/);
  assert.deepEqual(inner.state, before, 'the kernel state is untouched by a failed transaction');
  dp.failRate = 0;
  const r = await syncer.sync();
  assert.equal(r?.full, true, 'the retry is a full sync');
  assert.deepEqual(inner.state, expectedState(syncer.table));
  assert.deepEqual(inner.state.get('default/a:http/TCP|clusterIP|10.96.0.10:80')?.backends, ['10.244.1.2:8080']);
  assert.match(await metrics.registry.metrics(), /^rudder_sync_failures_total\{dataplane="iptables"\} 1$/m);
});

test('under random transaction failures the kernel converges to the table once a sync lands', async () => {
  const inner = new FakeDataPlane();
  const dp = new FaultyDataPlane(inner, 0.3, 7);
  const { tracker, syncer } = setup(dp);
  tracker.handle({ type: 'synced', kind: 'Service', keys: [] });
  tracker.handle({ type: 'synced', kind: 'EndpointSlice', keys: [] });
  let rng = 3;
  const rand = (n: number): number => { rng = (rng * 1103515245 + 12345) % 2147483648; return rng % n; };
  for (let step = 0; step < 300; step++) {
    const i = rand(15);
    const op = rand(4);
    if (op === 0) tracker.handle({ type: 'upsert', object: service(`s${i}`, { clusterIP: `10.96.0.${i + 1}`, ...(rand(2) ? { spec: { externalIPs: ['198.18.1.5'] } } : {}) }) });
    else if (op === 1) tracker.handle({ type: 'delete', kind: 'Service', key: `Service/default/s${i}` });
    else if (op === 2) tracker.handle({ type: 'upsert', object: slice(`s${i}-x`, `s${i}`, [{ ip: `10.244.1.${rand(5) + 1}`, ready: rand(3) > 0 }, { ip: `10.244.2.${rand(5) + 1}` }]) });
    else tracker.handle({ type: 'delete', kind: 'EndpointSlice', key: `EndpointSlice/default/s${i}-x` });
    try { await syncer.sync(); } catch { /* retried by the next sync */ }
  }
  dp.failRate = 0;
  await syncer.sync();
  assert.ok(dp.failures > 50, `faults were injected (${dp.failures})`);
  assert.deepEqual(inner.state, expectedState(syncer.table));
});

test('health: unhealthy before the first sync and when a queued change waits past the timeout', () => {
  let t = 1000;
  const h = new ProxyHealth(5000, () => t);
  assert.equal(h.state().healthy, false);
  h.queued();
  h.updated();
  assert.equal(h.state().healthy, true);
  h.queued();
  t += 4000;
  assert.equal(h.state().healthy, true, 'a change may wait up to the timeout');
  t += 2000;
  assert.equal(h.state().healthy, false);
  h.updated();
  assert.equal(h.state().healthy, true);
  assert.deepEqual(Object.keys(JSON.parse(h.body('node-1'))), ['lastUpdated', 'currentTime', 'nodeEligible', 'nodeName']);
});

test('admin endpoints: /healthz 503 then 200, /metrics with kube-proxy names, /services read back, localhost only', async () => {
  const { tracker, syncer, metrics, health, dp } = setup(new FakeDataPlane());
  const admin = await startAdmin({
    healthz: '127.0.0.1:0', metrics: '127.0.0.1:0', nodeName: 'node-1', health, registry: metrics.registry,
    programmed: () => dp.programmed(), table: () => Object.fromEntries(syncer.table),
    trace: (q) => trace(syncer.table, syncer.config, packetQuery(q)),
  });
  try {
    const get = (port: number | null, path: string) => fetch(`http://127.0.0.1:${port}${path}`);
    assert.equal((await get(admin.healthzPort, '/healthz')).status, 503);
    tracker.handle({ type: 'synced', kind: 'Service', keys: [] });
    tracker.handle({ type: 'synced', kind: 'EndpointSlice', keys: [] });
    tracker.handle({ type: 'upsert', object: service('a') });
    await syncer.sync();
    assert.equal((await get(admin.healthzPort, '/healthz')).status, 200);
    assert.equal((await get(admin.healthzPort, '/livez')).status, 200);
    const m = await (await get(admin.metricsPort, '/metrics')).text();
    for (const name of ['kubeproxy_sync_proxy_rules_duration_seconds_bucket', 'kubeproxy_network_programming_duration_seconds_bucket', 'kubeproxy_sync_proxy_rules_last_timestamp_seconds', 'kubeproxy_sync_proxy_rules_endpoint_changes_pending', 'kubeproxy_sync_proxy_rules_service_changes_total', 'kubeproxy_sync_proxy_rules_no_local_endpoints_total', 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total']) {
      assert.ok(m.includes(name), `missing metric ${name}`);
    }
    const services = await (await get(admin.metricsPort, '/services')).json() as Array<{ service: string }>;
    assert.deepEqual(services.map((s) => s.service), ['default/a:http/TCP']);
    assert.equal((await get(admin.metricsPort, '/nope')).status, 404);
    const t = await (await get(admin.metricsPort, '/trace?src=10.244.1.5&dst=10.96.0.10&port=80')).json() as { verdict: string; service: string };
    assert.deepEqual([t.verdict, t.service], ['reject', 'default/a:http/TCP'], 'the live table answers: a has no endpoints');
    const bad = await get(admin.metricsPort, '/trace?src=10.244.1.5&dst=nope&port=80');
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /dst: "nope" is not an IP address/);
  } finally {
    await admin.close();
  }
});

test('the changes of a failed sync reach the data plane with the next sync that lands', async () => {
  const inner = new FakeDataPlane();
  const seen: string[][] = [];
  const dp = new FaultyDataPlane({ ...inner, name: inner.name, init: () => inner.init(), programmed: () => inner.programmed(), cleanup: () => inner.cleanup(),
    apply: (changes, table, opts) => { seen.push(changes.map((c) => `${c.kind} ${c.id}`)); return inner.apply(changes, table, opts); } }, 0);
  const { tracker, syncer } = setup(dp);
  tracker.handle({ type: 'synced', kind: 'Service', keys: [] });
  tracker.handle({ type: 'synced', kind: 'EndpointSlice', keys: [] });
  tracker.handle({ type: 'upsert', object: service('a') });
  await syncer.sync();
  dp.failRate = 1;
  tracker.handle({ type: 'upsert', object: slice('a-1', 'a', [{ ip: '10.244.1.2' }]) });
  await assert.rejects(syncer.sync());
  dp.failRate = 0;
  tracker.handle({ type: 'upsert', object: service('b', { clusterIP: '10.96.0.11' }) });
  await syncer.sync();
  assert.deepEqual(seen[seen.length - 1]!.sort(), ['added default/b:http/TCP', 'endpointsChanged default/a:http/TCP'],
    'the failed endpoint change is carried over, not lost in the full resync');
});

test('a change of the node\'s local addresses alone is a partial sync that says so; another config change is full', async () => {
  const tracker = new Tracker('node-1');
  let cfg = config({ localAddresses: ['198.18.0.2'] });
  const dp = new FakeDataPlane();
  const syncer = new Syncer({ tracker, dataplane: dp, config: () => cfg, logger: memoryLogger(), fullSyncIntervalMs: 60_000 });
  tracker.handle({ type: 'synced', kind: 'Service', keys: [] });
  tracker.handle({ type: 'synced', kind: 'EndpointSlice', keys: [] });
  await syncer.sync();
  cfg = config({ localAddresses: ['198.18.0.2', '198.18.0.9'] });
  const r = await syncer.sync();
  assert.equal(r?.full, false);
  cfg = config({ localAddresses: ['198.18.0.2', '198.18.0.9'], masqueradeAll: true });
  await syncer.sync();
  assert.deepEqual(dp.applies.map((a) => [a.full, a.addressesChanged]), [[true, false], [false, true], [true, false]]);
});

test('the periodic full sync reprograms everything from the table kept up to date change by change, with the changes pending at that moment', async () => {
  let t = 0;
  const { tracker, syncer, dp } = setup(new FakeDataPlane(), { fullSyncIntervalMs: 60_000, now: () => t });
  tracker.handle({ type: 'synced', kind: 'Service', keys: [] });
  tracker.handle({ type: 'synced', kind: 'EndpointSlice', keys: [] });
  tracker.handle({ type: 'upsert', object: service('a', { clusterIP: '10.96.0.1' }) });
  tracker.handle({ type: 'upsert', object: service('b', { clusterIP: '10.96.0.2' }) });
  await syncer.sync();
  t += 61_000;
  tracker.handle({ type: 'upsert', object: slice('b-1', 'b', [{ ip: '10.244.1.2' }]) });
  const r = await syncer.sync();
  assert.deepEqual(r && { full: r.full, changes: r.changes }, { full: true, changes: 1 });
  assert.equal(dp.applies.at(-1)?.full, true);
  assert.deepEqual(dp.state, expectedState(syncer.table));
  assert.deepEqual(dp.state.get('default/b:http/TCP|clusterIP|10.96.0.2:80')?.backends, ['10.244.1.2:8080']);
});
