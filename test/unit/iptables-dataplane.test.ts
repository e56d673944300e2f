// IptablesDataPlane against a fake exec + fake kernel: full and partial syncs, stale chains,
// failed restores, stale UDP conntrack, read-back, cleanup and backend detection.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataPlaneError } from '../../src/dataplane/dataplane.js';
import { detectBackend } from '../../src/dataplane/iptables/backend.js';
import { portChains } from '../../src/dataplane/iptables/chains.js';
import { parseUdpEntries, reconcileUdpConntrack, staleConntrackCommands, staleUdpEntries } from '../../src/dataplane/conntrack.js';
import { IptablesDataPlane } from '../../src/dataplane/iptables/index.js';
import { diff } from '../../src/model/diff.js';
import type { ServicePort, ServiceTable } from '../../src/model/types.js';
import { memoryLogger } from '../../src/observe/log.js';
import type { ExecFn, ExecResult } from '../../src/util/exec.js';
import { CFG, FakeExec, ep, sp, tableOf } from '../support/iptables.js';

const svc1 = sp({ namespace: 'ns1', name: 'svc1', clusterIP: '172.30.0.41', endpoints: [ep('10.180.0.1', 80), ep('10.180.0.2', 80)] });
const svc2 = sp({ namespace: 'ns2', name: 'svc2', clusterIP: '172.30.0.42', nodePort: 3001,
  endpoints: [ep('10.180.0.3', 80), ep('10.180.0.4', 80)] });
const c1 = portChains(svc1);
const c2 = portChains(svc2);

function setup(): { fake: FakeExec; dp: IptablesDataPlane; log: ReturnType<typeof memoryLogger> } {
  const fake = new FakeExec();
  const log = memoryLogger();
  const dp = new IptablesDataPlane({ config: CFG, logger: log, exec: fake.fn, backend: 'nft' });
  return { fake, dp, log };
}

async function sync(dp: IptablesDataPlane, prev: ServiceTable, next: ServiceTable, full = false): Promise<void> {
  await dp.apply(diff(prev, next), next, { full });
}

test('full sync: one restore with kube-proxy flags, every chain, missing jump rules inserted', async () => {
  const { fake, dp } = setup();
  const t = tableOf(svc1, svc2);
  const res = await dp.apply(diff(new Map(), t), t, { full: true });
  const r = fake.restores();
  assert.equal(r.length, 1);
  assert.deepEqual(r[0]!.argv, ['iptables-nft-restore', '-w', '5', '--noflush', '--counters']);
  const text = r[0]!.input;
  for (const ch of [c1.svc, c1.sep('10.180.0.1:80'), c2.svc, c2.ext]) assert.ok(text.includes(`:${ch} - [0:0]`), ch);
  assert.ok(text.includes('-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'));
  assert.ok(text.includes('-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL'));
  assert.equal(res.bytes, Buffer.byteLength(text));
  assert.ok(res.written > 10);
  // A second full sync finds the jump rules in place and does not insert them again.
  await dp.apply([], t, { full: true });
  assert.ok(!fake.lastRestore().includes('-I '));
  assert.equal(fake.kernel.save('nat').split('\n').filter((l) => l.startsWith('-A PREROUTING')).length, 1);
});

