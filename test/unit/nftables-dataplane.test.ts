// NftablesDataPlane against a fake exec + fake nftables kernel: full and partial syncs, what a
// partial sync touches, failures, stale UDP conntrack, read-back, cleanup, deferred chain
// deletion, and an equivalence test (random partial syncs end where a full sync would).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataPlaneError } from '../../src/dataplane/dataplane.js';
import { expectedState } from '../../src/dataplane/fake.js';
import { staleConntrackCommands } from '../../src/dataplane/conntrack.js';
import { NftablesDataPlane, kernelAtLeast } from '../../src/dataplane/nftables/index.js';
import { diff } from '../../src/model/diff.js';
import type { ProxyConfig, ServicePort, ServiceTable } from '../../src/model/types.js';
import { memoryLogger } from '../../src/observe/log.js';
import { CFG, ep, sp, tableOf } from '../support/iptables.js';
import { FakeNftExec } from '../support/nftables.js';

const svc1 = sp({ namespace: 'ns1', name: 'svc1', clusterIP: '172.30.0.41', endpoints: [ep('10.180.0.1', 80), ep('10.180.0.2', 80)] });
const svc2 = sp({ namespace: 'ns2', name: 'svc2', clusterIP: '172.30.0.42', nodePort: 3001,
  endpoints: [ep('10.180.0.3', 80), ep('10.180.0.4', 80)] });

function setup(opts: { deleteChainsAtOnce?: boolean; config?: ProxyConfig | (() => ProxyConfig); now?: () => number } = {}): { fake: FakeNftExec; dp: NftablesDataPlane } {
  const fake = new FakeNftExec();
  const dp = new NftablesDataPlane({ config: opts.config ?? CFG, logger: memoryLogger(), exec: fake.fn, deleteChainsAtOnce: opts.deleteChainsAtOnce ?? true, ...(opts.now ? { now: opts.now } : {}) });
  return { fake, dp };
}

async function sync(dp: NftablesDataPlane, prev: ServiceTable, next: ServiceTable, full = false): Promise<void> {
  await dp.apply(diff(prev, next), next, { full });
}

/** The table a fresh data plane writes for `t` in one full sync. */
async function fullDump(t: ServiceTable, config: ProxyConfig = CFG): Promise<string> {
  const { fake, dp } = setup({ config });
  await sync(dp, new Map(), t, true);
  return fake.kernel.dump();
}

test('kernel version check', () => {
  assert.equal(kernelAtLeast('6.18.44-fc', 6, 2), true);
  assert.equal(kernelAtLeast('6.1.0-13-amd64', 6, 2), false);
  assert.equal(kernelAtLeast('5.15.0', 6, 2), false);
  assert.equal(kernelAtLeast('garbage', 6, 2), false);
});

test('full sync: one nft -f transaction; the first recreates the table, later ones flush and refill it', async () => {
  const { fake, dp } = setup();
  const t = tableOf(svc1, svc2);
  const res = await dp.apply(diff(new Map(), t), t, { full: true });
  const txs = fake.transactions();
  assert.equal(txs.length, 1);
  assert.match(txs[0]!, /^add table ip rudder\ndelete table ip rudder\nadd table ip rudder\n/);
  assert.equal(res.bytes, Buffer.byteLength(txs[0]!));
  assert.ok(res.written > 50);
  const dump = fake.kernel.dump();
  assert.match(dump, /172\.30\.0\.41 \. tcp \. 80 comment "cluster-ip ns1\/svc1:p80\/TCP" : goto ip-internal/);
  assert.match(dump, /172\.30\.0\.41 \. tcp \. 80 \. 1 : 10\.180\.0\.2 \. 80/);
  assert.match(dump, /tcp \. 3001 comment "nodeport ns2\/svc2:p80\/TCP" : goto np-external/);

  await dp.apply([], t, { full: true });
  const again = fake.last();
  assert.doesNotMatch(again, /delete table/);
  assert.match(again, /^flush map ip rudder service-ips$/m);
  assert.ok(fake.calls.some((c) => c.argv.join(' ') === 'nft -j list chains ip'), 'a later full sync lists the chains');
  assert.equal(fake.kernel.dump(), dump);
});

