// The eBPF plane's map programming on in-memory maps (the same MapIO libbpf sits behind): write
// order, stable ids across restarts, contested frontends, drift repair, failed writes, what one
// change costs, the host-namespace scope. The same code against the kernel is in
// test/integration/ebpf-dataplane.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EbpfDataPlane } from '../../src/dataplane/ebpf/index.js';
import { BackendCodec, BE_F, SCOPE_HOST, SCOPE_INT, SVC_F, SvcKeyCodec, SvcValCodec, type SvcKey } from '../../src/dataplane/ebpf/codecs.js';
import { DataPlaneError } from '../../src/dataplane/dataplane.js';
import { build } from '../../src/model/build.js';
import { diff } from '../../src/model/diff.js';
import type { ProxyConfig, ServiceTable } from '../../src/model/types.js';
import type { ProxyObject } from '../../src/source/objects.js';
import { LB_ALGORITHM_ANNOTATION } from '../../src/source/decode.js';
import { memoryLogger } from '../../src/observe/log.js';
import { config, decodeOk, rawService, service, slice, snapshotOf } from '../support/fixtures.js';
import { FakeMaps } from '../support/bpf-maps.js';

const CFG = config();

function plane(maps: FakeMaps, cfg: ProxyConfig = CFG, reconcileIntervalMs = 3_600_000): EbpfDataPlane {
  return new EbpfDataPlane({ config: cfg, logger: memoryLogger(), maps: { fds: maps.fds, io: maps }, reconcileIntervalMs, sizes: { maglevTableSize: 251 } });
}

const tableOf = (objs: ProxyObject[], cfg: ProxyConfig = CFG): ServiceTable => build(snapshotOf(objs), cfg);
const web = (ips: string[]) => [service('web', { clusterIP: '10.96.0.10' }), slice('web-1', 'web', ips.map((ip) => ({ ip, node: 'node-1' })))];
const master = (addr: string, port: number, scope = SCOPE_INT): SvcKey => ({ addr, port, slot: 0, proto: 6, scope });
const keyHex = (k: SvcKey): string => {
  const b = Buffer.alloc(SvcKeyCodec.size);
  SvcKeyCodec.encode(k, b);
  return b.toString('hex');
};

async function sync(dp: EbpfDataPlane, prev: ServiceTable, next: ServiceTable, full = false) {
  return dp.apply(diff(prev, next), next, { full });
}

test('a frontend\'s backends and slots are written before its master; on removal the master goes first and its backends last', async () => {
  const maps = new FakeMaps();
  const dp = plane(maps);
  const t1 = tableOf(web(['10.244.1.10', '10.244.1.11']));
  await sync(dp, new Map(), t1, true);
  const m = keyHex(master('10.96.0.10', 80));
  const at = (pred: (i: number) => boolean) => maps.log.findIndex((_, i) => pred(i));
  const masterAt = at((i) => maps.log[i]!.op === 'update' && maps.log[i]!.key.toString('hex') === m);
  const lastSlot = Math.max(...maps.log.map((o, i) => (o.map === 'rd_services' && o.op === 'update' && SvcKeyCodec.decode(o.key).slot > 0 ? i : -1)));
  const lastBackend = Math.max(...maps.log.map((o, i) => (o.map === 'rd_backends' && o.op === 'update' ? i : -1)));
  assert.ok(lastBackend < lastSlot && lastSlot < masterAt, `backends ${lastBackend} < slots ${lastSlot} < master ${masterAt}`);

  maps.log.length = 0;
  await sync(dp, t1, new Map());
  const del = maps.log.filter((o) => o.op === 'delete');
  const firstSlotDel = del.findIndex((o) => o.map === 'rd_services' && SvcKeyCodec.decode(o.key).slot > 0);
  const masterDel = del.findIndex((o) => o.key.toString('hex') === m);
  const firstBackendDel = del.findIndex((o) => o.map === 'rd_backends');
  assert.ok(masterDel >= 0 && masterDel < firstSlotDel && firstSlotDel < firstBackendDel, `master ${masterDel} < slots ${firstSlotDel} < backends ${firstBackendDel}`);
  assert.equal(maps.size('rd_services'), 0);
  assert.equal(maps.size('rd_backends'), 0);
});

test('ids survive a restart: a new plane adopts the maps, writes nothing for an unchanged table, keeps every id', async () => {
  const maps = new FakeMaps();
  const objs = [...web(['10.244.1.10', '10.244.1.11']), service('api', { clusterIP: '10.96.0.11' }), slice('api-1', 'api', [{ ip: '10.244.1.12' }])];
  const t = tableOf(objs);
  await sync(plane(maps), new Map(), t, true);
  const before = new Map(maps.services().map(([k, v]) => [`${k.addr}:${k.port}/${k.slot}`, v]));
  const r = await sync(plane(maps), new Map(), t, true);
  assert.equal(r.written, 0);
  assert.deepEqual(new Map(maps.services().map(([k, v]) => [`${k.addr}:${k.port}/${k.slot}`, v])), before);
});

