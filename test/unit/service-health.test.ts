import { test } from 'node:test';
import assert from 'node:assert/strict';
import { build } from '../../src/model/build.js';
import { diff } from '../../src/model/diff.js';
import { memoryLogger } from '../../src/observe/log.js';
import { ServiceHealthServers } from '../../src/observe/service-health.js';
import { startAdmin } from '../../src/observe/server.js';
import { ProxyHealth } from '../../src/observe/health.js';
import { Metrics } from '../../src/observe/metrics.js';
import { config, service, slice, snapshotOf } from '../support/fixtures.js';

test('health check node ports answer 200 with the local endpoint count, 503 without, and close with the service', async () => {
  const port = 40000 + Math.floor(Math.random() * 9000);
  let proxyHealthy = true;
  const servers = new ServiceHealthServers({ addresses: () => ['127.0.0.1'], proxyHealthy: () => proxyHealthy, logger: memoryLogger() });
  const lb = (eps: Parameters<typeof slice>[2]) => [
    service('shop', { type: 'LoadBalancer', spec: { externalTrafficPolicy: 'Local', healthCheckNodePort: port }, ports: [{ name: 'http', port: 80, nodePort: 30081 }] }),
    slice('shop-1', 'shop', eps),
  ];
  const cfg = config();
  const get = async () => {
    const r = await fetch(`http://127.0.0.1:${port}/healthz`);
    return { status: r.status, body: await r.json() as { localEndpoints: number; service: { name: string } }, weight: r.headers.get('x-load-balancing-endpoint-weight') };
  };
  try {
    const t0 = new Map();
    const t1 = build(snapshotOf(lb([{ ip: '10.244.1.2', node: 'node-1' }, { ip: '10.244.1.3', node: 'node-1' }, { ip: '10.244.2.2', node: 'node-2' }])), cfg);
    await servers.update(diff(t0, t1));
    let r = await get();
    assert.deepEqual([r.status, r.body.localEndpoints, r.body.service.name, r.weight], [200, 2, 'shop', '2']);
    proxyHealthy = false;
    assert.equal((await get()).status, 503, 'an unhealthy proxy fails every service health check');
    proxyHealthy = true;

    const t2 = build(snapshotOf(lb([{ ip: '10.244.2.2', node: 'node-2' }])), cfg);
    await servers.update(diff(t1, t2));
    r = await get();
    assert.deepEqual([r.status, r.body.localEndpoints], [503, 0], 'no local endpoint: the load balancer must skip this node');

    await servers.update(diff(t2, new Map()));
    await assert.rejects(get(), 'the port closes with the service');
  } finally {
    await servers.close();
  }
});

test('a wildcard address serves both families, as kube-proxy\'s ":port" does: health check node ports and --healthz-bind-address :PORT', async () => {
  const port = 40000 + Math.floor(Math.random() * 9000);
  const servers = new ServiceHealthServers({ addresses: () => [], proxyHealthy: () => true, logger: memoryLogger() });
  const objs = [
    service('shop', { type: 'LoadBalancer', spec: { externalTrafficPolicy: 'Local', healthCheckNodePort: port }, ports: [{ name: 'http', port: 80, nodePort: 30081 }] }),
    slice('shop-1', 'shop', [{ ip: '10.244.1.2', node: 'node-1' }]),
  ];
  const health = new ProxyHealth(60_000);
  health.updated();
  const admin = await startAdmin({ healthz: ':0', metrics: '', nodeName: 'node-1', health, registry: new Metrics({ defaultMetrics: false }).registry, programmed: async () => ({}), table: () => ({}) });
  try {
    await servers.update(diff(new Map(), build(snapshotOf(objs), config())));
    for (const host of ['127.0.0.1', '[::1]']) {
      const r = await fetch(`http://${host}:${port}/`);
      assert.equal(r.status, 200, `health check node port on ${host}`);
      const h = await fetch(`http://${host}:${admin.healthzPort}/healthz`);
      assert.equal(h.status, 200, `/healthz on ${host}`);
    }
  } finally {
    await servers.close();
    await admin.close();
  }
});

test('/services and /table: requests that arrive while a read-back runs share it (one copy of a large table, not one per scrape)', async () => {
  let reads = 0;
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => { release = r; });
  const health = new ProxyHealth(60_000);
  health.updated();
  const admin = await startAdmin({
    healthz: '', metrics: '127.0.0.1:0', nodeName: 'node-1', health, registry: new Metrics({ defaultMetrics: false }).registry,
    programmed: async () => { reads++; await gate; return [{ service: `read ${reads}` }]; },
    table: () => ({}),
  });
  try {
    const url = `http://127.0.0.1:${admin.metricsPort}/services`;
    const pending = Array.from({ length: 10 }, () => fetch(url).then((r) => r.json() as Promise<Array<{ service: string }>>));
    await new Promise((r) => setTimeout(r, 100));
    release();
    const bodies = await Promise.all(pending);
    assert.equal(reads, 1, 'ten concurrent requests, one read-back');
    assert.ok(bodies.every((b) => b[0]!.service === 'read 1'));
    const later = await (await fetch(url)).json() as Array<{ service: string }>;
    assert.equal(later[0]!.service, 'read 2', 'a request after it finished reads the kernel again');
  } finally {
    await admin.close();
  }
});