test('partial sync writes only the changed port\'s elements, and ends where a full sync would', async () => {
  const { fake, dp } = setup();
  const t0 = tableOf(svc1, svc2);
  await sync(dp, new Map(), t0, true);
  const svc2b = sp({ ...svc2, endpoints: [ep('10.180.0.3', 80), ep('10.180.0.5', 80)] });
  const t1 = tableOf(svc1, svc2b);
  await sync(dp, t0, t1);
  const text = fake.last();
  assert.equal(text, [
    'delete element ip rudder ip-eps-2 { 172.30.0.42 . tcp . 80 . 1 }',
    'delete element ip rudder np-eps-2 { tcp . 3001 . 1 }',
    'delete element ip rudder hairpin { 10.180.0.4 . 10.180.0.4 }',
    'add element ip rudder ip-eps-2 { 172.30.0.42 . tcp . 80 . 1 : 10.180.0.5 . 80 }',
    'add element ip rudder np-eps-2 { tcp . 3001 . 1 : 10.180.0.5 . 80 }',
    'add element ip rudder hairpin { 10.180.0.5 . 10.180.0.5 }',
    '',
  ].join('\n'));
  assert.equal(fake.kernel.dump(), await fullDump(t1));

  // A third endpoint moves the port to the 3-endpoint pick chain, created on first use.
  const svc2c = sp({ ...svc2, endpoints: [ep('10.180.0.3', 80), ep('10.180.0.5', 80), ep('10.180.0.6', 80)] });
  const t2 = tableOf(svc1, svc2c);
  await sync(dp, t1, t2);
  assert.match(fake.last(), /^add map ip rudder ip-eps-3 /m);
  assert.match(fake.last(), /^add chain ip rudder ip-pick-3$/m);
  assert.doesNotMatch(fake.last(), /172\.30\.0\.41/, 'svc1 is not touched');
  assert.equal(fake.kernel.dump(), await fullDump(t2));

  // Removing it deletes its elements and the chains and maps nobody uses any more.
  const t3 = tableOf(svc1);
  await sync(dp, t2, t3);
  assert.match(fake.last(), /^delete map ip rudder ip-eps-3$/m);
  assert.match(fake.last(), /^delete chain ip rudder np-pick-3$/m);
  assert.doesNotMatch(fake.last(), /ip-eps-2/, 'svc1 still uses the 2-endpoint chain');
  assert.equal(fake.kernel.dump(), await fullDump(t3));
  assert.equal(fake.calls.filter((c) => c.argv[1] === '-j').length, 0, 'partial syncs read nothing back');
});

test('a sync without changes runs nothing; a change to an IPv6 port touches only ip6 rudder', async () => {
  const { fake, dp } = setup();
  const t = tableOf(svc1);
  await sync(dp, new Map(), t, true);
  const n = fake.calls.length;
  assert.deepEqual(await dp.apply([], t, { full: false }), { written: 0, bytes: 0 });
  assert.equal(fake.calls.length, n);
  const v4 = fake.kernel.dump();
  const v6 = sp({ namespace: 'ns1', name: 'svc1', clusterIP: 'fd00::41', family: 6, endpoints: [] });
  const t6 = tableOf(svc1, v6);
  assert.ok((await dp.apply(diff(t, t6), t6, { full: false })).written > 0);
  assert.equal(fake.transactions().length, 2);
  assert.match(fake.last(), /^add table ip6 rudder\ndelete table ip6 rudder\nadd table ip6 rudder\n/);
  assert.doesNotMatch(fake.last(), / ip rudder /);
  assert.equal(fake.kernel.dump(), v4);
  assert.match(fake.kernel.dump('ip6 rudder'), /fd00::41 \. tcp \. 80 comment "cluster-ip ns1\/svc1:p80\/TCP\/v6" : goto reject-chain/);
});