test('one endpoint change writes only its frontend\'s entries, whatever the number of services', async () => {
  for (const n of [10, 1000]) {
    const maps = new FakeMaps();
    const dp = plane(maps);
    const objs: ProxyObject[] = [];
    for (let i = 0; i < n; i++) objs.push(service(`s${i}`, { clusterIP: `10.96.${i >> 8}.${i & 255}` }), slice(`s${i}-1`, `s${i}`, [{ ip: `10.244.${i >> 8}.${i & 255}` }]));
    const t1 = tableOf(objs);
    await sync(dp, new Map(), t1, true);
    const objs2 = [...objs.slice(0, -1), slice(`s${n - 1}-1`, `s${n - 1}`, [{ ip: `10.244.${(n - 1) >> 8}.${(n - 1) & 255}` }, { ip: '10.245.0.1' }])];
    maps.log.length = 0;
    const r = await sync(dp, t1, tableOf(objs2));
    // One new backend, one new slot (it sorts last), the master with its new count.
    assert.equal(r.written, 3, `${n} services: ${JSON.stringify(maps.log.map((o) => [o.op, o.map, o.key.toString("hex")]))}`);
    assert.equal(maps.log.length, 3);
  }
});

test('two services claiming one address and port: the external IP outranks the LB IP, and the LB IP takes over when it leaves', async () => {
  const maps = new FakeMaps();
  const dp = plane(maps);
  const ext = [service('ext', { clusterIP: '10.96.0.20', spec: { externalIPs: ['198.18.1.5'] } }), slice('ext-1', 'ext', [{ ip: '10.244.1.20' }])];
  const lb = [service('lb', { type: 'LoadBalancer', clusterIP: '10.96.0.21', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30090, protocol: 'TCP' }], spec: { loadBalancerSourceRanges: ['198.18.0.0/24'] }, status: { loadBalancer: { ingress: [{ ip: '198.18.1.5' }] } } }), slice('lb-1', 'lb', [{ ip: '10.244.1.21' }])];
  const both = tableOf([...ext, ...lb]);
  await sync(dp, new Map(), both, true);
  const vip = () => maps.services().find(([k]) => k.addr === '198.18.1.5' && k.slot === 0)?.[1];
  assert.equal(vip()!.flags & SVC_F.SRC_RANGE, 0, 'the external IP wins: no firewall');
  const lbOnly = tableOf(lb);
  await sync(dp, both, lbOnly);
  assert.notEqual(vip()!.flags & SVC_F.SRC_RANGE, 0, 'the LB IP took the frontend over');
  const slot1 = maps.services().find(([k]) => k.addr === '198.18.1.5' && k.slot === 1)![1];
  assert.equal(maps.backends().get(slot1.backendId)!.addr, '10.244.1.21');
});

test('an entry deleted behind the plane\'s back shows as drift and is restored by the next reconcile', async () => {
  const maps = new FakeMaps();
  const t = tableOf(web(['10.244.1.10', '10.244.1.11']));
  await sync(plane(maps), new Map(), t, true);
  assert.ok(maps.drop({ ...master('10.96.0.10', 80), slot: 2 }));
  const dp = plane(maps, CFG, 0);
  await dp.init();
  const fes = await dp.programmed();
  // A plane that has not reconciled yet has no table: everything is "not in the table".
  assert.ok(fes.every((f) => f.drift !== undefined));
  const r = await dp.apply([], t, { full: false });
  assert.ok(r.written > 0);
  assert.deepEqual((await dp.programmed()).filter((f) => f.drift !== undefined), []);
  assert.equal(maps.services().filter(([k]) => k.addr === '10.96.0.10' && k.slot > 0).length, 2);
});

test('a failed write throws DataPlaneError; the next sync re-reads the maps and converges', async () => {
  const maps = new FakeMaps();
  const dp = plane(maps);
  const t1 = tableOf(web(['10.244.1.10']));
  await sync(dp, new Map(), t1, true);
  const t2 = tableOf(web(['10.244.1.10', '10.244.1.11', '10.244.1.12']));
  maps.failAfter = 3;
  await assert.rejects(sync(dp, t1, t2), DataPlaneError);
  await dp.apply([], t2, { full: false });
  const fresh = new FakeMaps();
  await sync(plane(fresh), new Map(), t2, true);
  const view = (m: FakeMaps) => m.services().map(([k, v]) => [k.addr, k.port, k.slot, v.count, m.backends().get(v.backendId)?.addr ?? '']).map(String).sort();
  assert.deepEqual(view(maps), view(fresh));
});

