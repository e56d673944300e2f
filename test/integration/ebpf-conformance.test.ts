// The packet-flow conformance cases against the eBPF socket load balancer as loaded in the kernel.
// Every fixture (test/conformance, ../shared/conformance) is loaded as `rudder trace` loads it and
// programmed into the real maps; every case whose client is a pod or the node itself is then
// played with real connect()/sendto() calls from a process bound to the case's source, and what
// the socket saw is held against trace(): forward -> only backends trace lists, reject ->
// ECONNREFUSED, drop -> EHOSTUNREACH (EPERM for loadBalancerSourceRanges), none -> the destination
// itself. Beyond the fixtures' own cases, every frontend is probed from a pod, from the node and
// from its own endpoints (hairpin), and each ClusterIP on a port no service uses.
//
// The socket programs tell the node from its pods by network namespace, not by address: the pod
// cases run under a plane whose host namespace is none, the node cases under a second plane on the
// same pins (it adopts the maps and swaps the programs) that takes the scratch namespace for the
// node's own. Every address of a fixture (sources, destinations, endpoints) sits on the scratch
// namespace's lo, with a listener on every endpoint and every destination that answers with its
// own "ip:port": a connection the programs leave alone reaches the destination itself, one they
// translate names its backend, and an error can only come from a program. Clients sent elsewhere
// (they need the per-packet path, not built yet) and SCTP are counted and skipped. Root only.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, openSync } from 'node:fs';
import { loadTable } from '../../src/cli/load.js';
import { EbpfDataPlane } from '../../src/dataplane/ebpf/index.js';
import { inNetns, netnsCookie } from '../../src/dataplane/ebpf/libbpf.js';
import { diff } from '../../src/model/diff.js';
import { classifySource, detectsLocal, frontendKey, sourceAllowed, type FrontendRecord } from '../../src/model/frontends.js';
import { formatIP, ipFamily, parseCIDR } from '../../src/model/ip.js';
import { nodeAddresses } from '../../src/model/nodeport-addresses.js';
import { indexTable, trace, type TraceIndex, type TraceResult } from '../../src/model/trace.js';
import { allPorts, type ProxyConfig, type ServiceTable } from '../../src/model/types.js';
import { memoryLogger } from '../../src/observe/log.js';
import { allFixtureFiles, flagsOf, readFixture, ROOT, type Case } from '../support/conformance-fixtures.js';
import { createEbpfScratch, type EbpfScratch } from '../support/ebpf-scratch.js';

const isRoot = process.getuid?.() === 0;
/** Connections per forward check: enough to see a wrong backend, not to require every one. */
const FORWARD_ATTEMPTS = 8;
/**
 * Where the node and its pods get different backends, connections per check: enough that missing
 * every backend the other side would not get is never luck (at most (2/3)^48 with three backends).
 */
const TELLING_ATTEMPTS = 48;
const OTHER_ATTEMPTS = 2;
/** Checks per client process (the list travels in its argv). */
const BATCH = 120;
/** A host namespace cookie no namespace has: every socket of the pod plane is a pod's. */
const NO_NETNS = 0xffff_ffff_ffff_fff0n;

type Plane = 'pod' | 'node';
type Proto = 'TCP' | 'UDP';

interface Want {
  verdict: TraceResult['verdict'];
  backends: readonly string[];
  rule: string;
  affinity: number;
}

interface Check {
  origin: 'case' | 'probe';
  name: string;
  plane: Plane;
  src: string;
  dst: string;
  port: number;
  proto: Proto;
  want: Want;
  /**
   * Backends only this plane's sockets may reach (a socket of the other plane would not): one of
   * them must be seen, or the programs could be serving the other plane's path. Empty when the
   * two paths agree, differ in verdict, or affinity pins one backend.
   */
  telling: readonly string[];
}

interface Attempt {
  data?: string;
  error?: string;
  ms?: number;
}

const idOf = (ip: string, port: number): string => (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);
const wantOf = (r: TraceResult): Want => ({ verdict: r.verdict, backends: r.backends, rule: r.rule, affinity: r.affinityTimeoutSeconds ?? 0 });
const planeOf = (src: string, cfg: ProxyConfig): Plane | null => {
  const cls = classifySource(src, cfg);
  return cls === 'fromPod' ? 'pod' : cls === 'fromNode' ? 'node' : null;
};