test('a failed transaction throws EAPPLY with nft\'s stderr, changes nothing, and the next sync is full', async () => {
  const { fake, dp } = setup();
  const t0 = tableOf(svc1);
  await sync(dp, new Map(), t0, true);
  const before = fake.kernel.dump();
  const t1 = tableOf(svc1, svc2);
  fake.failNext = { code: 1, stdout: '', stderr: '/dev/stdin:3:1-5: Error: Could not process rule: No buffer space available\n' };
  await assert.rejects(sync(dp, t0, t1), (e: unknown) => {
    assert.ok(e instanceof DataPlaneError);
    assert.equal(e.code, 'EAPPLY');
    assert.match(e.message, /No buffer space available/);
    assert.match(e.detail ?? '', /stdin:3/);
    return true;
  });
  assert.equal(fake.kernel.dump(), before);
  // The caller retries with the same changes and full: false; the plane does a full sync anyway.
  await sync(dp, t0, t1);
  assert.match(fake.last(), /^flush chain ip rudder services$/m);
  assert.equal(fake.kernel.dump(), await fullDump(t1));
});

test('a transaction that cannot be built, or a failed read before a full sync, is EAPPLY too; nothing runs', async () => {
  const { fake, dp } = setup();
  const t0 = tableOf(svc1);
  await sync(dp, new Map(), t0, true);
  const n = fake.transactions().length;
  const evil = sp({ namespace: 'ns9', name: 'evil', clusterIP: '172.30.0.9"; flush ruleset', endpoints: [ep('10.180.0.9', 80)] });
  const t1 = tableOf(svc1, evil);
  await assert.rejects(sync(dp, t0, t1), (e: unknown) => e instanceof DataPlaneError && e.code === 'EAPPLY' && /not built: invalid element key/.test(e.message));
  assert.equal(fake.transactions().length, n, 'nothing handed to nft');
  // The next sync is full; its chain listing fails: EAPPLY again, and the one after is still full.
  const orig = fake.fn;
  const failing = async (argv: readonly string[], o?: { input?: string }) =>
    (argv[2] === 'list' ? { code: 1, stdout: '', stderr: 'Error: Operation not permitted\n' } : orig(argv, o));
  const dp2 = new NftablesDataPlane({ config: CFG, logger: memoryLogger(), exec: failing, deleteChainsAtOnce: true });
  await dp2.apply(diff(new Map(), t0), t0, { full: true });
  await assert.rejects(dp2.apply([], t0, { full: true }), (e: unknown) => e instanceof DataPlaneError && e.code === 'EAPPLY' && /list chains/.test(e.message));
  await assert.rejects(dp2.apply([], t0, { full: false }), /list chains/, 'still a full sync');
});

test('a kernel that drifted (an object deleted behind our back) fails the partial sync; the full one repairs it', async () => {
  const { fake, dp } = setup();
  const t0 = tableOf(svc1);
  await sync(dp, new Map(), t0, true);
  assert.equal(fake.kernel.run('flush map ip rudder ip-eps-2\n'), null);
  const svc1b = sp({ ...svc1, endpoints: [ep('10.180.0.1', 80), ep('10.180.0.9', 80)] });
  const t1 = tableOf(svc1b);
  await assert.rejects(sync(dp, t0, t1), /No such file or directory/);
  await dp.apply([], t1, { full: false });
  assert.equal(fake.kernel.dump(), await fullDump(t1));
});

