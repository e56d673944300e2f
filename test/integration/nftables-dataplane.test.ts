// The nftables data plane against the real nft and kernel, inside throw-away network namespaces
// (rd-<random>-nft and rd-<random>-nfr: loopback and a veth pair with both ends inside, no
// default route; nothing can leave the machine). Root only. The root namespace's ruleset is
// never touched.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { DataPlaneError } from '../../src/dataplane/dataplane.js';
import { NftablesDataPlane } from '../../src/dataplane/nftables/index.js';
import { diff } from '../../src/model/diff.js';
import type { ServicePort, ServiceTable } from '../../src/model/types.js';
import { memoryLogger } from '../../src/observe/log.js';
import { exec, execOk } from '../../src/util/exec.js';
import type { ExecOptions } from '../../src/util/exec.js';
import { CFG, ep, sp, tableOf } from '../support/iptables.js';
import { createIPv6Scratch, removeScratch, startTcpServer, tcpConnect } from '../support/netns-tcp.js';

const isRoot = process.getuid?.() === 0;
const run = randomBytes(4).toString('hex');

type Json = Record<string, unknown>;

/**
 * `nft -j list table ip rudder`, canonical: no handles, elements sorted (hash sets list them in
 * any order), objects sorted by kind and name, rules in order. Dynamic affinity contents ignored.
 */
async function canonical(ns: string): Promise<string> {
  const r = await exec(['ip', 'netns', 'exec', ns, 'nft', '-j', 'list', 'table', 'ip', 'rudder']);
  if (r.code !== 0) return `(no table: ${r.stderr.trim()})`;
  const out: string[] = [];
  for (const o of (JSON.parse(r.stdout) as { nftables: Json[] }).nftables) {
    const [kind, v] = Object.entries(o)[0] as [string, Json];
    if (kind === 'metainfo') continue;
    const { handle: _h, elem, ...rest } = v;
    const sorted = Array.isArray(elem) && !(rest['flags'] as string[] | undefined)?.includes('timeout')
      ? elem.map((e) => JSON.stringify(e)).sort() : [];
    out.push(`${kind} ${rest['chain'] ?? ''} ${JSON.stringify(rest)} ${sorted.join(' ')}`);
  }
  // Rules keep their order within a chain (a stable sort on the chain name only).
  return out.map((l, i) => ({ l, i })).sort((a, b) => {
    const ka = a.l.startsWith('rule ') ? a.l.split(' ')[1]! : a.l;
    const kb = b.l.startsWith('rule ') ? b.l.split(' ')[1]! : b.l;
    return ka < kb ? -1 : ka > kb ? 1 : a.i - b.i;
  }).map((x) => x.l).join('\n');
}

function nsTools(ns: string): { nsExec: (argv: readonly string[], opts?: ExecOptions) => ReturnType<typeof exec> } {
  return { nsExec: (argv, opts) => exec(['ip', 'netns', 'exec', ns, ...argv], opts) };
}

/** The table a fresh data plane writes for `t`, in the reference namespace. */
async function referenceFor(ns: string, t: ServiceTable): Promise<string> {
  const dp = new NftablesDataPlane({ config: CFG, logger: memoryLogger(), exec: nsTools(ns).nsExec });
  await dp.cleanup();
  await dp.apply(diff(new Map(), t), t, { full: true });
  return canonical(ns);
}

const svc1 = sp({ namespace: 'ns1', name: 'svc1', clusterIP: '172.30.0.41', endpoints: [ep('10.180.0.1', 8080)] });
const svc2 = sp({ namespace: 'ns2', name: 'svc2', clusterIP: '172.30.0.42', nodePort: 30080, externalPolicyLocal: true,
  healthCheckNodePort: 30000, loadBalancerIPs: ['192.0.2.10'], loadBalancerSourceRanges: ['198.51.100.0/24'],
  endpoints: [ep('10.180.0.1', 8080, { local: true }), ep('10.180.1.1', 8080)] });