/** A pod address inside the family's cluster CIDR (x.y.1.5, or <prefix>:1::5), or null. */
function podAddress(cfg: ProxyConfig, family: 4 | 6): string | null {
  const c = cfg.clusterCIDRs.map(parseCIDR).find((p) => p !== null && p.family === family);
  if (c === undefined || c === null) return null;
  return formatIP({ family, value: c.network + (family === 4 ? 0x105n : (1n << 64n) + 5n) });
}

/** The fixture's own cases a socket in a pod or the node can play; the others counted by reason. */
function fixtureChecks(cases: readonly Case[], table: ServiceTable, cfg: ProxyConfig, index: TraceIndex) {
  const checks: Check[] = [];
  const skipped = { external: 0, sctp: 0, mixedFamily: 0 };
  for (const c of cases) {
    const plane = planeOf(c.src, cfg);
    if (c.proto === 'SCTP') skipped.sctp++;
    else if (plane === null) skipped.external++;
    else if (ipFamily(c.src) !== ipFamily(c.dst)) skipped.mixedFamily++;
    else {
      const want = wantOf(trace(table, cfg, { src: c.src, dst: c.dst, port: c.port, protocol: c.proto }, index));
      checks.push({ origin: 'case', name: c.name, plane, src: c.src, dst: c.dst, port: c.port, proto: c.proto, want, telling: [] });
    }
  }
  return { checks, skipped };
}

/**
 * Every programmed frontend from a pod, from each node address and from its own endpoints
 * (hairpin). Where a family has no cluster CIDR, kube-proxy cannot tell a pod from an outside
 * client: its endpoints are played from pods all the same, and trace answers for an outside client.
 */
function probeChecks(table: ServiceTable, cfg: ProxyConfig, index: TraceIndex): Check[] {
  const out: Check[] = [];
  const add = (name: string, src: string, dst: string, port: number, proto: Proto, plane: Plane, want?: Want): void => {
    out.push({ origin: 'probe', name, plane, src, dst, port, proto, want: want ?? wantOf(trace(table, cfg, { src, dst, port, protocol: proto }, index)), telling: [] });
  };
  const node = nodeAddresses(cfg);
  const records = [...index.records(cfg).values()].filter((r): r is FrontendRecord & { protocol: Proto } => r.protocol !== 'SCTP');
  for (const rec of records) {
    const srcs = new Map<string, Plane>();
    const pod = podAddress(cfg, rec.family);
    if (pod !== null) srcs.set(pod, 'pod');
    for (const ip of node) if (ipFamily(ip) === rec.family && classifySource(ip, cfg) === 'fromNode') srcs.set(ip, 'node');
    for (const e of rec.service.endpoints) {
      if (srcs.has(e.ip)) continue;
      const plane = planeOf(e.ip, cfg) ?? (detectsLocal(cfg, rec.family) ? null : 'pod');
      if (plane !== null) srcs.set(e.ip, plane);
    }
    for (const [src, plane] of srcs) add(`${rec.kind} ${idOf(rec.ip, rec.port)}/${rec.protocol} of ${rec.service.id} from ${src}`, src, rec.ip, rec.port, rec.protocol, plane);
    // The node looping back through its own LB IP arrives with that IP as source: kube-proxy lets
    // it through the firewall when the primary node IP is in range, and it gets the node's path.
    if (rec.sourceRanges.length > 0) {
      const p = rec.fromNode;
      const want: Want = sourceAllowed(rec, rec.ip)
        ? { verdict: p.verdict, backends: p.endpoints, rule: p.rule, affinity: p.verdict === 'forward' ? rec.affinityTimeoutSeconds : 0 }
        : { verdict: 'drop', backends: [], rule: 'source-range', affinity: 0 };
      add(`loadBalancerIP ${idOf(rec.ip, rec.port)} of ${rec.service.id} from the node bound to the LB IP itself`, rec.ip, rec.ip, rec.port, rec.protocol, 'node', want);
    }
  }
  const seen = new Set<string>();
  for (const sp of allPorts(table)) {
    const pod = podAddress(cfg, sp.family);
    if (pod === null || seen.has(sp.clusterIP)) continue;
    seen.add(sp.clusterIP);
    for (const proto of ['TCP', 'UDP'] as const) {
      if (!index.records(cfg).has(frontendKey(sp.clusterIP, 9, proto))) add(`ClusterIP ${sp.clusterIP} on unused port 9/${proto} from ${pod}`, pod, sp.clusterIP, 9, proto, 'pod');
    }
  }
  return out;
}