test('a node config change makes the next sync full', async () => {
  let cfg: ProxyConfig = CFG;
  const { fake, dp } = setup({ config: () => cfg });
  const t = tableOf(svc1, svc2);
  await sync(dp, new Map(), t, true);
  cfg = { ...CFG, masqueradeAll: true, nodePortAddresses: ['192.168.0.0/24'] };
  await dp.apply([], t, { full: false });
  assert.match(fake.last(), /^add rule ip rudder ip-internal jump mark-for-masquerade$/m);
  assert.match(fake.last(), /^add element ip rudder nodeport-ips \{ 192\.168\.0\.2 \}$/m);
  assert.equal(fake.kernel.dump(), await fullDump(t, cfg));
  cfg = CFG;
  await dp.apply([], t, { full: false });
  assert.match(fake.last(), /^delete set ip rudder nodeport-ips$/m, 'the set the old config needed is removed');
  assert.equal(fake.kernel.dump(), await fullDump(t));
});

test('a service id longer than an element comment can hold is cut, not rejected', async () => {
  const { fake, dp } = setup();
  const long = sp({ namespace: 'n'.repeat(63), name: 's'.repeat(63), portName: 'p'.repeat(15), clusterIP: '172.30.0.9', endpoints: [ep('10.180.0.9', 80)] });
  const t = tableOf(long);
  await sync(dp, new Map(), t, true);
  const fe = await dp.programmed();
  assert.equal(fe.length, 1);
  assert.equal(fe[0]!.kind, 'clusterIP');
  assert.ok(long.id.startsWith(fe[0]!.service) && fe[0]!.service.length === 128 - 'cluster-ip '.length, fe[0]!.service);
  assert.match(fake.kernel.dump(), /172\.30\.0\.9 \. tcp \. 80 \. 0 : 10\.180\.0\.9 \. 80/);
});

test('stale UDP conntrack entries are cleared as the iptables plane clears them', async () => {
  const { fake, dp } = setup();
  const dns = sp({ namespace: 'kube-system', name: 'dns', portName: 'dns', protocol: 'UDP', port: 53, clusterIP: '172.30.0.10',
    nodePort: 30053, endpoints: [ep('10.180.0.7', 53), ep('10.180.0.8', 53)] });
  const t0 = tableOf(dns);
  await sync(dp, new Map(), t0, true);
  const dnsB = sp({ ...dns, endpoints: [ep('10.180.0.7', 53)] });
  const t1 = tableOf(dnsB);
  const changes = diff(t0, t1);
  const before = fake.conntrack().length;
  await dp.apply(changes, t1, { full: false });
  assert.deepEqual(fake.conntrack().slice(before), staleConntrackCommands(changes));
  assert.ok(fake.conntrack().slice(before).some((a) => a.includes('--dst-nat') && a.includes('10.180.0.8')));
});

test('programmed() reads back what a correct data plane holds', async () => {
  const { dp } = setup();
  const ports = [
    svc1, svc2,
    sp({ namespace: 'ns3', name: 'lb', clusterIP: '172.30.0.43', nodePort: 3003, externalPolicyLocal: true, loadBalancerIPs: ['5.6.7.8'],
      externalIPs: ['192.168.99.3'], endpoints: [ep('10.180.0.5', 80, { local: true }), ep('10.180.1.5', 80)] }),
    sp({ namespace: 'ns4', name: 'sticky', clusterIP: '172.30.0.44', affinityTimeoutSeconds: 60, protocol: 'UDP', port: 53,
      endpoints: [ep('10.180.0.6', 53), ep('10.180.0.7', 53)] }),
    sp({ namespace: 'ns5', name: 'empty', clusterIP: '172.30.0.45' }),
  ];
  const t = tableOf(...ports);
  await sync(dp, new Map(), t, true);
  const got = (await dp.programmed()).map((f) => ({ ...f, backends: [...f.backends].sort() }));
  const want = [...expectedState(t).values()].filter((f) => f.backends.length > 0).map((f) => ({ ...f, backends: [...f.backends].sort() }));
  const key = (f: { service: string; kind: string; address: string }): string => `${f.service}|${f.kind}|${f.address}`;
  assert.deepEqual(got.sort((a, b) => key(a).localeCompare(key(b))), want.sort((a, b) => key(a).localeCompare(key(b))));
});

