// The eBPF data plane against the real kernel: programs loaded through libbpf, attached to a
// scratch lab cgroup (never the machine's own), real connect()/sendto() calls from a process in
// that cgroup inside a scratch namespace whose only addresses are on lo. Root only.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { EbpfDataPlane } from '../../src/dataplane/ebpf/index.js';
import { objGet, closeFd, bpfMap } from '../../src/dataplane/ebpf/libbpf.js';
import { SvcKeyCodec, SCOPE_INT, IPPROTO } from '../../src/dataplane/ebpf/codecs.js';
import { build } from '../../src/model/build.js';
import { diff } from '../../src/model/diff.js';
import type { ServiceTable } from '../../src/model/types.js';
import type { ProxyObject } from '../../src/source/objects.js';
import { memoryLogger } from '../../src/observe/log.js';
import { config, decodeOk, rawService, service, slice, snapshotOf } from '../support/fixtures.js';
import { LB_ALGORITHM_ANNOTATION } from '../../src/source/decode.js';
import { createEbpfScratch, tcpClients, tcpServer, udpRequest, udpServer, type EbpfScratch } from '../support/ebpf-scratch.js';

const isRoot = process.getuid?.() === 0;
const CFG = config({ nodeIPs: ['198.18.0.2'] });
const A = '10.244.1.10';
const B = '10.244.1.11';
const A6 = 'fd00:244::10';

function tableFrom(objects: ProxyObject[]): ServiceTable {
  return build(snapshotOf(objects), CFG);
}

const web = (eps: string[], extra: Record<string, unknown> = {}) => [
  service('web', { type: 'NodePort', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080, protocol: 'TCP' }], spec: extra }),
  slice('web-1', 'web', eps.map((ip) => ({ ip, node: 'node-1' }))),
];
const dns = (eps: string[]) => [
  service('dns', { clusterIP: '10.96.0.53', ports: [{ name: 'dns', port: 53, targetPort: 5300, protocol: 'UDP' }] }),
  slice('dns-1', 'dns', eps.map((ip) => ({ ip, node: 'node-1' })), { ports: [{ name: 'dns', port: 5300, protocol: 'UDP' }] }),
];
const empty = () => [service('empty', { clusterIP: '10.96.0.11' })];
const web6 = () => [
  service('web6', { clusterIP: 'fd00:96::10', spec: { ipFamilies: ['IPv6'], clusterIPs: ['fd00:96::10'] } }),
  slice('web6-1', 'web6', [{ ip: A6, node: 'node-1' }], { addressType: 'IPv6' }),
];

type Reply = { data?: string; peer?: string; error?: string; ms?: number };

async function connect(s: EbpfScratch, host: string, port: number, count = 1): Promise<Reply[]> {
  const r = await s.node(tcpClients(host, port, count), 30_000);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.trim()) as Reply[];
}