test('partial sync touches only the changed port: its own chains, its top-level rules if they differ, its stale chains', async () => {
  const { fake, dp } = setup();
  const t0 = tableOf(svc1, svc2);
  await sync(dp, new Map(), t0, true);
  const svc2b = sp({ ...svc2, endpoints: [ep('10.180.0.3', 80), ep('10.180.0.5', 80)] });
  const t1 = tableOf(svc1, svc2b);
  const savesBefore = fake.saves();
  await sync(dp, t0, t1);
  const text = fake.lastRestore();
  // Same frontends, so the top-level chains are not touched at all.
  assert.ok(!text.includes('KUBE-SERVICES'), text);
  assert.ok(!text.includes(`:${c1.svc} `) && !text.includes(`:${c1.sep('10.180.0.1:80')} `), 'svc1 is not rewritten');
  assert.ok(text.includes(`:${c2.svc} - [0:0]`));
  assert.ok(text.includes(`:${c2.sep('10.180.0.5:80')} - [0:0]`));
  assert.ok(text.includes(`-X ${c2.sep('10.180.0.4:80')}`));
  assert.equal(fake.saves(), savesBefore, 'no iptables-save on a partial sync');
  const nat = fake.kernel.chains('nat');
  assert.ok(nat.includes(c1.sep('10.180.0.1:80')) && !nat.includes(c2.sep('10.180.0.4:80')));

  // Removing a service deletes its top-level rules by specification, then all its chains.
  const t2 = tableOf(svc1);
  await sync(dp, t1, t2);
  const rm = fake.lastRestore();
  assert.match(rm, new RegExp(`^-D KUBE-SERVICES .*-j ${c2.svc}$`, 'm'));
  assert.match(rm, new RegExp(`^-D KUBE-NODEPORTS .*-j ${c2.ext}$`, 'm'));
  assert.match(rm, /^-D KUBE-SERVICES .*-d 172\.30\.0\.42 -j REJECT$/m, 'its ClusterIP reject goes too');
  for (const ch of [c2.svc, c2.ext, c2.sep('10.180.0.3:80')]) assert.ok(rm.includes(`-X ${ch}`), ch);
  assert.deepEqual(fake.kernel.chains('nat').filter((c) => c.includes(c2.svc.slice(9))), []);

  // A sync without changes runs nothing.
  const before = fake.restores().length;
  await sync(dp, t2, t2);
  assert.equal(fake.restores().length, before);
});

/** Rules per chain, order-insensitive, with the order constraints checked separately. */
function ruleSets(fake: FakeExec): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const table of ['nat', 'filter']) {
    for (const line of fake.kernel.save(table).split('\n')) {
      if (!line.startsWith('-A ')) continue;
      const chain = `${table} ${line.split(' ')[1]}`;
      out.set(chain, [...(out.get(chain) ?? []), line]);
    }
  }
  for (const [chain, rules] of out) {
    if (chain === 'nat KUBE-SERVICES') assert.match(rules[rules.length - 1]!, /-j KUBE-NODEPORTS$/, 'the NodePort tail call stays last');
    if (chain === 'filter KUBE-SERVICES') {
      const firstGeneric = rules.findIndex((r) => r.includes('unknown ports of ClusterIPs'));
      if (firstGeneric !== -1) assert.ok(rules.slice(firstGeneric).every((r) => r.includes('unknown ports of ClusterIPs')), 'ClusterIP rejects stay after port rules');
    }
    rules.sort();
  }
  return out;
}

test('a chain of partial syncs leaves exactly the rules a full sync of the final table writes', async () => {
  let rng = 11;
  const rand = (n: number): number => { rng = (rng * 1103515245 + 12345) % 2147483648; return rng % n; };
  const inc = setup();
  let prev: ServiceTable = new Map();
  await sync(inc.dp, prev, prev, true);
  for (let step = 0; step < 60; step++) {
    const ports: ServicePort[] = [];
    for (let i = 0; i < 8; i++) {
      if (rand(5) === 0) continue;
      const eps = [1, 2, 3].filter(() => rand(3) > 0).map((k) => ep(`10.180.${i}.${k}`, 80, { local: k === 1 }));
      ports.push(sp({
        namespace: 'ns', name: `s${i}`, clusterIP: `172.30.1.${i % 6}`, port: 80 + i, nodePort: rand(2) ? 30000 + i : 0,
        externalPolicyLocal: rand(3) === 0, loadBalancerIPs: rand(4) === 0 ? ['198.18.1.9'] : [], loadBalancerSourceRanges: rand(2) ? ['198.18.0.0/24'] : [],
        affinityTimeoutSeconds: rand(4) === 0 ? 30 : 0, endpoints: eps,
      }));
    }
    const next = tableOf(...ports);
    await sync(inc.dp, prev, next);
    const ref = setup();
    await sync(ref.dp, new Map(), next, true);
    assert.deepEqual(ruleSets(inc.fake), ruleSets(ref.fake), `step ${step}`);
    prev = next;
  }
});