test('cleanup deletes the table ip rudder and nothing else; it is idempotent; the next sync starts afresh', async () => {
  const { fake, dp } = setup();
  assert.equal(fake.kernel.run('add table ip other\nadd chain ip other c\n'), null);
  const t = tableOf(svc1);
  await sync(dp, new Map(), t, true);
  await dp.cleanup();
  assert.equal(fake.kernel.table('ip', 'rudder'), undefined);
  assert.ok(fake.kernel.table('ip', 'other')?.chains.has('c'));
  assert.deepEqual(await dp.programmed(), [], 'no table: nothing programmed');
  await dp.cleanup();
  assert.deepEqual(fake.transactions().slice(-2), [
    'add table ip rudder\ndelete table ip rudder\nadd table ip kube-proxy\ndelete table ip kube-proxy\n',
    'add table ip6 rudder\ndelete table ip6 rudder\nadd table ip6 kube-proxy\ndelete table ip6 kube-proxy\n',
  ], 'kube-proxy\'s own nftables tables go too, as its --cleanup does');
  await dp.apply([], t, { full: false });
  assert.match(fake.last(), /^add table ip rudder\ndelete table ip rudder\nadd table ip rudder\n/);
  assert.equal(fake.kernel.dump(), await fullDump(t));
});

test('before kernel 6.2, unused chains are flushed at once and deleted by a later transaction', async () => {
  let now = 1_000_000;
  const { fake, dp } = setup({ deleteChainsAtOnce: false, now: () => now });
  const three = sp({ ...svc2, endpoints: [ep('10.180.0.3', 80), ep('10.180.0.4', 80), ep('10.180.0.5', 80)] });
  const t0 = tableOf(svc1, three);
  await sync(dp, new Map(), t0, true);
  const t1 = tableOf(svc1);
  await sync(dp, t0, t1);
  assert.match(fake.last(), /^flush chain ip rudder ip-pick-3$/m);
  assert.doesNotMatch(fake.last(), /delete chain/);
  assert.ok(fake.kernel.table()?.chains.has('ip-pick-3'));
  now += 600;
  const t2 = tableOf(sp({ ...svc1, endpoints: [ep('10.180.0.1', 80)] }));
  await sync(dp, t1, t2);
  assert.ok(fake.kernel.table()?.chains.has('ip-pick-3'), 'not yet: less than a second');
  now += 500;
  await sync(dp, t2, t1);
  const txs = fake.transactions();
  assert.equal(txs[txs.length - 2], [
    'add chain ip rudder ip-pick-3', 'delete chain ip rudder ip-pick-3', 'add chain ip rudder np-pick-3', 'delete chain ip rudder np-pick-3', '',
  ].join('\n'), 'a separate transaction, before the sync\'s own');
  assert.ok(!fake.kernel.table()?.chains.has('ip-pick-3'));
  assert.ok(fake.kernel.table()?.chains.has('ip-pick-1'), 'flushed a moment ago: kept for now');
  assert.equal(fake.kernel.table()?.chains.get('ip-pick-1')?.rules.length, 0);
});

// ---- equivalence: random partial syncs end where a full sync of the final table would ----

function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomPort(r: () => number, i: number, portName = 'p80'): ServicePort {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const n = pick([0, 1, 2, 3, 4]);
  const endpoints = Array.from({ length: n }, (_, k) => ep(`10.180.${k}.${1 + Math.floor(r() * 4)}`, pick([80, 8080]),
    { local: r() < 0.4, ready: r() < 0.8, terminating: r() < 0.3 }));
  const uniq = [...new Map(endpoints.map((e) => [e.id, e])).values()];
  const external = r() < 0.5;
  return sp({
    namespace: `ns${i}`, name: `svc${i}`, portName, clusterIP: `172.30.0.${i}`, protocol: pick(['TCP', 'TCP', 'UDP', 'SCTP'] as const),
    port: portName === 'p80' ? pick([80, 53]) : 9000,
    nodePort: external && r() < 0.6 ? (portName === 'p80' ? 30000 : 31000) + i : 0,
    externalIPs: external && r() < 0.4 ? [pick(['192.168.99.1', '192.168.99.2'])] : [],
    loadBalancerIPs: external && r() < 0.5 ? [`5.6.7.${i}`, ...(r() < 0.3 ? ['5.6.8.1'] : [])] : [],
    loadBalancerSourceRanges: r() < 0.5 ? [pick(['203.0.113.0/24', '192.168.0.0/16']), pick(['203.0.113.128/25', '10.0.0.0/8'])] : [],
    affinityTimeoutSeconds: r() < 0.25 ? pick([10, 10800]) : 0,
    externalPolicyLocal: external && r() < 0.5,
    internalPolicyLocal: r() < 0.2,
    endpoints: uniq,
  });
}