describe('ebpf data plane (real kernel, scratch cgroup)', { skip: !isRoot && 'needs root' }, () => {
  let s: EbpfScratch;
  let dp: EbpfDataPlane;
  let table: ServiceTable = new Map();
  let cfg = CFG;

  const program = async (next: ServiceTable, plane = dp) => {
    const r = await plane.apply(diff(table, next), next, { full: false });
    table = next;
    return r;
  };

  before(async () => {
    s = await createEbpfScratch([A, B, '198.18.0.2', '198.18.0.9', A6]);
    await s.serve(tcpServer(A, 8080, 'pod-a'));
    await s.serve(tcpServer(B, 8080, 'pod-b'));
    await s.serve(tcpServer(A6, 8080, 'pod-a6'));
    await s.serve(udpServer(A, 5300, 'pod-a'));
    await s.serve(udpServer(B, 5300, 'pod-b'));
    dp = new EbpfDataPlane({ config: () => cfg, logger: memoryLogger(), cgroupPath: s.cgroup, pinPath: s.pinPath, reconcileIntervalMs: 3_600_000 });
    await dp.init();
    const first = tableFrom([...web([A]), ...empty(), ...dns([A]), ...web6()]);
    await dp.apply(diff(new Map(), first), first, { full: true });
    table = first;
  });

  after(async () => {
    await dp?.cleanup();
    await s?.remove();
  });

  test('a ClusterIP connection reaches the backend, and getpeername() shows the service address', async () => {
    const [r] = await connect(s, '10.96.0.10', 80);
    assert.deepEqual(r, { data: 'pod-a', peer: '10.96.0.10:80' });
  });

  test('a NodePort on the node address is translated; 127.0.0.1 is not, outside the host namespace', async () => {
    const [np] = await connect(s, '198.18.0.2', 30080);
    assert.deepEqual(np, { data: 'pod-a', peer: '198.18.0.2:30080' });
    // The scratch namespace is not the agent's (host) namespace: its loopback is its own.
    const [lo] = await connect(s, '127.0.0.1', 30080);
    assert.equal(lo!.error, 'ECONNREFUSED');
  });

  test('a service without endpoints refuses connect() at once with ECONNREFUSED', async () => {
    const [r] = await connect(s, '10.96.0.11', 80);
    assert.equal(r!.error, 'ECONNREFUSED');
    assert.ok(r!.ms! < 100, `refused in ${r!.ms} ms, not timed out`);
  });

  test('a ClusterIP on a port no service uses is refused; its service port is not', async () => {
    const [r] = await connect(s, '10.96.0.10', 81);
    assert.equal(r!.error, 'ECONNREFUSED');
    assert.ok(r!.ms! < 100, `refused in ${r!.ms} ms`);
  });

  test('unconnected UDP: sendto() is translated and recvfrom() shows the service address', async () => {
    const r = await s.node(udpRequest('10.96.0.53', 53, 'ping'));
    assert.deepEqual(JSON.parse(r.stdout.trim()), { reply: 'pod-a:ping', from: '10.96.0.53:53' });
  });

  test('an endpoint change moves new connections to the new backend; both backends serve when both are listed', async () => {
    await program(tableFrom([...web([B]), ...empty(), ...dns([A]), ...web6()]));
    const rs = await connect(s, '10.96.0.10', 80, 5);
    assert.deepEqual(new Set(rs.map((r) => r.data)), new Set(['pod-b']));
    await program(tableFrom([...web([A, B]), ...empty(), ...dns([A]), ...web6()]));
    const both = await connect(s, '10.96.0.10', 80, 60);
    assert.deepEqual(new Set(both.map((r) => r.data)), new Set(['pod-a', 'pod-b']));
  });

  test('an unconnected UDP socket keeps one backend for all its datagrams; different sockets spread', async () => {
    await program(tableFrom([...web([A]), ...empty(), ...dns([A, B]), ...web6()]));
    const r = await s.node(`
      const dgram = require('dgram'); const per = [];
      const oneSocket = () => new Promise((res) => { const sk = dgram.createSocket('udp4'); const got = new Set(); let n = 0;
        sk.on('message', (m) => { got.add(String(m).split(':')[0]); if (++n === 5) { sk.close(); res([...got]); } });
        for (let i = 0; i < 5; i++) sk.send('x', 53, '10.96.0.53');
        setTimeout(() => { try { sk.close(); } catch {} res([...got, 'TIMEOUT']); }, 2000); });
      (async () => { for (let i = 0; i < 20; i++) per.push(await oneSocket()); console.log(JSON.stringify(per)); })();`, 30_000);
    const per = JSON.parse(r.stdout.trim()) as string[][];
    for (const got of per) assert.equal(got.length, 1, `one socket, one backend: ${JSON.stringify(per)}`);
    assert.deepEqual(new Set(per.flat()), new Set(['pod-a', 'pod-b']), 'sockets spread over both backends');
  });

  test('ClientIP affinity sticks every connection of a client to one backend', async () => {
    await program(tableFrom([...web([A, B], { sessionAffinity: 'ClientIP' }), ...empty(), ...dns([A]), ...web6()]));
    const rs = await connect(s, '10.96.0.10', 80, 30);
    assert.equal(new Set(rs.map((r) => r.data)).size, 1, JSON.stringify(rs));
  });

  test('Maglev (annotation) spreads connections over the backends from the Maglev table', async () => {
    const raw = rawService('web', { type: 'NodePort', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080, protocol: 'TCP' }] });
    (raw['metadata'] as Record<string, unknown>)['annotations'] = { [LB_ALGORITHM_ANNOTATION]: 'maglev' };
    const objs = [decodeOk(raw), slice('web-1', 'web', [{ ip: A, node: 'node-1' }, { ip: B, node: 'node-1' }])];
    await program(tableFrom([...objs, ...empty(), ...dns([A]), ...web6()]));
    const fe = (await dp.programmed()).find((f) => f.address === '10.96.0.10:80');
    assert.ok(fe?.flags?.includes('maglev'), JSON.stringify(fe));
    const rs = await connect(s, '10.96.0.10', 80, 60);
    assert.deepEqual(new Set(rs.map((r) => r.data)), new Set(['pod-a', 'pod-b']));
  });

  test('read-back lists every frontend with its backends and no drift', async () => {
    await program(tableFrom([...web([A]), ...empty(), ...dns([A]), ...web6()]));
    const fes = await dp.programmed();
    const by = new Map(fes.map((f) => [`${f.protocol} ${f.address}`, f]));
    assert.deepEqual(by.get('TCP 10.96.0.10:80')?.backends, [`${A}:8080`]);
    assert.deepEqual(by.get('TCP 198.18.0.2:30080')?.backends, [`${A}:8080`]);
    assert.deepEqual(by.get('TCP 127.0.0.1:30080')?.flags, ['nodeport', 'loopback']);
    assert.deepEqual(by.get('TCP 10.96.0.11:80')?.flags, ['reject']);
    assert.deepEqual(by.get('UDP 10.96.0.53:53')?.backends, [`${A}:5300`]);
    assert.equal(by.get('TCP 10.96.0.10:80')?.service, 'default/web:http/TCP');
    assert.deepEqual(fes.filter((f) => f.drift !== undefined), []);
  });

  test('IPv6: connect6 to an IPv6 ClusterIP reaches its backend, and getpeername() shows the service', async () => {
    const [r] = await connect(s, 'fd00:96::10', 80);
    assert.deepEqual(r, { data: 'pod-a6', peer: 'fd00:96::10:80' });
  });

  test('--socket-lb-host-namespace-only leaves pods\' sockets alone; turning it off serves them again', async () => {
    const hostOnly = new EbpfDataPlane({ config: () => cfg, logger: memoryLogger(), cgroupPath: s.cgroup, pinPath: s.pinPath, hostNamespaceOnly: true });
    await hostOnly.init();
    await hostOnly.apply(diff(new Map(), table), table, { full: true });
    const [pod] = await connect(s, '10.96.0.10', 80);
    assert.equal(pod!.data, undefined, `a pod's connection is not translated: ${JSON.stringify(pod)}`);
    const again = new EbpfDataPlane({ config: () => cfg, logger: memoryLogger(), cgroupPath: s.cgroup, pinPath: s.pinPath, reconcileIntervalMs: 3_600_000 });
    await again.init();
    await again.apply(diff(new Map(), table), table, { full: true });
    const [served] = await connect(s, '10.96.0.10', 80);
    assert.equal(served!.data, 'pod-a');
    dp = again;
  });

  test('a new local address gets the NodePorts without a rewrite of anything else', async () => {
    cfg = config({ nodeIPs: ['198.18.0.2'], localAddresses: ['198.18.0.2', '198.18.0.9'] });
    const r = await dp.apply([], table, { full: false, addressesChanged: true });
    // One NodePort frontend (master, one slot) plus its rev-NAT entry.
    assert.equal(r.written, 3);
    const [np] = await connect(s, '198.18.0.9', 30080);
    assert.deepEqual(np, { data: 'pod-a', peer: '198.18.0.9:30080' });
    cfg = CFG;
    await dp.apply([], table, { full: false, addressesChanged: true });
    const [gone] = await connect(s, '198.18.0.9', 30080);
    assert.equal(gone!.error, 'ECONNREFUSED', 'the NodePort left with the address');
  });

  test('a restarted data plane adopts the pinned maps: nothing rewritten, nothing detached, traffic flows', async () => {
    const again = new EbpfDataPlane({ config: CFG, logger: memoryLogger(), cgroupPath: s.cgroup, pinPath: s.pinPath });
    await again.init();
    const r = await again.apply(diff(new Map(), table), table, { full: true });
    assert.equal(r.written, 0, 'an unchanged table writes nothing');
    const [c] = await connect(s, '10.96.0.10', 80);
    assert.equal(c!.data, 'pod-a');
    dp = again;
  });

  test('a master entry deleted behind the agent\'s back is restored by the next reconcile and marked as drift before', async () => {
    const fd = objGet(join(s.pinPath, 'rd_services'));
    try {
      const key = Buffer.alloc(SvcKeyCodec.size);
      SvcKeyCodec.encode({ addr: '10.96.0.10', port: 80, slot: 0, proto: IPPROTO.TCP, scope: SCOPE_INT }, key);
      assert.ok(bpfMap.delete(fd, key, 'rd_services'));
    } finally {
      closeFd(fd);
    }
    const [broken] = await connect(s, '10.96.0.10', 80);
    assert.notEqual(broken!.data, 'pod-a', 'the deletion took effect');
    const fixer = new EbpfDataPlane({ config: CFG, logger: memoryLogger(), cgroupPath: s.cgroup, pinPath: s.pinPath, reconcileIntervalMs: 0 });
    await fixer.init();
    const r = await fixer.apply([], table, { full: false });
    assert.ok(r.written > 0);
    const [fixed] = await connect(s, '10.96.0.10', 80);
    assert.equal(fixed!.data, 'pod-a');
    dp = fixer;
  });

  test('a connected UDP socket to a removed backend is closed, and the client reconnects to a live one', async () => {
    // The client connects once, sends every 100 ms, and on an error reconnects through the service.
    const client = await s.serve(`
      const dgram = require('dgram'); let sock; let replies = [];
      const open = () => { sock = dgram.createSocket('udp4'); sock.on('message', (m) => { replies.push(String(m)); console.log(String(m)); });
        sock.on('error', (e) => { console.log('error ' + e.code); try { sock.close(); } catch {} ; setTimeout(open, 50); });
        sock.connect(53, '10.96.0.53', () => console.log('connected')); };
      open(); setInterval(() => { try { sock.send('x'); } catch (e) { console.log('send ' + e.code); } }, 100);`);
    const lines: string[] = [];
    client.stdout!.on('data', (d: Buffer) => lines.push(...String(d).split('\n').filter(Boolean)));
    const waitFor = async (pred: () => boolean, ms: number): Promise<boolean> => {
      for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) if (pred()) return true;
      return pred();
    };
    assert.ok(await waitFor(() => lines.includes('pod-a:x'), 3000), lines.join('|'));
    await program(tableFrom([...web([A]), ...empty(), ...dns([B]), ...web6()]));
    assert.ok(await waitFor(() => lines.includes('pod-b:x'), 3000), `the client never reached pod-b: ${lines.slice(-10).join('|')}`);
    assert.ok(lines.some((l) => l.startsWith('error')), 'the old socket was closed under the client');
    client.kill('SIGKILL');
  });

  test('cleanup detaches every hook and removes the pins', async () => {
    await dp.cleanup();
    assert.equal(existsSync(s.pinPath), false);
    const [r] = await connect(s, '10.96.0.10', 80);
    assert.notEqual(r!.data, 'pod-a', 'no longer translated');
  });
});