/** Fills in `telling`: the backends of a forward check that the other plane's path lacks. */
function markTelling(checks: Check[], cfg: ProxyConfig, index: TraceIndex): void {
  for (const c of checks) {
    const rec = index.records(cfg).get(frontendKey(c.dst, c.port, c.proto));
    if (rec === undefined || c.want.verdict !== 'forward' || c.want.affinity > 0) continue;
    const other = c.plane === 'node' ? rec.fromPod : rec.fromNode;
    if (other.verdict === 'forward') c.telling = c.want.backends.filter((b) => !other.endpoints.includes(b));
  }
}

// ---- the scratch namespace's processes ----------------------------------------------------------

interface Listener { ip: string; port: number; proto: Proto }

/** One process listening on every ip:port, answering each connection or datagram with its id. */
const serverScript = (ls: readonly Listener[]): string => `
const net = require('net'), dgram = require('dgram'); const ls = ${JSON.stringify(ls)}; let left = ls.length;
const up = () => { if (--left === 0) console.log('ready'); };
const die = (l, e) => { console.error('listen ' + JSON.stringify(l) + ': ' + e.message); process.exit(1); };
for (const l of ls) {
  const id = l.ip.includes(':') ? '[' + l.ip + ']:' + l.port : l.ip + ':' + l.port;
  if (l.proto === 'TCP') { const s = net.createServer((c) => { c.on('error', () => {}); c.end(id); }); s.on('error', (e) => die(l, e)); s.listen(l.port, l.ip, up); }
  else { const s = dgram.createSocket(l.ip.includes(':') ? 'udp6' : 'udp4'); s.on('error', (e) => die(l, e)); s.on('message', (m, r) => s.send(id, r.port, r.address)); s.bind(l.port, l.ip, up); }
}
if (ls.length === 0) console.log('ready');`;

/** Plays checks [{src, dst, port, proto, n}], each attempt from a fresh socket bound to src; prints [[Attempt]]. */
const clientScript = (cs: ReadonlyArray<{ src: string; dst: string; port: number; proto: Proto; n: number }>): string => `
const net = require('net'), dgram = require('dgram'); const cs = ${JSON.stringify(cs)};
const tcp = (c) => new Promise((res) => { const t0 = Date.now(); let data = ''; let done = false;
  const fin = (r) => { if (!done) { done = true; clearTimeout(t); s.destroy(); res(r); } };
  const s = net.connect({ host: c.dst, port: c.port, localAddress: c.src });
  s.on('data', (d) => { data += d; }); s.on('end', () => fin({ data }));
  s.on('error', (e) => fin({ error: e.code, ms: Date.now() - t0 })); const t = setTimeout(() => fin({ error: 'TIMEOUT' }), 2000); });
const udp = (c) => new Promise((res) => { const t0 = Date.now(); let done = false;
  const s = dgram.createSocket(c.dst.includes(':') ? 'udp6' : 'udp4');
  const fin = (r) => { if (!done) { done = true; clearTimeout(t); try { s.close(); } catch {} res(r); } };
  s.on('message', (m) => fin({ data: String(m) })); s.on('error', (e) => fin({ error: e.code, ms: Date.now() - t0 }));
  s.bind({ address: c.src, port: 0 }, () => s.send('?', c.port, c.dst, (e) => { if (e) fin({ error: e.code, ms: Date.now() - t0 }); }));
  const t = setTimeout(() => fin({ error: 'TIMEOUT' }), 700); });
const play = async (c) => { const out = []; for (let i = 0; i < c.n; i++) out.push(await (c.proto === 'TCP' ? tcp(c) : udp(c))); return out; };
(async () => { const res = new Array(cs.length); let next = 0;
  const worker = async () => { while (next < cs.length) { const i = next++; res[i] = await play(cs[i]); } };
  await Promise.all(Array.from({ length: 16 }, worker)); console.log(JSON.stringify(res)); })();`;

