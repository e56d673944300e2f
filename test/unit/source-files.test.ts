import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, renameSync, symlinkSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeObject } from '../../src/source/decode.js';
import { FileSource, ManifestError, loadFile, loadManifests } from '../../src/source/files.js';
import type { SourceEvent } from '../../src/source/objects.js';
import { memoryLogger } from '../../src/observe/log.js';
import { rawService, rawSlice } from '../support/fixtures.js';

function invalidField(raw: unknown): string {
  const r = decodeObject(raw);
  assert.equal(r.status, 'invalid', JSON.stringify(r));
  return r.status === 'invalid' ? r.error.message : '';
}

test('invalid Services are rejected with the object and the field named', () => {
  assert.equal(invalidField(rawService('web', { ports: [{ name: 'a', port: 70000 }] })), 'Service default/web: spec.ports[0].port: 70000 is out of range 1-65535');
  assert.match(invalidField(rawService('web', { clusterIP: '10.96.0.300' })), /spec\.clusterIP: "10\.96\.0\.300" is not a valid IP address/);
  assert.match(invalidField(rawService('web', { ports: [{ name: 'a', port: 80, protocol: 'ICMP' }] })), /spec\.ports\[0\]\.protocol: unknown protocol "ICMP"/);
  assert.match(invalidField(rawService('web', { ports: [{ name: 'a', port: 80 }, { name: 'a', port: 81 }] })), /spec\.ports\[1\]\.name: duplicate port name "a"/);
  assert.match(invalidField(rawService('web', { spec: { externalIPs: ['1.2.3'] } })), /spec\.externalIPs\[0\]/);
  assert.match(invalidField(rawService('web', { spec: { loadBalancerSourceRanges: ['10.0.0.0/33'] } })), /spec\.loadBalancerSourceRanges\[0\]: "10\.0\.0\.0\/33" is not a valid CIDR/);
  assert.match(invalidField(rawService('web', { spec: { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 0 } } } })), /timeoutSeconds: 0 is out of range/);
});

test('slices without the service-name label, or with addresses of the wrong family, are rejected', () => {
  const s = rawSlice('x', 'web', [{ ip: '10.244.1.2' }]);
  (s['metadata'] as { labels: object }).labels = {};
  assert.match(invalidField(s), /EndpointSlice default\/x: metadata\.labels\[kubernetes\.io\/service-name\]: is required/);
  assert.match(invalidField(rawSlice('x', 'web', [{ ip: 'fd00::1' }])), /endpoints\[0\]\.addresses\[0\]: fd00::1 is not an IPv4 address/);
});

test('headless, ExternalName and unallocated services and FQDN slices are ignored, not errors', () => {
  const reasons = [
    rawService('a', { clusterIP: 'None' }),
    rawService('b', { type: 'ExternalName', spec: { externalName: 'example.invalid' } }),
    rawService('c', { clusterIP: '' }),
    rawSlice('d', 'x', [], { addressType: 'FQDN' }),
    { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'x' } },
  ].map((o) => decodeObject(o).status);
  assert.deepEqual(reasons, ['ignored', 'ignored', 'ignored', 'ignored', 'ignored']);
});

test('endpoint conditions default as kube-proxy reads them: nil ready and serving are true, nil terminating false', () => {
  const r = decodeObject({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 's', labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4', ports: [{ port: 80 }], endpoints: [{ addresses: ['10.244.1.2', '10.244.1.3'] }] });
  assert.equal(r.status, 'ok');
  if (r.status !== 'ok' || r.object.kind !== 'EndpointSlice') return;
  assert.deepEqual(r.object.endpoints[0], { address: '10.244.1.2', ready: true, serving: true, terminating: false, nodeName: '', zone: '', zoneHints: [], nodeHints: [] });
  assert.deepEqual(r.object.ports, [{ name: '', protocol: 'TCP', port: 80 }]);
});

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'rudder-test-'));
}