/** 1-2 ports of one service (the same ClusterIP), often contending for external IPs and LB IPs with others. */
function randomService(r: () => number, i: number): ServicePort[] {
  return r() < 0.3 ? [randomPort(r, i), randomPort(r, i, 'p9000')] : [randomPort(r, i)];
}

/** Drops empty chains (flushed, waiting for their delayed deletion) from a dump. */
function withoutEmptyChains(dump: string): string {
  const lines = dump.split('\n');
  return lines.filter((l, k) => !(l.startsWith('  chain ') && !(lines[k + 1] ?? '').startsWith('    '))).join('\n');
}

async function randomSyncs(seed: number, deleteChainsAtOnce: boolean): Promise<void> {
  const r = rng(seed);
  let now = 0;
  const { fake, dp } = setup({ deleteChainsAtOnce, now: () => now });
  const services = new Map<number, ServicePort[]>();
  for (let i = 1; i <= 12; i++) if (r() < 0.6) services.set(i, randomService(r, i));
  let prev: ServiceTable = tableOf(...[...services.values()].flat());
  await sync(dp, new Map(), prev, true);
  for (let step = 0; step < 30; step++) {
    for (let k = 0; k < 1 + Math.floor(r() * 3); k++) {
      const i = 1 + Math.floor(r() * 12);
      if (services.has(i) && r() < 0.3) services.delete(i);
      else services.set(i, randomService(r, i));
    }
    const next = tableOf(...[...services.values()].flat());
    now += 700;
    await sync(dp, prev, next);
    const got = fake.kernel.dump();
    const want = await fullDump(next);
    if (deleteChainsAtOnce) assert.equal(got, want, `seed ${seed} step ${step}`);
    else assert.equal(withoutEmptyChains(got), withoutEmptyChains(want), `seed ${seed} step ${step} (delayed chain deletion)`);
    prev = next;
  }
  // A full sync of the same plane (flush and refill in place) changes nothing either.
  await dp.apply([], prev, { full: true });
  if (deleteChainsAtOnce) assert.equal(fake.kernel.dump(), await fullDump(prev), `seed ${seed} final full sync`);
}

test('equivalence: random partial syncs leave the same table as a full sync of the final one', async () => {
  for (let seed = 1; seed <= 40; seed++) await randomSyncs(seed, true);
});

test('equivalence with delayed chain deletion (kernels before 6.2): every transaction is accepted', async () => {
  for (let seed = 101; seed <= 110; seed++) await randomSyncs(seed, false);
});

// ---- IPv6: a second table, ip6 rudder -------------------------------------------------------

const web6 = sp({ namespace: 'ns1', name: 'web', clusterIP: 'fd00:30::41', family: 6, nodePort: 3006,
  endpoints: [ep('fd00:180::1', 8080), ep('fd00:180::2', 8080)] });
const sticky6 = sp({ namespace: 'ns2', name: 'sticky', clusterIP: 'fd00:30::42', family: 6, protocol: 'UDP', port: 53,
  affinityTimeoutSeconds: 30, endpoints: [ep('fd00:180::3', 53), ep('fd00:180::4', 53)] });