async function play(s: EbpfScratch, checks: readonly Check[]): Promise<Attempt[][]> {
  const out: Attempt[][] = [];
  for (let i = 0; i < checks.length; i += BATCH) {
    const batch = checks.slice(i, i + BATCH).map((c) => ({ src: c.src, dst: c.dst, port: c.port, proto: c.proto, n: c.telling.length > 0 ? TELLING_ATTEMPTS : c.want.verdict === 'forward' ? FORWARD_ATTEMPTS : OTHER_ATTEMPTS }));
    const r = await s.node(clientScript(batch), 60_000);
    assert.equal(r.code, 0, `client exited ${r.code}: ${r.stderr}`);
    out.push(...(JSON.parse(r.stdout.trim()) as Attempt[][]));
  }
  return out;
}

// ---- judging --------------------------------------------------------------------------------------

const show = (a: Attempt): string => a.data ?? `${a.error}${a.ms !== undefined && a.ms >= 100 ? ` after ${a.ms} ms` : ''}`;

/** What is wrong with the attempts of one check, or null. */
function judge(c: Check, got: readonly Attempt[]): string | null {
  const w = c.want;
  const counts = new Map<string, number>();
  for (const a of got) counts.set(show(a), (counts.get(show(a)) ?? 0) + 1);
  const bad = (why: string): string => `${why}; got ${[...counts].map(([k, n]) => (n > 1 ? `${k} x${n}` : k)).join(', ')}`;
  switch (w.verdict) {
    case 'forward': {
      if (!got.every((a) => a.data !== undefined && w.backends.includes(a.data))) return bad(`want forward to one of ${w.backends.join(', ')}`);
      if (w.affinity > 0 && new Set(got.map((a) => a.data)).size > 1) return bad(`want ClientIP affinity (${w.affinity} s): one backend for every connection`);
      if (c.telling.length > 0 && !got.some((a) => c.telling.includes(a.data!))) return bad(`want some connection to ${c.telling.join(', ')}, which only a ${c.plane} socket may reach`);
      return null;
    }
    case 'reject':
      return got.every((a) => a.error === 'ECONNREFUSED') ? null : bad(`want reject (${w.rule}): ECONNREFUSED`);
    case 'drop': {
      const code = w.rule === 'source-range' ? 'EPERM' : 'EHOSTUNREACH';
      return got.every((a) => a.error === code) ? null : bad(`want drop (${w.rule}): ${code}`);
    }
    case 'none':
      return got.every((a) => a.data === idOf(c.dst, c.port)) ? null : bad(`want none: untranslated, answered by ${idOf(c.dst, c.port)} itself`);
  }
}

// ---- the suite ------------------------------------------------------------------------------------

interface Tally { file: string; cases: { pass: number; fail: number }; probes: { pass: number; fail: number }; skipped: { external: number; sctp: number; mixedFamily: number }; ms: number }

const tallies: Tally[] = [];
const live = new Set<{ s: EbpfScratch; planes: EbpfDataPlane[] }>();

async function teardown(run: { s: EbpfScratch; planes: EbpfDataPlane[] }): Promise<void> {
  live.delete(run);
  for (const p of run.planes.reverse()) await p.cleanup();
  await run.s.remove();
}