test('the host-namespace scope is written only where the node gets another path than its pods', async () => {
  const objs = [service('local', { type: 'NodePort', clusterIP: '10.96.0.30', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30100, protocol: 'TCP' }], spec: { externalTrafficPolicy: 'Local' } }),
    slice('local-1', 'local', [{ ip: '10.244.2.10', node: 'node-2' }])];
  const withCIDR = new FakeMaps();
  await sync(plane(withCIDR), new Map(), tableOf(objs), true);
  assert.deepEqual(withCIDR.services().filter(([k]) => k.scope === SCOPE_HOST), []);
  // Without a cluster CIDR pods cannot be told apart: they get the outside path (no local
  // endpoint: not served) while the node gets the cluster-wide one.
  const cfg = config({ clusterCIDRs: [] });
  const noCIDR = new FakeMaps();
  await sync(plane(noCIDR, cfg), new Map(), tableOf(objs, cfg), true);
  const np = (scope: number) => noCIDR.services().find(([k]) => k.addr === '198.18.0.2' && k.port === 30100 && k.slot === 0 && k.scope === scope)?.[1];
  assert.notEqual(np(SCOPE_INT)!.flags & SVC_F.DROP, 0);
  assert.equal(np(SCOPE_HOST)!.count, 1);
});

test('a Maglev service gets its table, and loses it when it goes back to random', async () => {
  const maps = new FakeMaps();
  const dp = plane(maps);
  const raw = rawService('web', { clusterIP: '10.96.0.10' });
  (raw['metadata'] as Record<string, unknown>)['annotations'] = { [LB_ALGORITHM_ANNOTATION]: 'maglev' };
  const eps = slice('web-1', 'web', [{ ip: '10.244.1.10' }, { ip: '10.244.1.11' }]);
  const t1 = tableOf([decodeOk(raw), eps]);
  await sync(dp, new Map(), t1, true);
  assert.equal(maps.size('rd_maglev'), 1);
  const t2 = tableOf([service('web', { clusterIP: '10.96.0.10' }), eps]);
  await sync(dp, t1, t2);
  assert.equal(maps.size('rd_maglev'), 0);
});

/** Every master's slots exist and every slot names a backend the maps hold. */
function assertConsistent(maps: FakeMaps): void {
  const entries = maps.services();
  const backends = maps.backends();
  const has = new Set(entries.map(([k]) => `${k.addr}|${k.port}|${k.proto}|${k.scope}|${k.slot}`));
  for (const [k, v] of entries) {
    if (k.slot === 0) for (let i = 1; i <= v.count; i++) assert.ok(has.has(`${k.addr}|${k.port}|${k.proto}|${k.scope}|${i}`), `${k.addr}:${k.port} slot ${i} of ${v.count}`);
    else assert.ok(backends.has(v.backendId), `${k.addr}:${k.port} slot ${k.slot} names backend ${v.backendId}, which the maps do not hold`);
  }
}

test('an id freed in a sync is not reused in the same sync (its deletion would undo the new entry)', async () => {
  const maps = new FakeMaps();
  const dp = plane(maps);
  const a = (ips: string[]) => [service('a', { clusterIP: '10.96.0.1' }), slice('a-1', 'a', ips.map((ip) => ({ ip })))];
  const b = (ips: string[]) => [service('b', { clusterIP: '10.96.0.2' }), slice('b-1', 'b', ips.map((ip) => ({ ip })))];
  const t1 = tableOf([...a(['10.244.1.1', '10.244.1.2']), ...b(['10.244.1.3'])]);
  await sync(dp, new Map(), t1, true);
  // a loses a backend (its id is freed) while b gains a new one, in one sync.
  const t2 = tableOf([...a(['10.244.1.1']), ...b(['10.244.1.3', '10.244.1.4'])]);
  await sync(dp, t1, t2);
  assertConsistent(maps);
  // and a removed service's frontend id is not taken by a new one in the same sync
  const t3 = tableOf([...b(['10.244.1.3', '10.244.1.4']), service('c', { clusterIP: '10.96.0.3' }), slice('c-1', 'c', [{ ip: '10.244.1.5' }])]);
  await sync(dp, t2, t3);
  assertConsistent(maps);
  const revNat = maps.size('rd_rev_nat');
  assert.equal(revNat, 2, 'b and c each keep a reverse-NAT entry');
});