test('a manifest with a YAML error fails with the file and the document index', () => {
  const dir = tmp();
  try {
    const f = join(dir, 'bad.yaml');
    writeFileSync(f, 'apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n---\nkind: [\n');
    assert.throws(() => loadFile(f), (e: unknown) => e instanceof ManifestError && e.message.startsWith(`${f}: document 2: not valid YAML`));
    writeFileSync(f, '---\n- a\n- b\n');
    assert.throws(() => loadFile(f), /document 1: \(root\): must be a Kubernetes object/);
    writeFileSync(f, 'apiVersion: v1\nmetadata: {name: a}\n');
    assert.throws(() => loadFile(f), new RegExp(`${f}: document 1: kind: is required`));
    assert.throws(() => loadManifests([join(dir, 'missing.yaml')]), /missing\.yaml: cannot read: ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an invalid object is skipped with its document named while the rest of the file loads; Lists are expanded', () => {
  const dir = tmp();
  try {
    const f = join(dir, 'm.json');
    const list = { apiVersion: 'v1', kind: 'List', items: [rawService('a'), rawService('b', { ports: [{ port: 0 }] }), rawSlice('a-1', 'a', [{ ip: '10.244.1.2' }])] };
    writeFileSync(f, JSON.stringify(list));
    const l = loadManifests([dir]);
    assert.deepEqual(l.objects.map((o) => o.kind), ['Service', 'EndpointSlice']);
    assert.equal(l.invalid.length, 1);
    assert.equal(l.invalid[0]!.where, 'document 1, items[1]');
    assert.match(l.invalid[0]!.reason, /Service default\/b: spec\.ports\[0\]\.port: 0 is out of range/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('special addresses are refused as ClusterIPs and external IPs, and an address with spaces is not an address', () => {
  for (const [ip, what] of [['127.0.0.1', 'a loopback address'], ['0.0.0.0', 'an unspecified address'], ['255.255.255.255', 'the broadcast address'],
    ['224.0.0.251', 'a multicast address'], ['169.254.20.10', 'a link-local address'], ['::1', 'a loopback address'], ['ff02::1', 'a multicast address']] as const) {
    const v6 = ip.includes(':');
    const spec = v6 ? { ipFamilies: ['IPv6'], clusterIPs: [ip] } : {};
    assert.equal(invalidField(rawService('web', { clusterIP: ip, spec })), `Service default/web: spec.${v6 ? 'clusterIPs[0]' : 'clusterIP'}: ${ip} is ${what}, not usable as a service address`);
  }
  assert.match(invalidField(rawService('web', { spec: { externalIPs: ['198.18.0.9', '127.0.0.2'] } })), /spec\.externalIPs\[1\]: 127\.0\.0\.2 is a loopback address/);
  assert.match(invalidField(rawService('web', { clusterIP: ' 10.96.0.10' })), /spec\.clusterIP: " 10\.96\.0\.10" is not a valid IP address/);
  assert.equal(decodeObject(rawService('web', { clusterIP: '10.96.0.10', spec: { externalIPs: ['198.18.0.9'] } })).status, 'ok');
});

test('an object whose name cannot be read is skipped alone: the file\'s other objects load', () => {
  const dir = tmp();
  try {
    const f = join(dir, 'm.yaml');
    const bad = rawService('Not_A_Name', { clusterIP: '10.96.0.12' });
    const worse = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'x', namespace: 'default', labels: { a: 1 } }, spec: { clusterIP: '10.96.0.13', ports: [{ port: 80 }] } };
    writeFileSync(f, [rawService('a'), bad, worse, rawService('b', { clusterIP: '10.96.0.11' })].map((o) => JSON.stringify(o)).join('\n---\n'));
    const l = loadFile(f);
    assert.deepEqual(l.objects.map((o) => ('name' in o ? o.name : '')), ['a', 'b']);
    assert.deepEqual(l.invalid.map((i) => [i.where, i.key]), [['document 2', null], ['document 3', null]]);
    assert.match(l.invalid[0]!.reason, /metadata\.name: "Not_A_Name" is not a valid Service name/);
    assert.match(l.invalid[1]!.reason, /metadata\.labels/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('the file source emits upserts, deletes on edit, keeps objects through a broken save, and follows renames', async () => {
  const dir = tmp();
  const log = memoryLogger();
  const src = new FileSource({ paths: [dir], logger: log, debounceMs: 20 });
  const events: SourceEvent[] = [];
  const yaml = (o: unknown[]): string => o.map((x) => JSON.stringify(x)).join('\n---\n');
  try {
    writeFileSync(join(dir, 'a.yaml'), yaml([rawService('a'), rawSlice('a-1', 'a', [{ ip: '10.244.1.2' }])]));
    await src.start((e) => events.push(e));
    assert.deepEqual(events.map((e) => e.type), ['upsert', 'upsert', 'synced', 'synced', 'synced']);
    events.length = 0;

    writeFileSync(join(dir, 'a.yaml'), yaml([rawService('a')]));
    await until(() => events.length >= 1);
    assert.deepEqual(events, [{ type: 'delete', kind: 'EndpointSlice', key: 'EndpointSlice/default/a-1' }]);
    events.length = 0;

    writeFileSync(join(dir, 'a.yaml'), 'kind: [');
    await until(() => log.lines.some((l) => l.includes('manifest not reloaded')));
    assert.equal(events.length, 0, 'a broken save withdraws nothing');

    writeFileSync(join(dir, '.b.tmp'), yaml([rawService('a'), rawService('b', { clusterIP: '10.96.0.11' })]));
    renameSync(join(dir, '.b.tmp'), join(dir, 'a.yaml'));
    await until(() => events.some((e) => e.type === 'upsert'));
    await new Promise((r) => setTimeout(r, 60));
    assert.deepEqual(events.map((e) => (e.type === 'upsert' ? `${e.object.kind}/${'namespace' in e.object ? e.object.name : ''}` : e.type)), ['Service/b']);
  } finally {
    await src.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the file source keeps the last good version of an object an edit breaks, and says so; other kinds get a line each', async () => {
  const dir = tmp();
  const log = memoryLogger();
  const src = new FileSource({ paths: [dir], logger: log, debounceMs: 20 });
  const events: SourceEvent[] = [];
  const yaml = (o: unknown[]): string => o.map((x) => JSON.stringify(x)).join('\n---\n');
  const cm = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'cfg', namespace: 'default' } };
  try {
    writeFileSync(join(dir, 'a.yaml'), yaml([rawService('a'), rawService('b', { clusterIP: '10.96.0.11' }), cm]));
    await src.start((e) => events.push(e));
    assert.deepEqual(events.map((e) => e.type), ['upsert', 'upsert', 'synced', 'synced', 'synced']);
    assert.ok(log.lines.some((l) => l.includes('ignoring object') && l.includes('ConfigMap/default/cfg') && l.includes('document 3')), log.lines.join('\n'));
    events.length = 0;

    // b's port broken, a changed: a is updated, b keeps what it had.
    writeFileSync(join(dir, 'a.yaml'), yaml([rawService('a', { clusterIP: '10.96.0.20' }), rawService('b', { clusterIP: '10.96.0.11', ports: [{ port: 0 }] })]));
    await until(() => events.length >= 1);
    await new Promise((r) => setTimeout(r, 60));
    assert.deepEqual(events.map((e) => (e.type === 'upsert' && 'name' in e.object ? `upsert ${e.object.name}` : e.type)), ['upsert a']);
    assert.ok(log.lines.some((l) => l.includes('keeping its last good version') && l.includes('Service/default/b') && l.includes('spec.ports[0].port')), log.lines.join('\n'));
    events.length = 0;

    // Dropping b from the file withdraws it.
    writeFileSync(join(dir, 'a.yaml'), yaml([rawService('a', { clusterIP: '10.96.0.20' })]));
    await until(() => events.length >= 1);
    assert.deepEqual(events, [{ type: 'delete', kind: 'Service', key: 'Service/default/b' }]);
  } finally {
    await src.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a ConfigMap volume\'s update (the kubelet swaps the ..data link) is picked up; a FIFO named *.yaml is never opened', async () => {
  const dir = tmp();
  const log = memoryLogger();
  const events: SourceEvent[] = [];
  const src = new FileSource({ paths: [dir], logger: log, debounceMs: 20 });
  // The kubelet's atomic writer: <dir>/..<timestamp>/file, <dir>/..data -> ..<timestamp>, <dir>/file -> ..data/file.
  const version = (n: number, clusterIP: string): void => {
    mkdirSync(join(dir, `..v${n}`));
    writeFileSync(join(dir, `..v${n}`, 'svc.yaml'), JSON.stringify(rawService('a', { clusterIP })));
    symlinkSync(`..v${n}`, join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  };
  try {
    version(1, '10.96.0.10');
    symlinkSync('..data/svc.yaml', join(dir, 'svc.yaml'));
    execFileSync('mkfifo', [join(dir, 'pipe.yaml')]);
    await src.start((e) => events.push(e));
    assert.deepEqual(events.map((e) => e.type), ['upsert', 'synced', 'synced', 'synced'], 'the FIFO is skipped, the start does not block');
    events.length = 0;
    version(2, '10.96.0.20');
    await until(() => events.length >= 1, 1000);
    const e = events[0]!;
    assert.ok(e.type === 'upsert' && e.object.kind === 'Service' && e.object.clusterIPs[0] === '10.96.0.20', JSON.stringify(events));
  } finally {
    await src.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Service port names are DNS labels (up to 63 characters); named target ports stay IANA names', () => {
  assert.equal(decodeObject(rawService('web', { ports: [{ name: 'grpc-health-check', port: 80, targetPort: 'grpc' }] })).status, 'ok');
  assert.match(invalidField(rawService('web', { ports: [{ name: 'a', port: 80, targetPort: 'much-too-long-name' }] })), /spec\.ports\[0\]\.targetPort/);
  assert.match(invalidField(rawService('x'.repeat(64))), /metadata\.name: "x{64}" is not a valid Service name/);
});

test('an object two files define survives when one of them drops it', async () => {
  const dir = tmp();
  const src = new FileSource({ paths: [dir], logger: memoryLogger(), debounceMs: 20 });
  const events: SourceEvent[] = [];
  try {
    writeFileSync(join(dir, 'a.yaml'), JSON.stringify(rawService('a')));
    writeFileSync(join(dir, 'b.yaml'), JSON.stringify(rawService('a', { clusterIP: '10.96.0.99' })));
    await src.start((e) => events.push(e));
    events.length = 0;
    writeFileSync(join(dir, 'b.yaml'), JSON.stringify(rawService('other', { clusterIP: '10.96.0.98' })));
    await until(() => events.length >= 2);
    await new Promise((r) => setTimeout(r, 60));
    const summary = events.map((e) => e.type === 'upsert' && e.object.kind === 'Service' ? `upsert ${e.object.name} ${e.object.clusterIPs[0]}` : e.type);
    assert.deepEqual(summary.sort(), ['upsert a 10.96.0.10', 'upsert other 10.96.0.98'], 'a.yaml\'s definition takes over; nothing is deleted');
  } finally {
    await src.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