describe('conformance cases against the eBPF socket load balancer in the kernel', { skip: !isRoot && 'needs root' }, () => {
  after(async () => {
    for (const run of [...live]) await teardown(run);
    const line = (t: Tally): string => `${t.file.padEnd(44)} cases ${t.cases.pass} pass ${t.cases.fail} fail | probes ${t.probes.pass} pass ${t.probes.fail} fail | skipped ${t.skipped.external} external-client, ${t.skipped.sctp} SCTP, ${t.skipped.mixedFamily} mixed-family | ${t.ms} ms`;
    if (tallies.length > 0) console.log(['ebpf conformance:', ...tallies.map(line)].join('\n  '));
  });

  for (const file of allFixtureFiles()) {
    const label = file.slice(ROOT.length - 4);
    test(label, async (t) => {
      const t0 = Date.now();
      const f = readFixture(file);
      const { table, config } = loadTable(f.manifests, flagsOf(f), memoryLogger());
      const index = indexTable(table);
      const { checks: own, skipped } = fixtureChecks(f.cases, table, config, index);
      const checks = [...own, ...probeChecks(table, config, index)];
      markTelling(checks, config, index);

      const listeners = new Map<string, Listener>();
      const listen = (ip: string, port: number, proto: Proto): void => void listeners.set(`${proto} ${idOf(ip, port)}`, { ip, port, proto });
      for (const sp of allPorts(table)) if (sp.protocol !== 'SCTP') for (const e of sp.endpoints) listen(e.ip, e.port, sp.protocol);
      for (const c of checks) listen(c.dst, c.port, c.proto);
      const addrs = new Set([...listeners.values()].map((l) => l.ip));
      for (const c of checks) addrs.add(c.src);
      for (const a of addrs) assert.ok(!a.startsWith('127.') && a !== '::1', `${label}: ${a} is a loopback address`);

      const s = await createEbpfScratch([...addrs]);
      const run = { s, planes: [] as EbpfDataPlane[] };
      live.add(run);
      try {
        await s.serve(serverScript([...listeners.values()]));
        const results = new Map<Check, Attempt[]>();
        const nsFd = openSync(`/run/netns/${s.ns}`, 'r');
        let scratchCookie: bigint;
        try {
          scratchCookie = inNetns(nsFd, netnsCookie);
        } finally {
          closeSync(nsFd);
        }
        for (const [plane, cookie] of [['pod', NO_NETNS], ['node', scratchCookie]] as const) {
          const dp = new EbpfDataPlane({ config, logger: memoryLogger(), cgroupPath: s.cgroup, pinPath: s.pinPath, hostNetnsCookie: cookie, reconcileIntervalMs: 3_600_000 });
          run.planes.push(dp);
          await dp.init();
          await dp.apply(diff(new Map(), table), table, { full: true });
          const mine = checks.filter((c) => c.plane === plane);
          const got = await play(s, mine);
          mine.forEach((c, i) => results.set(c, got[i] ?? []));
        }

        // `rudder lab clean` elsewhere on the machine removes every lab run, this one included.
        const gone = [s.pinPath, s.cgroup, `/run/netns/${s.ns}`].filter((x) => !existsSync(x));
        assert.deepEqual(gone, [], `${label}: the scratch setup was removed under the test (another run of \`rudder lab clean\`?): results are void`);

        const tally: Tally = { file: label, cases: { pass: 0, fail: 0 }, probes: { pass: 0, fail: 0 }, skipped, ms: 0 };
        const failures: string[] = [];
        for (const c of checks) {
          const why = judge(c, results.get(c) ?? []);
          const n = c.origin === 'case' ? tally.cases : tally.probes;
          const text = `[${c.origin}] ${c.name} (${c.plane} socket, ${c.proto} ${c.src} -> ${idOf(c.dst, c.port)}, trace rule ${c.want.rule}): ${why}`;
          if (why === null) n.pass++;
          else {
            n.fail++;
            failures.push(text);
          }
        }
        tally.ms = Date.now() - t0;
        tallies.push(tally);
        t.diagnostic(`${tally.cases.pass + tally.cases.fail} cases checked (${own.filter((c) => c.plane === 'pod').length} from a pod, ${own.filter((c) => c.plane === 'node').length} from the node), ${tally.probes.pass + tally.probes.fail} probes; skipped ${skipped.external} external-client (per-packet path, not built yet), ${skipped.sctp} SCTP, ${skipped.mixedFamily} mixed-family`);
        assert.ok(own.length + skipped.external + skipped.sctp + skipped.mixedFamily === f.cases.length);
        if (failures.length > 0) assert.fail(`${label}: ${failures.length} of ${checks.length} checks disagree with rudder trace:\n  ${failures.join('\n  ')}`);
      } finally {
        await teardown(run);
      }
    });
  }
});
