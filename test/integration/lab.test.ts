// The lab itself, on the real kernel: topology, routing, pod servers, the no-default-route rule,
// and teardown (explicit, and after a creation that fails half-way). Needs root.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { memoryLogger } from '../../src/observe/log.js';
import { exec } from '../../src/util/exec.js';
import { Lab } from '../../src/lab/lab.js';
import { LabError } from '../../src/lab/errors.js';
import { listLabNamespaces, newRunId } from '../../src/lab/netns.js';
import { defaultTopology, type Topology } from '../../src/lab/topology.js';
import type { ProbeResult } from '../../src/lab/probes.js';

const skip = process.getuid?.() !== 0 ? 'lab tests need root (they create network namespaces)' : false;

function reply(r: ProbeResult): NonNullable<Extract<ProbeResult, { ok: true }>['reply']> {
  assert.ok(r.ok, `expected a reply, got ${r.ok ? '' : `${r.kind}: ${r.message}`}`);
  return r.reply;
}

describe('lab: default topology', { skip }, () => {
  let lab: Lab | undefined;
  const L = (): Lab => {
    assert.ok(lab, 'lab was not created');
    return lab;
  };

  before(async () => {
    lab = await Lab.create(defaultTopology(), { logger: memoryLogger() });
    await lab.startServers();
  });

  after(async () => {
    await lab?.destroy();
  });

  it('names namespaces rd-<run>-<role>', () => {
    assert.match(L().runId, /^[0-9a-f]{4}$/);
    assert.equal(L().ns('node-1'), `rd-${L().runId}-node-1`);
    assert.throws(() => L().ns('nope'), (e: unknown) => e instanceof LabError && e.code === 'EROLE');
  });

  it('node-1 reaches a pod on node-1, which sees the node IP as client', async () => {
    const r = reply(await L().curl('node-1', 'http://10.244.1.10:8080/'));
    assert.equal(r.pod, 'pod-1a');
    assert.equal(r.client, '198.18.0.2');
    assert.equal(r.port, 8080);
  });

  it('pod servers listen on every configured port', async () => {
    const r = reply(await L().curl('node-1', 'http://10.244.1.11:8081/'));
    assert.equal(r.pod, 'pod-1b');
    assert.equal(r.port, 8081);
  });

  it('node-1 reaches a pod on node-2 (routes between nodes)', async () => {
    const r = reply(await L().curl('node-1', 'http://10.244.2.10:8080/'));
    assert.equal(r.pod, 'pod-2a');
    assert.equal(r.client, '198.18.0.2');
  });

  it('pods reach pods across nodes, without NAT', async () => {
    const r = reply(await L().curl('pod-1a', 'http://10.244.2.11:8080/'));
    assert.equal(r.pod, 'pod-2b');
    assert.equal(r.client, '10.244.1.10');
  });

  it('the client reaches both node IPs', async () => {
    for (const ip of ['198.18.0.2', '198.18.0.3']) {
      const p = await L().ping('client', ip);
      assert.ok(p.reachable, `client -> ${ip}: ${p.message}`);
    }
  });

  it('UDP echo round-trips and reports the client address', async () => {
    const r = reply(await L().udp('pod-2a', '10.244.1.10', 5300, 'hello'));
    assert.equal(r.pod, 'pod-1a');
    assert.equal(r.client, '10.244.2.10');
    assert.equal(r.payload, 'hello');
  });

  it('classifies failures: refused, unreachable', async () => {
    const refused = await L().curl('node-1', 'http://10.244.1.10:9999/');
    assert.equal(refused.ok ? 'ok' : refused.kind, 'refused');
    // The client has no route to pod IPs: only lab ranges it is told about, and never a default.
    const noRoute = await L().curl('client', 'http://10.244.1.10:8080/');
    assert.equal(noRoute.ok ? 'ok' : noRoute.kind, 'unreachable');
    const udpRefused = await L().udp('node-2', '10.244.2.10', 5399, 'x');
    assert.equal(udpRefused.ok ? 'ok' : udpRefused.kind, 'refused');
  });

  it('no namespace has a default route, and every one exists', async () => {
    const roles = L().roles();
    assert.deepEqual((await L().listNamespaces()).sort(), roles.map((r) => r.ns).sort());
    for (const r of roles) {
      for (const family of ['-4', '-6']) {
        const res = await exec(['ip', family, '-n', r.ns, 'route', 'show', 'default']);
        assert.equal(res.code, 0, res.stderr);
        assert.equal(res.stdout.trim(), '', `${r.ns} has an ${family} default route`);
      }
    }
  });

  it('refuses routes outside the lab ranges', async () => {
    await assert.rejects(L().setRoute('client', '0.0.0.0/0', '198.18.0.2'), (e: unknown) => e instanceof LabError && e.code === 'EUNSAFE');
    await assert.rejects(L().setRoute('client', '8.8.8.0/24', '198.18.0.2'), (e: unknown) => e instanceof LabError && e.code === 'EUNSAFE');
  });

  it('destroy removes every namespace and cgroup and is idempotent', async () => {
    const l = L();
    const cgroups = l.roles().flatMap((r) => (r.cgroup === undefined ? [] : [r.cgroup]));
    await l.destroy();
    assert.deepEqual(await listLabNamespaces(l.runId), []);
    for (const cg of cgroups) assert.equal(existsSync(cg), false, `${cg} is gone`);
    await l.destroy();
    l.destroySync();
  });
});

describe('lab: failures', { skip }, () => {
  it('rejects a malformed topology before creating anything', async () => {
    const t: Topology = defaultTopology();
    t.pods[0]!.ip = '10.244.1.300';
    const runId = newRunId();
    await assert.rejects(Lab.create(t, { logger: memoryLogger(), runId }), (e: unknown) => e instanceof LabError && e.code === 'ETOPOLOGY' && /pod pod-1a ip/.test(e.message));
    assert.deepEqual(await listLabNamespaces(runId), []);
  });

  it('rejects a topology whose pod IP lies outside its node pod CIDR', async () => {
    const t = defaultTopology();
    t.pods[2]!.ip = '10.244.1.50';
    await assert.rejects(Lab.create(t, { logger: memoryLogger() }), (e: unknown) => e instanceof LabError && e.code === 'ETOPOLOGY');
  });

  it('removes what it created when creation fails half-way', async () => {
    const t = defaultTopology();
    // Valid on paper, refused by the kernel at the very last step: the gateway is not on-link.
    t.routes.push({ ns: 'client', dst: '198.18.1.128/25', via: '10.244.9.9' });
    const runId = newRunId();
    const log = memoryLogger();
    let err: unknown;
    try {
      const lab = await Lab.create(t, { logger: log, runId });
      await lab.destroy();
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof LabError, `expected a LabError, got ${String(err)}`);
    assert.equal(err.code, 'ECREATE');
    assert.deepEqual(await listLabNamespaces(runId), []);
    assert.ok(log.lines.some((l) => l.includes('lab creation failed')));
  });

  it('refuses a run id that is in use', async () => {
    const lab = await Lab.create({ ...defaultTopology(), pods: [], routes: [] }, { logger: memoryLogger() });
    try {
      await assert.rejects(Lab.create(defaultTopology(), { logger: memoryLogger(), runId: lab.runId }), (e: unknown) => e instanceof LabError && e.code === 'ECREATE');
      assert.equal((await lab.listNamespaces()).length, 4);
    } finally {
      await lab.destroy();
    }
    assert.deepEqual(await listLabNamespaces(lab.runId), []);
  });
});