test('full sync deletes stale service chains found by iptables-save, never foreign chains', async () => {
  const { fake, dp } = setup();
  fake.kernel.restore('*nat\n:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]\n:KUBE-SEP-BBBBBBBBBBBBBBBB - [0:0]\n:CNI-HOSTPORT-DNAT - [0:0]\n'
    + '-A KUBE-SVC-AAAAAAAAAAAAAAAA -j KUBE-SEP-BBBBBBBBBBBBBBBB\nCOMMIT\n');
  const t = tableOf(svc1);
  await sync(dp, new Map(), t, true);
  const text = fake.lastRestore();
  assert.ok(text.includes('-X KUBE-SVC-AAAAAAAAAAAAAAAA') && text.includes('-X KUBE-SEP-BBBBBBBBBBBBBBBB'));
  assert.ok(!text.includes('CNI-HOSTPORT-DNAT'));
  assert.ok(fake.kernel.chains('nat').includes('CNI-HOSTPORT-DNAT'));
});

test('a failed restore throws EAPPLY with stderr and forces the next sync to be full', async () => {
  const { fake, dp, log } = setup();
  const t0 = tableOf(svc1, svc2);
  await sync(dp, new Map(), t0, true);
  const before = fake.kernel.save('nat');
  fake.failNextRestore = { code: 2, stdout: '', stderr: "iptables-restore v1.8.9 (nf_tables): Chain 'KUBE-NOPE' does not exist\nError occurred at line: 7\n" };
  const t1 = tableOf(svc1);
  await assert.rejects(sync(dp, t0, t1), (e: unknown) => {
    assert.ok(e instanceof DataPlaneError);
    assert.equal(e.code, 'EAPPLY');
    assert.match(e.message, /KUBE-NOPE/);
    assert.match(e.detail ?? '', /Error occurred at line: 7[\s\S]*input around the failing line[\s\S]*7: /);
    return true;
  });
  assert.equal(fake.kernel.save('nat'), before, 'the kernel keeps the previous rules');
  assert.deepEqual(fake.conntrack(), [], 'no conntrack cleanup after a failed restore');

  // The caller asks for a partial sync: the data plane does a full one anyway.
  const savesBefore = fake.saves();
  const svc1b = sp({ ...svc1, endpoints: [ep('10.180.0.1', 80)] });
  const t2 = tableOf(svc1b);
  await sync(dp, t1, t2);
  const text = fake.lastRestore();
  assert.ok(text.includes(`:${c1.svc} - [0:0]`) && text.includes(`:${c1.sep('10.180.0.1:80')} - [0:0]`));
  for (const ch of [c2.svc, c2.ext, c1.sep('10.180.0.2:80')]) assert.ok(text.includes(`-X ${ch}`), ch);
  assert.equal(fake.saves(), savesBefore + 2);
  assert.ok(log.lines.some((l) => l.includes('doing a full sync')));
});

test('a kernel-rejected transaction (fake kernel) leaves the previous rules', async () => {
  const { fake, dp } = setup();
  const t0 = tableOf(svc1);
  await sync(dp, new Map(), t0, true);
  const before = fake.kernel.save('nat');
  // Simulate a chain that vanished behind our back: the partial sync still jumps to it.
  fake.kernel.tables.get('nat')!.delete(c1.svc);
  const mangled = fake.kernel.save('nat');
  const t1 = tableOf(svc1, svc2);
  await assert.rejects(sync(dp, t0, t1), (e: unknown) => e instanceof DataPlaneError && e.code === 'EAPPLY');
  assert.equal(fake.kernel.save('nat'), mangled);
  assert.notEqual(mangled, before);
  await sync(dp, t0, t1); // forced full: repairs everything
  assert.ok(fake.kernel.chains('nat').includes(c1.svc));
});

