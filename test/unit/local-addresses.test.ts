// Local address discovery on a fake `ip`: which addresses count, and how the watcher follows
// `ip -o monitor address` (debounced, only real changes reported, restarted when it exits).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import { devicesHolding, LocalAddressError, parseIpAddrJSON, readLocalAddresses, watchLocalAddresses } from '../../src/source/local-addresses.js';
import type { MonitorProcess } from '../../src/source/local-addresses.js';
import type { ExecFn } from '../../src/util/exec.js';

const inet = (local: string, extra: Record<string, unknown> = {}) => ({ family: 'inet', local, prefixlen: 24, scope: 'global', ...extra });
const inet6 = (local: string, extra: Record<string, unknown> = {}) => ({ family: 'inet6', local, prefixlen: 64, scope: 'global', ...extra });

function ipJSON(...links: Array<Array<Record<string, unknown>>>): string {
  return JSON.stringify(links.map((addr_info, i) => ({ ifindex: i + 1, ifname: `if${i}`, addr_info })));
}

const NODE = ipJSON(
  [inet('127.0.0.1', { prefixlen: 8, scope: 'host' }), inet6('::1', { prefixlen: 128, scope: 'host' })],
  [inet('192.168.10.2'), inet('10.0.5.2'), inet6('fe80::1:2ff:fe00:1', { scope: 'link' }), inet6('FD00:0:0::2')],
  [inet('127.0.0.53', { prefixlen: 8 }), inet6('fd00::9', { dadfailed: true, tentative: true })],
  [],
);

test('local addresses: loopback, IPv6 link-local and DAD failures excluded; canonical, IPv4 first, in address order', () => {
  assert.deepEqual(parseIpAddrJSON(NODE), ['10.0.5.2', '192.168.10.2', 'fd00::2']);
  assert.deepEqual(parseIpAddrJSON('[]'), []);
  assert.throws(() => parseIpAddrJSON('not json'), LocalAddressError);
  assert.throws(() => parseIpAddrJSON('{"addr_info": []}'), /expected a list of links/);
});

test('the interfaces holding the node IPs (written in any spelling) are where the per-packet path attaches', () => {
  assert.deepEqual(devicesHolding(NODE, ['10.0.5.2']), ['if1']);
  assert.deepEqual(devicesHolding(NODE, ['fd00::2', '127.0.0.53']), ['if1', 'if2']);
  assert.deepEqual(devicesHolding(NODE, ['192.0.2.1']), []);
  assert.throws(() => devicesHolding('not json', ['10.0.5.2']), LocalAddressError);
});

test('readLocalAddresses runs `ip -j addr show` as argv and reports a failing ip', async () => {
  const calls: string[][] = [];
  const ok: ExecFn = async (argv) => { calls.push([...argv]); return { code: 0, stdout: NODE, stderr: '' }; };
  assert.deepEqual(await readLocalAddresses(ok), ['10.0.5.2', '192.168.10.2', 'fd00::2']);
  assert.deepEqual(calls, [['ip', '-j', 'addr', 'show']]);
  const failing: ExecFn = async () => ({ code: 1, stdout: '', stderr: 'Cannot open netlink socket\n' });
  await assert.rejects(readLocalAddresses(failing), (e: unknown) => e instanceof LocalAddressError && e.code === 'ELOCALADDR' && e.detail === 'Cannot open netlink socket');
  const missing: ExecFn = async () => { throw new Error('ENOENT'); };
  await assert.rejects(readLocalAddresses(missing), /could not run: ENOENT/);
});

class FakeMonitor extends EventEmitter implements MonitorProcess {
  readonly stdout = new PassThrough();
  killed = false;
  kill(): boolean {
    this.killed = true;
    return true;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('watchLocalAddresses: one read per burst of events, only changes reported, restarted after an exit', async () => {
  let current = ipJSON([inet('192.168.10.2')]);
  let reads = 0;
  const exec: ExecFn = async () => { reads++; return { code: 0, stdout: current, stderr: '' }; };
  const monitors: FakeMonitor[] = [];
  const spawned: string[][] = [];
  const spawn = (argv: readonly string[]): FakeMonitor => {
    spawned.push([...argv]);
    const m = new FakeMonitor();
    monitors.push(m);
    return m;
  };
  const seen: string[][] = [];
  const errors: Error[] = [];
  const w = watchLocalAddresses((a) => seen.push(a), { exec, spawn, debounceMs: 10, restartMs: 10, onError: (e) => errors.push(e) });
  try {
    await sleep(5);
    assert.deepEqual(seen, [['192.168.10.2']], 'the current list first');
    assert.deepEqual(spawned, [['ip', '-o', 'monitor', 'address']]);

    current = ipJSON([inet('192.168.10.2'), inet('192.168.10.7')]);
    const before = reads;
    for (let i = 0; i < 5; i++) monitors[0]!.stdout.write(`${i}: if0    inet 192.168.10.7/24 scope global if0\n`);
    await sleep(40);
    assert.equal(reads - before, 1, 'a burst of events is one read');
    assert.deepEqual(seen.at(-1), ['192.168.10.2', '192.168.10.7']);

    monitors[0]!.stdout.write('4: if0    inet6 fe80::1/64 scope link\n');
    await sleep(40);
    assert.equal(seen.length, 2, 'an event that changes nothing usable is not reported');

    current = ipJSON([inet('192.168.10.7')]);
    monitors[0]!.emit('exit', 1);
    await sleep(60);
    assert.equal(monitors.length, 2, 'the monitor is restarted');
    assert.match(errors[0]?.message ?? '', /exited \(1\); restarting/);
    assert.deepEqual(seen.at(-1), ['192.168.10.7'], 'a change made while no monitor ran is caught up with');
  } finally {
    w.close();
  }
  assert.equal(monitors.at(-1)!.killed, true, 'close() stops the monitor');
  const n = seen.length;
  monitors.at(-1)!.stdout.write('5: if0 inet 10.1.1.1/24\n');
  await sleep(30);
  assert.equal(seen.length, n, 'nothing is reported after close()');
});

test('watchLocalAddresses: a failing read goes to onError and the watcher keeps going', async () => {
  let fail = true;
  const exec: ExecFn = async () => (fail ? { code: 1, stdout: '', stderr: 'boom' } : { code: 0, stdout: ipJSON([inet('10.9.9.9')]), stderr: '' });
  const m = new FakeMonitor();
  const seen: string[][] = [];
  const errors: Error[] = [];
  const w = watchLocalAddresses((a) => seen.push(a), { exec, spawn: () => m, debounceMs: 5, onError: (e) => errors.push(e) });
  try {
    await sleep(10);
    assert.equal(seen.length, 0);
    assert.match(errors[0]?.message ?? '', /ip -j addr show failed/);
    fail = false;
    m.stdout.write('event\n');
    await sleep(30);
    assert.deepEqual(seen, [['10.9.9.9']]);
  } finally {
    w.close();
  }
});