const svc3 = sp({ namespace: 'ns3', name: 'svc3', clusterIP: '172.30.0.43' }); // no endpoints: reject
const svc4 = sp({ namespace: 'ns4', name: 'dns', portName: 'dns', protocol: 'UDP', port: 53, clusterIP: '172.30.0.44',
  affinityTimeoutSeconds: 60, endpoints: [ep('10.180.0.1', 5353), ep('10.180.2.1', 5353)] });

describe('nftables data plane in a network namespace', { skip: isRoot ? false : 'needs root' }, () => {
  const ns = `rd-${run}-nft`;
  const ref = `rd-${run}-nfr`;
  const { nsExec } = nsTools(ns);
  const log = memoryLogger();
  const dp = new NftablesDataPlane({ config: CFG, logger: log, exec: nsExec });
  let server: ChildProcess | undefined;
  let t1: ServiceTable = new Map();

  before(async () => {
    for (const n of [ns, ref]) {
      await execOk(['ip', 'netns', 'add', n]);
      await execOk(['ip', '-n', n, 'link', 'set', 'lo', 'up']);
    }
    // The endpoint address lives on lo. The service range routes to a veth pair whose both ends
    // stay in the namespace (a route is needed for local connections to traverse nat OUTPUT, and
    // the kernel sends no ICMP error for a packet routed to lo, so rejects need a real device).
    await execOk(['ip', '-n', ns, 'addr', 'add', '10.180.0.1/32', 'dev', 'lo']);
    await execOk(['ip', '-n', ns, 'link', 'add', 'rd0', 'type', 'veth', 'peer', 'name', 'rd1']);
    for (const dev of ['rd0', 'rd1']) await execOk(['ip', '-n', ns, 'link', 'set', dev, 'up']);
    await execOk(['ip', '-n', ns, 'addr', 'add', '192.168.77.1/24', 'dev', 'rd0']);
    await execOk(['ip', '-n', ns, 'route', 'add', '172.30.0.0/16', 'via', '192.168.77.2', 'dev', 'rd0']);
  });

  after(async () => {
    if (server !== undefined && server.exitCode === null) server.kill('SIGKILL');
    for (const n of [ns, ref]) await exec(['ip', 'netns', 'del', n]);
  });

  test('a full apply programs the table and reads back what it programmed', async () => {
    await dp.init();
    t1 = tableOf(svc1, svc2, svc3, svc4);
    await dp.apply(diff(new Map(), t1), t1, { full: true });
    const fe = await dp.programmed();
    assert.deepEqual(fe.find((f) => f.kind === 'clusterIP' && f.service === 'ns1/svc1:p80/TCP')?.backends, ['10.180.0.1:8080']);
    assert.deepEqual(fe.find((f) => f.kind === 'loadBalancerIP')?.backends, ['10.180.0.1:8080']);
    assert.deepEqual(fe.find((f) => f.kind === 'nodePort')?.address, '*:30080');
    assert.deepEqual(fe.find((f) => f.service === 'ns4/dns:dns/UDP')?.backends, ['10.180.0.1:5353', '10.180.2.1:5353']);
    assert.equal(fe.some((f) => f.service === 'ns3/svc3:p80/TCP'), false, 'no endpoints: nothing to read back');
    // A second full sync flushes and refills in place and changes nothing.
    const text = await canonical(ns);
    await dp.apply([], t1, { full: true });
    assert.doesNotMatch(dp.lastTransaction, /delete table/);
    assert.equal(await canonical(ns), text);
    assert.equal(text, await referenceFor(ref, t1));
  });

  test('connections: the ClusterIP DNATs to the endpoint; a service without endpoints and an unknown port are refused', async () => {
    server = await startTcpServer(ns, '10.180.0.1', 8080, 'pong');
    const connect = (ip: string, port: number) => tcpConnect(ns, ip, port);
    assert.equal((await connect('172.30.0.41', 80)).stdout, 'pong');
    assert.match((await connect('172.30.0.43', 80)).stderr, /ECONNREFUSED/, 'no endpoints: rejected');
    assert.match((await connect('172.30.0.41', 81)).stderr, /ECONNREFUSED/, 'unknown port of a ClusterIP: rejected');
  });

  test('a partial apply changes only the changed service\'s elements and ends where a full apply would', async () => {
    const svc2b = sp({ ...svc2, endpoints: [ep('10.180.0.1', 8080, { local: true }), ep('10.180.2.1', 8080), ep('10.180.3.1', 8080)] });
    const t2 = tableOf(svc1, svc2b, svc3, svc4);
    await dp.apply(diff(t1, t2), t2, { full: false });
    assert.doesNotMatch(dp.lastTransaction, /172\.30\.0\.41|flush map|flush set|delete table/, dp.lastTransaction);
    assert.match(dp.lastTransaction, /^add element ip rudder ip-eps-3 \{ 172\.30\.0\.42 \. tcp \. 80 \. 0 : 10\.180\.0\.1 \. 8080/m);
    assert.equal(await canonical(ns), await referenceFor(ref, t2));
    t1 = t2;
  });

  test('random partial syncs on the real kernel end where a full sync does', async () => {
    let seed = 7;
    const r = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
    const port = (i: number): ServicePort => sp({
      namespace: `r${i}`, name: `s${i}`, clusterIP: `172.30.1.${i}`, protocol: pick(['TCP', 'UDP', 'SCTP'] as const),
      nodePort: r() < 0.4 ? 31000 + i : 0, externalIPs: r() < 0.3 ? [pick(['192.0.2.1', '192.0.2.2'])] : [],
      loadBalancerIPs: r() < 0.3 ? [`198.18.9.${i}`] : [], loadBalancerSourceRanges: r() < 0.5 ? ['198.51.100.0/24', '10.0.0.0/8'] : [],
      affinityTimeoutSeconds: r() < 0.2 ? 30 : 0, externalPolicyLocal: r() < 0.4, internalPolicyLocal: r() < 0.2,
      endpoints: [...new Map(Array.from({ length: Math.floor(r() * 4) }, (_, k) => ep(`10.181.${k}.${1 + Math.floor(r() * 3)}`, 80,
        { local: r() < 0.5, ready: r() < 0.85 })).map((e) => [e.id, e])).values()],
    });
    const ports = new Map<number, ServicePort>();
    let prev = t1;
    for (let step = 0; step < 25; step++) {
      for (let k = 0; k < 3; k++) {
        const i = 1 + Math.floor(r() * 8);
        if (ports.has(i) && r() < 0.3) ports.delete(i);
        else ports.set(i, port(i));
      }
      const next = tableOf(svc1, svc3, ...ports.values());
      await dp.apply(diff(prev, next), next, { full: false });
      assert.equal(await canonical(ns), await referenceFor(ref, next), `step ${step}`);
      prev = next;
    }
    t1 = prev;
  });

  test('a transaction the kernel rejects leaves the previous ruleset; the next (full) sync repairs', async () => {
    const before = await canonical(ns);
    const bad = sp({ namespace: 'ns9', name: 'bad', clusterIP: '10.0.0.300', endpoints: [ep('10.180.0.9', 80)] });
    const t2 = tableOf(...[...t1.values()].flat(), bad);
    await assert.rejects(dp.apply(diff(t1, t2), t2, { full: false }), (e: unknown) => {
      assert.ok(e instanceof DataPlaneError, String(e));
      assert.equal(e.code, 'EAPPLY');
      assert.match(e.detail ?? '', /10\.0\.0\.300/);
      return true;
    });
    assert.equal(await canonical(ns), before);
    await dp.apply(diff(t2, t1), t1, { full: false });
    assert.match(dp.lastTransaction, /^flush map ip rudder service-ips$/m, 'the retry is a full sync');
    assert.equal(await canonical(ns), before);
  });

  test('cleanup deletes the table ip rudder and kube-proxy\'s own (ip kube-proxy), and nothing else', async () => {
    await execOk(['ip', 'netns', 'exec', ns, 'nft', 'add table ip keepme; add chain ip keepme c; add table ip kube-proxy; add chain ip kube-proxy services']);
    await dp.cleanup();
    const rs = (await execOk(['ip', 'netns', 'exec', ns, 'nft', 'list', 'ruleset'])).stdout;
    assert.doesNotMatch(rs, /rudder|kube-proxy/);
    assert.match(rs, /table ip keepme/);
    await dp.cleanup(); // idempotent
    assert.deepEqual(await dp.programmed(), []);
  });
});

describe('IPv6 service ports in the table ip6 rudder, in a network namespace', { skip: isRoot ? false : 'needs root' }, () => {
  const ns = `rd-${run}-nft6`;
  const { nsExec } = nsTools(ns);
  const dp = new NftablesDataPlane({ config: { ...CFG, clusterCIDRs: ['10.0.0.0/8', 'fd00:180::/48'] }, logger: memoryLogger(), exec: nsExec });
  let server: ChildProcess | undefined;

  before(() => createIPv6Scratch(ns));
  after(() => removeScratch(ns, server));

  const listTable = async (family: string): Promise<string> => (await execOk(['ip', 'netns', 'exec', ns, 'nft', 'list', 'table', family, 'rudder'])).stdout;
  const connect = (ip: string, port: number) => tcpConnect(ns, ip, port);

  test('a connection to an IPv6 ClusterIP reaches its endpoint through the DNAT; the tables stay apart; cleanup removes both', async () => {
    const v6 = sp({ namespace: 'ns1', name: 'svc6', clusterIP: 'fd00:30::41', family: 6, endpoints: [ep('fd00:180::1', 8080)] });
    const v4 = sp({ namespace: 'ns1', name: 'svc4', clusterIP: '172.30.0.44', endpoints: [ep('10.180.0.4', 8080)] });
    const t = tableOf(v4, v6);
    await dp.apply(diff(new Map(), t), t, { full: true });
    const table6 = await listTable('ip6');
    const table4 = await listTable('ip');
    assert.match(table6, /fd00:30::41 \. tcp \. 80/);
    assert.match(table6, /dnat ip6 to ip6 daddr \. meta l4proto \. th dport \. numgen random mod 1 map @ip-eps-1/);
    assert.doesNotMatch(table6, /172\.30\.0\.44|10\.180\.0\.4/);
    assert.match(table4, /172\.30\.0\.44 \. tcp \. 80/);
    assert.doesNotMatch(table4, /fd00:/);

    server = await startTcpServer(ns, 'fd00:180::1', 8080, 'pong6');
    const client = await connect('fd00:30::41', 80);
    assert.equal(client.stdout, 'pong6', client.stderr);
    assert.deepEqual((await dp.programmed()).map((f) => f.address).sort(), ['172.30.0.44:80', '[fd00:30::41]:80']);
    assert.deepEqual((await dp.programmed()).find((f) => f.address === '[fd00:30::41]:80')?.backends, ['[fd00:180::1]:8080']);

    // A partial sync (a second IPv6 port, with affinity) and a later full sync (flush and refill
    // in place) on the real kernel: both ports still reach the endpoint.
    const v6b = sp({ namespace: 'ns2', name: 'svc6b', clusterIP: 'fd00:30::42', family: 6, port: 81, affinityTimeoutSeconds: 30,
      endpoints: [ep('fd00:180::1', 8080)] });
    const t2 = tableOf(v4, v6, v6b);
    await dp.apply(diff(t, t2), t2, { full: false });
    assert.match(dp.lastTransaction6, /^add element ip6 rudder service-ips \{ fd00:30::42 \. tcp \. 81 /m);
    assert.doesNotMatch(dp.lastTransaction6, /delete table|flush/);
    assert.equal((await connect('fd00:30::42', 81)).stdout, 'pong6');
    await dp.apply([], t2, { full: true });
    assert.match(dp.lastTransaction6, /^flush map ip6 rudder service-ips$/m);
    assert.equal((await connect('fd00:30::41', 80)).stdout, 'pong6');
    assert.equal((await connect('fd00:30::42', 81)).stdout, 'pong6');

    await dp.cleanup();
    const tables = (await execOk(['ip', 'netns', 'exec', ns, 'nft', 'list', 'tables'])).stdout;
    assert.doesNotMatch(tables, /rudder/);
  });
});