test('stale UDP conntrack entries are cleared after a successful restore, as kube-proxy does', async () => {
  const { fake, dp, log } = setup();
  const dns = (eps: ReturnType<typeof ep>[]): ServicePort => sp({ namespace: 'kube-system', name: 'dns', portName: 'dns', protocol: 'UDP',
    port: 53, clusterIP: '172.30.0.10', externalIPs: ['192.168.99.10'], nodePort: 30053, endpoints: eps });
  const empty = tableOf(dns([]));
  await sync(dp, new Map(), empty, true);
  assert.deepEqual(fake.conntrack().map((a) => a.join(' ')), ['conntrack -L -p udp'], 'the first sync lists UDP entries to reconcile them, and flushes nothing');
  fake.calls = [];
  const one = tableOf(dns([ep('10.180.0.7', 53), ep('10.180.0.8', 53)]));
  await sync(dp, empty, one);
  assert.deepEqual(fake.conntrack().map((a) => a.join(' ')).sort(), [
    'conntrack -D --orig-dst 172.30.0.10 -p udp',
    'conntrack -D --orig-dst 192.168.99.10 -p udp',
    'conntrack -D -p udp --dport 30053',
  ]);
  fake.calls = [];
  await sync(dp, one, tableOf(dns([ep('10.180.0.7', 53)])));
  assert.deepEqual(fake.conntrack().map((a) => a.join(' ')).sort(), [
    'conntrack -D --orig-dst 172.30.0.10 --dst-nat 10.180.0.8 -p udp',
    'conntrack -D --orig-dst 192.168.99.10 --dst-nat 10.180.0.8 -p udp',
    'conntrack -D -p udp --dport 30053 --dst-nat 10.180.0.8',
  ]);
  const restoreAt = fake.calls.findIndex((c) => c.argv[0]!.endsWith('-restore'));
  const firstConntrack = fake.calls.findIndex((c) => c.argv[0] === 'conntrack');
  assert.ok(restoreAt < firstConntrack, 'conntrack runs after the restore');
  assert.ok(!log.lines.some((l) => l.includes('conntrack failed')), '"0 flow entries" is not an error');
  fake.calls = [];
  await sync(dp, one, tableOf(svc1)); // TCP changes never touch conntrack... but dns removed does
  assert.ok(fake.conntrack().some((a) => a.join(' ') === 'conntrack -D --orig-dst 172.30.0.10 -p udp'));
});

test('IPv6 service ports go to ip6tables, in their own transaction; without ip6tables they are skipped', async () => {
  const { fake, dp } = setup();
  const v6 = sp({ namespace: 'ns1', name: 'svc1', clusterIP: 'fd00::41', family: 6, endpoints: [ep('fd00:180::1', 80)] });
  const t = tableOf(svc1, v6);
  await sync(dp, new Map(), t, true);
  assert.ok(!fake.lastRestore().includes('fd00:'), 'no IPv6 address reaches iptables');
  const r6 = fake.restores6();
  assert.equal(r6.length, 1);
  assert.equal(r6[0]!.argv[0], 'ip6tables-nft-restore');
  const text6 = r6[0]!.input;
  assert.match(text6, /-d fd00::41 --dport 80 -j KUBE-SVC-/);
  assert.match(text6, /-j DNAT --to-destination \[fd00:180::1\]:80$/m);
  assert.match(text6, /--dst-type LOCAL ! -d ::1\/128 -j KUBE-NODEPORTS/);
  assert.ok(!text6.includes('10.180.'), 'no IPv4 address reaches ip6tables');
  const back = await dp.programmed();
  assert.deepEqual(back.map((f) => [f.service, f.address, f.backends]), [
    ['ns1/svc1:p80/TCP', '172.30.0.41:80', ['10.180.0.1:80', '10.180.0.2:80']],
    ['ns1/svc1:p80/TCP/v6', '[fd00::41]:80', ['[fd00:180::1]:80']],
  ], 'read back from both families');

  // A node without working ip6tables: IPv4 is programmed, IPv6 skipped with one info line.
  const fake2 = new FakeExec();
  fake2.ip6tablesMissing = true;
  const log2 = memoryLogger();
  const dp2 = new IptablesDataPlane({ config: CFG, logger: log2, exec: fake2.fn, backend: 'nft' });
  await dp2.apply(diff(new Map(), t), t, { full: true });
  assert.equal(fake2.restores().length, 1);
  assert.equal(log2.lines.filter((l) => l.includes('IPv6 service ports will not be programmed')).length, 1);
});