test('the periodic check after a partial sync finds drift against what was written and repairs only then', async () => {
  const maps = new FakeMaps();
  let now = 0;
  const dp = new EbpfDataPlane({ config: CFG, logger: memoryLogger(), maps: { fds: maps.fds, io: maps }, reconcileIntervalMs: 30_000, now: () => now });
  const t = tableOf(web(['10.244.1.10', '10.244.1.11']));
  await sync(dp, new Map(), t, true);
  now = 31_000;
  assert.equal((await dp.apply([], t, { full: false })).written, 0, 'nothing differs: nothing written');
  assert.equal(dp.driftRepairs, 0);
  assert.ok(maps.drop(master('10.96.0.10', 80)));
  now = 45_000;
  assert.equal((await dp.apply([], t, { full: false })).written, 0, 'not due yet');
  now = 62_000;
  const r = await dp.apply([], t, { full: false });
  assert.equal(dp.driftRepairs, 1);
  assert.ok(r.written > 0);
  assertConsistent(maps);
  assert.ok(maps.services().some(([k]) => k.addr === '10.96.0.10' && k.slot === 0), 'the master is back');
});

test('a full sync of a plane that knows the maps writes what changed and converges like a fresh one', async () => {
  const maps = new FakeMaps();
  const dp = plane(maps);
  const t1 = tableOf([...web(['10.244.1.10', '10.244.1.11']), service('api', { clusterIP: '10.96.0.11' }), slice('api-1', 'api', [{ ip: '10.244.1.12' }])]);
  await sync(dp, new Map(), t1, true);
  const t2 = tableOf([...web(['10.244.1.11', '10.244.1.13']), service('new', { clusterIP: '10.96.0.12' })]);
  await sync(dp, t1, t2, true);
  const fresh = new FakeMaps();
  await sync(plane(fresh), new Map(), t2, true);
  const view = (m: FakeMaps) => m.services().map(([k, v]) => [k.addr, k.port, k.proto, k.slot, v.count, v.flags, m.backends().get(v.backendId)?.addr ?? '']).map(String).sort();
  assert.deepEqual(view(maps), view(fresh));
  assertConsistent(maps);
  // An entry changed behind its back turns the same full sync into a repair.
  assert.ok(maps.drop(master('10.96.0.12', 80)));
  await sync(dp, t2, t2, true);
  assert.equal(dp.driftRepairs, 1);
  assert.deepEqual(view(maps), view(fresh));
});

for (const what of ['a master\'s unused backend field', 'a backend\'s flags'] as const) {
  test(`bytes the decoded picture does not show (${what}) are found by the digest and written again, once`, async () => {
    const maps = new FakeMaps();
    let now = 0;
    const dp = new EbpfDataPlane({ config: CFG, logger: memoryLogger(), maps: { fds: maps.fds, io: maps }, reconcileIntervalMs: 30_000, now: () => now });
    const t = tableOf(web(['10.244.1.10', '10.244.1.11']));
    await sync(dp, new Map(), t, true);
    const clean = { services: maps.raw('rd_services'), backends: maps.raw('rd_backends') };
    if (what === 'a master\'s unused backend field') {
      const mk = Buffer.alloc(SvcKeyCodec.size);
      SvcKeyCodec.encode(master('10.96.0.10', 80), mk);
      assert.ok(maps.poke('rd_services', mk, (v) => v.writeUInt32LE(7, SvcValCodec.offsets.backend_id)));
    } else {
      const [beKey] = clean.backends[0]!.split('=');
      assert.ok(maps.poke('rd_backends', Buffer.from(beKey!, 'hex'), (v) => { v[BackendCodec.offsets.flags]! |= 0x80; }));
    }
    assert.deepEqual((await dp.programmed()).filter((f) => f.drift !== undefined), [], 'the decoded comparison sees nothing');
    now = 31_000;
    const r = await dp.apply([], t, { full: false });
    assert.equal(dp.driftRepairs, 1);
    assert.ok(r.written > 0);
    assertConsistent(maps);
    assert.ok(maps.services().every(([k, v]) => k.slot > 0 || v.backendId === 0), 'every master\'s backend field is 0 again');
    assert.ok([...maps.backends().values()].every((b) => (b.flags & ~BE_F.LOCAL) === 0), 'no backend carries flags but LOCAL');
    assert.equal(maps.raw('rd_services').length, clean.services.length);
    assert.equal(maps.raw('rd_backends').length, clean.backends.length);
    now = 62_000;
    assert.equal((await dp.apply([], t, { full: false })).written, 0, 'the repair converged: the next check finds nothing');
    assert.equal(dp.driftRepairs, 1);
  });
}