const lb6 = sp({ namespace: 'ns3', name: 'lb', clusterIP: 'fd00:30::43', family: 6, loadBalancerIPs: ['2001:db8::10'],
  loadBalancerSourceRanges: ['2001:db8:1::/48', '10.0.0.0/8'], externalPolicyLocal: true,
  endpoints: [ep('fd00:180::5', 80, { local: true }), ep('fd00:181::5', 80)] });
const DUAL_CFG: ProxyConfig = { ...CFG, clusterCIDRs: [...CFG.clusterCIDRs, 'fd00:180::/40'] };

test('dual stack: IPv4 elements only in ip rudder, IPv6 ones only in ip6 rudder; the IPv4 table is as without IPv6', async () => {
  const { fake, dp } = setup({ config: DUAL_CFG });
  const t = tableOf(svc1, svc2, web6, sticky6, lb6);
  await sync(dp, new Map(), t, true);
  const txs = fake.transactions();
  assert.equal(txs.length, 2, 'one transaction per family');
  assert.match(txs[0]!, /^add table ip rudder\n/);
  assert.match(txs[1]!, /^add table ip6 rudder\n/);
  assert.doesNotMatch(txs[0]!, /ip6|fd00:|2001:db8/);
  assert.doesNotMatch(txs[1]!, / ip rudder |172\.30\.|10\.180\.|ipv4_addr|ip saddr|ip daddr|dnat ip to/);
  const v4 = fake.kernel.dump('ip rudder');
  const v6 = fake.kernel.dump('ip6 rudder');
  assert.equal(v4, await fullDump(tableOf(svc1, svc2), DUAL_CFG));
  assert.match(v6, /fd00:30::41 \. tcp \. 80 comment "cluster-ip ns1\/web:p80\/TCP\/v6" : goto ip-internal/);
  assert.match(v6, /fd00:30::41 \. tcp \. 80 \. 1 : fd00:180::2 \. 8080/);
  assert.match(v6, /tcp \. 3006 comment "nodeport ns1\/web:p80\/TCP\/v6" : goto np-external/);
  assert.match(v6, /map ip-eps-2 \{ typeof ip6 daddr \. meta l4proto \. th dport \. numgen random mod 2 : ip6 daddr \. th dport ; \}/);
  assert.match(v6, /dnat ip6 to ip6 daddr \. meta l4proto \. th dport \. numgen random mod 2 map @ip-eps-2/);
  assert.match(v6, /fib daddr type local ip6 daddr != ::1 meta l4proto \. th dport vmap @service-nodeports/);
  assert.match(v6, /ip6 saddr != fd00:180::\/40 jump mark-for-masquerade/);
  assert.match(v6, /set cluster-ips \{ type ipv6_addr ; \}/);
  assert.match(v6, /fd00:180::1 \. fd00:180::1/);
  // Affinity: ip6 sets and bracketed DNAT targets.
  assert.match(v6, /type ipv6_addr ; flags dynamic,timeout ; timeout 30s ;/);
  assert.match(v6, /update @aff-\S+-30 \{ ip6 saddr \}/);
  assert.match(v6, /meta l4proto udp dnat to \[fd00:180::3\]:53/);
  // Source ranges: only the IPv6 ones.
  assert.match(v6, /2001:db8::10 \. tcp \. 80 \. 2001:db8:1::\/48/);
  assert.doesNotMatch(v6, /10\.0\.0\.0\/8/);
});