test('a family without service ports is never touched', async () => {
  const { fake, dp } = setup();
  await sync(dp, new Map(), tableOf(svc1), true);
  assert.equal(fake.restores6().length, 0, 'an IPv4-only cluster leaves ip6tables alone');
});

test('programmed() reads frontends and backends back from the nat table', async () => {
  const { dp } = setup();
  const lb = sp({ namespace: 'ns5', name: 'svc5', portName: '', clusterIP: '172.30.0.45', nodePort: 3002, loadBalancerIPs: ['5.6.7.8'],
    loadBalancerSourceRanges: ['203.0.113.0/25'], externalPolicyLocal: true,
    endpoints: [ep('10.180.0.3', 80, { local: true }), ep('10.180.1.3', 80)] });
  const t = tableOf(svc1, lb);
  await sync(dp, new Map(), t, true);
  const fe = await dp.programmed();
  const by = (kind: string, svc: string): string[] | undefined => fe.find((f) => f.kind === kind && f.service === svc)?.backends;
  assert.deepEqual(by('clusterIP', 'ns1/svc1:p80/TCP'), ['10.180.0.1:80', '10.180.0.2:80']);
  assert.deepEqual(by('clusterIP', 'ns5/svc5:/TCP'), ['10.180.0.3:80', '10.180.1.3:80']);
  // External traffic under eTP Local reaches the local endpoint only.
  assert.deepEqual(by('loadBalancerIP', 'ns5/svc5:/TCP'), ['10.180.0.3:80']);
  assert.deepEqual(by('nodePort', 'ns5/svc5:/TCP'), ['10.180.0.3:80']);
  assert.equal(fe.find((f) => f.kind === 'nodePort')?.address, '*:3002');
  assert.equal(fe.find((f) => f.kind === 'loadBalancerIP')?.address, '5.6.7.8:80');
});

test('cleanup removes jump rules and KUBE chains, keeps chains others still use', async () => {
  const { fake, dp, log } = setup();
  const t = tableOf(svc1, svc2);
  await sync(dp, new Map(), t, true);
  fake.kernel.restore('*nat\n:KUBE-KUBELET-CANARY - [0:0]\n:CNI-X - [0:0]\n-A CNI-X -j KUBE-MARK-MASQ\nCOMMIT\n');
  await dp.cleanup();
  const nat = fake.kernel.save('nat');
  const filter = fake.kernel.save('filter');
  assert.ok(!/KUBE-(SERVICES|NODEPORTS|POSTROUTING|SVC|SEP|EXT)/.test(nat), nat);
  assert.ok(!/KUBE-/.test(filter), filter);
  assert.ok(nat.includes(':KUBE-MARK-MASQ') && nat.includes(':KUBE-KUBELET-CANARY'));
  assert.ok(log.lines.some((l) => l.includes('KUBE-MARK-MASQ kept')));
  // Nothing left of ours: a second cleanup has nothing to restore.
  const n = fake.restores().length;
  fake.kernel.restore('*nat\n-D CNI-X -j KUBE-MARK-MASQ\nCOMMIT\n');
  await dp.cleanup();
  assert.equal(fake.restores().length, n + 1);
  assert.ok(!fake.kernel.save('nat').includes('KUBE-MARK-MASQ'));
  await dp.cleanup();
  assert.equal(fake.restores().length, n + 1);
});

function scripted(outputs: Record<string, string>): (argv: readonly string[]) => Promise<ExecResult> {
  return async (argv) => {
    const out = outputs[argv.join(' ')];
    return out === undefined ? { code: 1, stdout: '', stderr: 'no' } : { code: 0, stdout: out, stderr: '' };
  };
}

test('backend detection follows iptables-wrappers', async () => {
  const log = memoryLogger();
  assert.equal((await detectBackend(scripted({}), log)).backend, 'nft');
  assert.ok(log.lines.some((l) => l.includes('backend=nft') && l.includes('nft by default')));
  assert.equal((await detectBackend(scripted({ 'iptables-nft-save -t mangle': '*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n',
    'iptables-legacy-save': '*nat\n-A X -j Y\n-A X -j Y\nCOMMIT\n' }), log)).backend, 'nft');
  assert.equal((await detectBackend(scripted({ 'ip6tables-legacy-save': '*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n' }), log)).backend, 'legacy');
  assert.equal((await detectBackend(scripted({ 'iptables-legacy-save': '*nat\n-A X -j Y\nCOMMIT\n' }), log)).backend, 'legacy');
  assert.equal((await detectBackend(scripted({ 'iptables-legacy-save': '*nat\n-A X -j Y\nCOMMIT\n',
    'iptables-nft-save': '*nat\n-A X -j Y\nCOMMIT\n' }), log)).backend, 'nft', 'a tie goes to nft');
});

test('init fails with EINIT when the backend tools do not run', async () => {
  const dp = new IptablesDataPlane({ config: CFG, logger: memoryLogger(), backend: 'legacy',
    exec: async () => ({ code: 127, stdout: '', stderr: 'not found' }) });
  await assert.rejects(dp.init(), (e: unknown) => e instanceof DataPlaneError && e.code === 'EINIT');
});