test('dual stack: partial IPv6 syncs write only ip6 rudder and end where a full sync would', async () => {
  const { fake, dp } = setup({ config: DUAL_CFG });
  const t0 = tableOf(svc1, web6, sticky6);
  await sync(dp, new Map(), t0, true);
  const v4 = fake.kernel.dump('ip rudder');
  const n = fake.transactions().length;
  const web6b = sp({ ...web6, endpoints: [ep('fd00:180::1', 8080), ep('fd00:180::7', 8080), ep('fd00:180::8', 8080)] });
  const sticky6b = sp({ ...sticky6, endpoints: [ep('fd00:180::3', 53)] });
  const t1 = tableOf(svc1, web6b, sticky6b, lb6);
  await sync(dp, t0, t1);
  assert.equal(fake.transactions().length, n + 1, 'one transaction: the IPv4 table has nothing to do');
  assert.match(fake.last(), /^add map ip6 rudder ip-eps-3 /m);
  assert.doesNotMatch(fake.last(), / ip rudder |delete table|flush map ip6 rudder service-ips/);
  assert.equal(fake.kernel.dump('ip rudder'), v4);
  const ref = setup({ config: DUAL_CFG });
  await sync(ref.dp, new Map(), t1, true);
  assert.equal(fake.kernel.dump('ip6 rudder'), ref.fake.kernel.dump('ip6 rudder'));
  // Removing every IPv6 port empties ip6 rudder's services but keeps the table.
  const t2 = tableOf(svc1);
  await sync(dp, t1, t2);
  assert.doesNotMatch(fake.kernel.dump('ip6 rudder'), /fd00:30:|fd00:18\d::\d/);
  assert.match(fake.kernel.dump('ip6 rudder'), /^table ip6 rudder$/m);
});

test('dual stack: programmed() reads back both tables; cleanup removes both', async () => {
  const { fake, dp } = setup({ config: DUAL_CFG });
  const t = tableOf(svc1, svc2, web6, sticky6, lb6);
  await sync(dp, new Map(), t, true);
  const got = (await dp.programmed()).map((f) => ({ ...f, backends: [...f.backends].sort() }));
  const want = [...expectedState(t).values()].filter((f) => f.backends.length > 0).map((f) => ({ ...f, backends: [...f.backends].sort() }));
  const key = (f: { service: string; kind: string; address: string }): string => `${f.service}|${f.kind}|${f.address}`;
  assert.deepEqual(got.sort((a, b) => key(a).localeCompare(key(b))), want.sort((a, b) => key(a).localeCompare(key(b))));
  assert.ok(got.some((f) => f.address === '[fd00:30::41]:80' && f.backends.join() === '[fd00:180::1]:8080,[fd00:180::2]:8080'));
  await dp.cleanup();
  assert.equal(fake.kernel.table('ip', 'rudder'), undefined);
  assert.equal(fake.kernel.table('ip6', 'rudder'), undefined);
  assert.deepEqual(await dp.programmed(), []);
});

test('an IPv4-only table never touches ip6 rudder', async () => {
  const { fake, dp } = setup();
  const t0 = tableOf(svc1);
  await sync(dp, new Map(), t0, true);
  const t1 = tableOf(svc1, svc2);
  await sync(dp, t0, t1);
  await dp.apply([], t1, { full: true });
  assert.ok(fake.transactions().every((tx) => !/ip6/.test(tx)));
  assert.equal(fake.kernel.table('ip6', 'rudder'), undefined);
});

test('a kernel without IPv6 nftables: one info log, IPv6 ports skipped, IPv4 programmed', async () => {
  const fake = new FakeNftExec();
  fake.noIPv6 = true;
  const logger = memoryLogger();
  const dp = new NftablesDataPlane({ config: DUAL_CFG, logger, exec: fake.fn, deleteChainsAtOnce: true });
  const t0 = tableOf(svc1, web6);
  await sync(dp, new Map(), t0, true);
  const t1 = tableOf(svc1, web6, sticky6);
  await sync(dp, t0, t1);
  assert.equal(logger.lines.filter((l) => /IPv6 service ports will not be programmed/.test(l)).length, 1);
  assert.ok(fake.transactions().every((tx) => !/ip6/.test(tx)));
  assert.equal(fake.kernel.dump(), await fullDump(tableOf(svc1), DUAL_CFG));
  await dp.cleanup();
  assert.ok(fake.transactions().every((tx) => !/ip6/.test(tx)));
});