test('nft backend: a large full sync stages the ports\' own chains in batches, then switches the top-level chains', async () => {
  const ports: ServicePort[] = [];
  for (let i = 0; i < 600; i++) {
    ports.push(sp({ namespace: 'big', name: `s${i}`, clusterIP: `172.31.${i >> 8}.${i & 255}`, endpoints: [ep(`10.181.${i >> 8}.${i & 255}`, 80)] }));
  }
  const t = tableOf(...ports);
  const { fake, dp } = setup();
  await dp.apply(diff(new Map(), t), t, { full: true });
  const r = fake.restores();
  assert.equal(r.length, 4, '3 staging batches of 250 ports, then the switch');
  for (const staged of r.slice(0, 3)) {
    assert.ok(!staged.input.includes(':KUBE-SERVICES '), 'staging never touches the top-level chains');
  }
  const last = r[3]!.input;
  assert.ok(last.includes(':KUBE-SERVICES - [0:0]'));
  assert.ok(!/^:KUBE-(SVC|SEP)-/m.test(last), 'the switch does not rewrite staged chains');
  const nat = fake.kernel.save('nat');
  assert.equal(nat.split('\n').filter((l) => l.startsWith(':KUBE-SEP-')).length, 600);
  assert.equal(nat.split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES') && l.includes('cluster IP')).length, 600);

  const legacy = new FakeExec();
  const ldp = new IptablesDataPlane({ config: CFG, logger: memoryLogger(), exec: legacy.fn, backend: 'legacy' });
  await ldp.apply(diff(new Map(), t), t, { full: true });
  assert.equal(legacy.restores().length, 1, 'legacy commits the whole table at once anyway: one transaction');
});

test('stale UDP conntrack commands are per family; IPv6 ones carry -f ipv6', () => {
  const udp6 = sp({ namespace: 'ns1', name: 'dns', clusterIP: 'fd00::53', family: 6, protocol: 'UDP', endpoints: [ep('fd00:180::5', 53)] });
  const gone = sp({ ...udp6, endpoints: [] });
  const changes = diff(tableOf(udp6), tableOf(gone));
  assert.deepEqual(staleConntrackCommands(changes, 4), []);
  assert.deepEqual(staleConntrackCommands(changes, 6), [['conntrack', '-D', '-f', 'ipv6', '--orig-dst', 'fd00::53', '--dst-nat', 'fd00:180::5', '-p', 'udp']]);
});

test('nft backend: cleanup of a large table runs in stages and leaves nothing', async () => {
  const ports: ServicePort[] = [];
  for (let i = 0; i < 900; i++) {
    ports.push(sp({ namespace: 'big', name: `s${i}`, clusterIP: `172.31.${i >> 8}.${i & 255}`, endpoints: [ep(`10.181.${i >> 8}.${i & 255}`, 80)] }));
  }
  const t = tableOf(...ports);
  const { fake, dp } = setup();
  await dp.apply(diff(new Map(), t), t, { full: true });
  const before = fake.restores().length;
  await dp.cleanup();
  const stages = fake.restores().slice(before);
  assert.ok(stages.length > 2, `staged: ${stages.length} transactions`);
  assert.match(stages[0]!.input, /^-D PREROUTING /m, 'the first stage cuts the jumps into our chains');
  assert.doesNotMatch(fake.kernel.save('nat') + fake.kernel.save('filter'), /KUBE-/);
});

test('after a restart, only UDP entries no serving endpoint answers are deleted (kube-proxy\'s conntrack reconciler), not every flow', async () => {
  const listing = [
    // DNATed to a serving endpoint: kept.
    'udp      17 28 src=10.180.1.5 dst=172.30.0.10 sport=40001 dport=53 src=10.180.0.7 dst=10.180.1.5 sport=53 dport=40001 mark=0 use=1',
    // DNATed to an endpoint that left while the agent was down: deleted.
    'udp      17 28 src=10.180.1.5 dst=172.30.0.10 sport=40002 dport=53 src=10.180.0.9 dst=10.180.1.5 sport=53 dport=40002 mark=0 use=1',
    // Not DNATed (sent while the service had no endpoint): deleted.
    'udp      17 20 src=10.180.1.6 dst=172.30.0.10 sport=40003 dport=53 [UNREPLIED] src=172.30.0.10 dst=10.180.1.6 sport=53 dport=40003 mark=0 use=1',
    // A NodePort flow to the serving endpoint: kept; another service's flow: not this port's business.
    'udp      17 28 src=198.18.0.9 dst=198.18.0.2 sport=40004 dport=30053 src=10.180.0.7 dst=198.18.0.2 sport=53 dport=61000 mark=0 use=1',
    'udp      17 28 src=10.180.1.5 dst=172.30.0.99 sport=40005 dport=53 src=172.30.0.99 dst=10.180.1.5 sport=53 dport=40005 mark=0 use=1',
    'tcp      6 117 TIME_WAIT src=10.180.1.5 dst=172.30.0.10 sport=40006 dport=53 src=10.180.0.9 dst=10.180.1.5 sport=53 dport=40006 [ASSURED] mark=0 use=1',
    'conntrack v1.4.7 (conntrack-tools): 6 flow entries have been shown.',
  ].join('\n');
  const dns = sp({ namespace: 'kube-system', name: 'dns', portName: 'dns', protocol: 'UDP', port: 53, clusterIP: '172.30.0.10', nodePort: 30053, endpoints: [ep('10.180.0.7', 53)] });
  const entries = parseUdpEntries(listing);
  assert.equal(entries.length, 5, 'the TCP line and the summary are not UDP entries');
  assert.deepEqual(staleUdpEntries(entries, [dns]).map((e) => e.sport), [40002, 40003]);
  const calls: string[][] = [];
  const exec: ExecFn = async (argv) => {
    calls.push([...argv]);
    return { code: 0, stdout: argv[1] === '-L' ? listing : '', stderr: '' };
  };
  assert.equal(await reconcileUdpConntrack(exec, memoryLogger(), [dns]), true);
  assert.deepEqual(calls.map((a) => a.join(' ')), [
    'conntrack -L -p udp',
    'conntrack -D -p udp --orig-src 10.180.1.5 --orig-dst 172.30.0.10 --sport 40002 --dport 53',
    'conntrack -D -p udp --orig-src 10.180.1.6 --orig-dst 172.30.0.10 --sport 40003 --dport 53',
  ]);
});
