// The packet-flow conformance cases against the eBPF data plane as loaded in the kernel: the
// socket programs for clients on the node, the per-packet tc program for clients outside it.
// Every fixture (test/conformance, ../shared/conformance) is loaded as `rudder trace` loads it and
// programmed into the real maps. Every case whose client is a pod or the node itself is played
// with real connect()/sendto() calls from a process bound to the case's source, and what the
// socket saw is held against trace(): forward -> only backends trace lists, reject ->
// ECONNREFUSED, drop -> EHOSTUNREACH (EPERM for loadBalancerSourceRanges), none -> the destination
// itself. Every case whose client is outside the node (TCP and UDP, one family) is played as the
// first packet of a flow through rd_from_netdev (bpf/tc_nodeport.c, tc ingress of the node's
// external interface) with BPF_PROG_TEST_RUN, which sends nothing: forward -> TC_ACT_OK (a test
// run has no route) with the destination rewritten to one of trace's backends and the source
// masqueraded to the node's primary IP of the family exactly when trace masquerades on the way to
// that backend (the path's masquerade, or hairpin to the client's own endpoint) and the backend is
// not local (a local backend keeps the client address, as in Cilium; see the header of
// bpf/tc_nodeport.c), reject -> TC_ACT_REDIRECT with an ICMP/ICMPv6 port unreachable back to the
// client, drop -> TC_ACT_SHOT, none -> TC_ACT_OK and the frame unchanged. Beyond the fixtures' own
// cases, every frontend is probed from a pod, from the node, from its own endpoints (hairpin) and
// from an address outside the cluster (on the tc program), and each ClusterIP on a port no
// service uses from a pod.
//
// The socket programs tell the node from its pods by network namespace, not by address: the pod
// cases run under a plane whose host namespace is none, the node cases under a second plane on the
// same pins (it adopts the maps and swaps the programs) that takes the scratch namespace for the
// node's own. Every address of those cases (sources, destinations, endpoints) sits on the scratch
// namespace's lo, with a listener on every endpoint and every destination that answers with its
// own "ip:port": a connection the programs leave alone reaches the destination itself, one they
// translate names its backend, and an error can only come from a program. The outside cases come
// last: the tc object is loaded on the same pins, attached nowhere, and a third plane on those
// maps with the per-packet state on writes the external entries and rd_config, as the agent does
// when it has devices (--devices). rd_ct is emptied before every packet, so each is the first of
// its flow, and rd_aff_ext before every check. SCTP and mixed-family cases are counted and
// skipped. Root only.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { loadTable } from '../../src/cli/load.js';
import { EbpfDataPlane } from '../../src/dataplane/ebpf/index.js';
import { bpfMap, inNetns, netnsCookie, progTestRun } from '../../src/dataplane/ebpf/libbpf.js';
import { AffExtKeyCodec, CtKeyCodec } from '../../src/dataplane/ebpf/codecs.js';
import { DEFAULT_CT_TIMEOUTS, DEFAULT_SNAT_PORTS } from '../../src/dataplane/ebpf/defaults.js';
import { MAP_NAMES, type MapFds } from '../../src/dataplane/ebpf/maps.js';
import { DEFAULT_MAP_SIZES, loadPerPacket, type PerPacket } from '../../src/dataplane/ebpf/programs.js';
import { diff } from '../../src/model/diff.js';
import { classifySource, detectsLocal, frontendKey, sourceAllowed, type FrontendRecord } from '../../src/model/frontends.js';
import { formatIP, ipFamily, parseCIDR } from '../../src/model/ip.js';
import { nodeAddresses, primaryNodeIP } from '../../src/model/nodeport-addresses.js';
import { indexTable, trace, type TraceIndex, type TraceResult } from '../../src/model/trace.js';
import { allPorts, type ProxyConfig, type ServiceTable } from '../../src/model/types.js';
import { memoryLogger } from '../../src/observe/log.js';
import { allFixtureFiles, flagsOf, readFixture, ROOT, type Case } from '../support/conformance-fixtures.js';
import { createEbpfScratch, type EbpfScratch } from '../support/ebpf-scratch.js';
import { clearMap, MACS, packet, parse, parseIcmp, TC_ACT, type Flow, type Parsed, type ParsedIcmp } from '../support/tc-packets.js';

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
/** The outside client of the probes, per family: the first that is neither in the cluster CIDR nor a node address. */
const OUTSIDE = { 4: ['203.0.113.77', '198.51.100.77', '192.0.2.77'], 6: ['2001:db8::77', '2001:db8:ffff::77', '3fff::77'] } as const;
/** The client's first source port on the tc path (attempt i uses CLIENT_PORT + i). */
const CLIENT_PORT = 40000;
/** rd_ct entries for the per-packet object: it is created afresh (not shared with socket LB) and holds one flow at a time here. */
const TC_SIZES = { ...DEFAULT_MAP_SIZES, ct: 4096 };

/**
 * Outside-client checks where the tc program is known to disagree with trace, by fixture (as in
 * the label, e.g. "main/test/conformance/x.json") and check name, with the reason. Judged and
 * reported as known, not failed. Keep it empty unless a difference is understood and accepted.
 */
const KNOWN_TC_DIFFERENCES: ReadonlyArray<{ file: string; name: string; why: string }> = [];

/** pod and node: sockets under the socket programs; external: frames through rd_from_netdev. */
type Plane = 'pod' | 'node' | 'external';
type Proto = 'TCP' | 'UDP';

interface Want {
  verdict: TraceResult['verdict'];
  backends: readonly string[];
  rule: string;
  affinity: number;
  /** trace's masquerade (source-NAT to the node on the way to some of the backends). */
  masquerade: boolean;
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
  /**
   * Outside clients: whether the path itself masquerades. trace's `masquerade` also counts
   * hairpin, which kube-proxy applies only on the way to the client's own endpoint (its
   * KUBE-SEP chain's `-s <endpoint> -j KUBE-MARK-MASQ`), so the source-NAT a flow wants depends
   * on its backend: see masqueradesTo.
   */
  pathMasquerade?: boolean;
}

interface Attempt {
  data?: string;
  error?: string;
  ms?: number;
}

const idOf = (ip: string, port: number): string => (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);
const wantOf = (r: TraceResult): Want => ({ verdict: r.verdict, backends: r.backends, rule: r.rule, affinity: r.affinityTimeoutSeconds ?? 0, masquerade: r.masquerade });
/** The socket plane of a source on the node (a pod or the node), or null for one outside. */
const planeOf = (src: string, cfg: ProxyConfig): 'pod' | 'node' | null => {
  const cls = classifySource(src, cfg);
  return cls === 'fromPod' ? 'pod' : cls === 'fromNode' ? 'node' : null;
};
const onTc = (c: Check): boolean => c.plane === 'external';

/** An address of the family outside the cluster CIDR and not the node's, or null. */
function outsideAddress(cfg: ProxyConfig, family: 4 | 6): string | null {
  return OUTSIDE[family].find((ip) => classifySource(ip, cfg) === 'fromExternal') ?? null;
}

/** A pod address inside the family's cluster CIDR (x.y.1.5, or <prefix>:1::5), or null. */
function podAddress(cfg: ProxyConfig, family: 4 | 6): string | null {
  const c = cfg.clusterCIDRs.map(parseCIDR).find((p) => p !== null && p.family === family);
  if (c === undefined || c === null) return null;
  return formatIP({ family, value: c.network + (family === 4 ? 0x105n : (1n << 64n) + 5n) });
}

/** The fixture's own cases: from a pod or the node on a socket, from outside on the tc program; the others counted by reason. */
function fixtureChecks(cases: readonly Case[], table: ServiceTable, cfg: ProxyConfig, index: TraceIndex) {
  const checks: Check[] = [];
  const skipped = { sctp: 0, mixedFamily: 0 };
  for (const c of cases) {
    const plane = planeOf(c.src, cfg) ?? 'external';
    if (c.proto === 'SCTP') skipped.sctp++;
    else if (ipFamily(c.src) !== ipFamily(c.dst)) skipped.mixedFamily++;
    else {
      const want = wantOf(trace(table, cfg, { src: c.src, dst: c.dst, port: c.port, protocol: c.proto }, index));
      checks.push({ origin: 'case', name: c.name, plane, src: c.src, dst: c.dst, port: c.port, proto: c.proto, want, telling: [] });
    }
  }
  return { checks, skipped };
}

/**
 * Every programmed frontend from a pod, from each node address, from its own endpoints (hairpin)
 * and from an outside client (on the tc program). Where a family has no cluster CIDR, kube-proxy
 * cannot tell a pod from an outside client: its endpoints are played from pods all the same, and
 * trace answers for an outside client.
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
    // An outside client, on the per-packet path; trace decides (source ranges included).
    const outside = outsideAddress(cfg, rec.family);
    if (outside !== null) add(`${rec.kind} ${idOf(rec.ip, rec.port)}/${rec.protocol} of ${rec.service.id} from outside (${outside})`, outside, rec.ip, rec.port, rec.protocol, 'external');
    // The node looping back through its own LB IP arrives with that IP as source: kube-proxy lets
    // it through the firewall when the primary node IP is in range, and it gets the node's path.
    if (rec.sourceRanges.length > 0) {
      const p = rec.fromNode;
      const want: Want = sourceAllowed(rec, rec.ip)
        ? { verdict: p.verdict, backends: p.endpoints, rule: p.rule, affinity: p.verdict === 'forward' ? rec.affinityTimeoutSeconds : 0, masquerade: p.masquerade }
        : { verdict: 'drop', backends: [], rule: 'source-range', affinity: 0, masquerade: false };
      add(`loadBalancerIP ${idOf(rec.ip, rec.port)} of ${rec.service.id} from the node bound to the LB IP itself`, rec.ip, rec.ip, rec.port, rec.protocol, 'node', want);
    }
  }
  const seen = new Set<string>();
  for (const sp of allPorts(table)) {
    const pod = podAddress(cfg, sp.family);
    if (pod === null || seen.has(sp.clusterIP)) continue;
    seen.add(sp.clusterIP);
    for (const proto of ['TCP', 'UDP'] as const) {
      if (index.records(cfg).has(frontendKey(sp.clusterIP, 9, proto))) continue;
      add(`ClusterIP ${sp.clusterIP} on unused port 9/${proto} from ${pod}`, pod, sp.clusterIP, 9, proto, 'pod');
      const outside = outsideAddress(cfg, sp.family);
      if (outside !== null) add(`ClusterIP ${sp.clusterIP} on unused port 9/${proto} from outside (${outside})`, outside, sp.clusterIP, 9, proto, 'external');
    }
  }
  return out;
}

/**
 * Fills in `telling`: the backends of a forward check that the other path lacks (for the tc
 * program, the pods' path, which it falls back to where a frontend has no external entry).
 */
function markTelling(checks: Check[], cfg: ProxyConfig, index: TraceIndex): void {
  for (const c of checks) {
    const rec = index.records(cfg).get(frontendKey(c.dst, c.port, c.proto));
    if (rec === undefined || c.want.verdict !== 'forward' || c.want.affinity > 0) continue;
    const other = c.plane === 'pod' ? rec.fromNode : rec.fromPod;
    if (other.verdict === 'forward') c.telling = c.want.backends.filter((b) => !other.endpoints.includes(b));
  }
}

/**
 * Fills in `pathMasquerade` of the outside checks from the record trace reads, and checks that
 * it and hairpin make up trace's `masquerade` (else this test reads trace wrong: it says so).
 */
function markMasquerade(checks: Check[], cfg: ProxyConfig, index: TraceIndex): void {
  for (const c of checks) {
    if (!onTc(c)) continue;
    const rec = index.records(cfg).get(frontendKey(c.dst, c.port, c.proto));
    c.pathMasquerade = rec !== undefined && rec[classifySource(c.src, cfg)].masquerade;
    if (c.want.verdict !== 'forward') continue;
    const hairpin = c.want.backends.some((b) => ipOfId(b) === c.src);
    assert.equal(c.want.masquerade, c.pathMasquerade || hairpin, `${c.name}: trace's masquerade is neither the path's nor hairpin`);
  }
}

const ipOfId = (id: string): string => (id.startsWith('[') ? id.slice(1, id.indexOf(']')) : id.slice(0, id.lastIndexOf(':')));

/**
 * Whether an outside client's flow to `backend` is source-NATed to the node: trace's masquerade,
 * taken per backend: the path's, except to a local backend, whose replies pass this node anyway
 * (the tc program keeps the client address there, as Cilium does; bpf/tc_nodeport.c, README);
 * and hairpin to the client's own endpoint, wherever it runs.
 */
const masqueradesTo = (c: Check, backend: string, local: boolean): boolean =>
  // Hairpin (the backend is the client) is masqueraded wherever the backend runs, or it would answer itself.
  (c.pathMasquerade === true && c.want.masquerade && !local) || ipOfId(backend) === c.src;

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

const attemptsOf = (c: Check): number => (c.telling.length > 0 ? TELLING_ATTEMPTS : c.want.verdict === 'forward' ? FORWARD_ATTEMPTS : OTHER_ATTEMPTS);

async function play(s: EbpfScratch, checks: readonly Check[]): Promise<Attempt[][]> {
  const out: Attempt[][] = [];
  for (let i = 0; i < checks.length; i += BATCH) {
    const batch = checks.slice(i, i + BATCH).map((c) => ({ src: c.src, dst: c.dst, port: c.port, proto: c.proto, n: attemptsOf(c) }));
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

// ---- the per-packet path: frames through rd_from_netdev with BPF_PROG_TEST_RUN ---------------------

/** The loaded tc program and what judging its output needs. */
interface TcRig {
  prog: number;
  ct: number;
  affExt: number;
  /** The node's primary IP per family ('' without one): the source of masqueraded flows. */
  primary: { 4: string; 6: string };
  snatPorts: readonly [number, number];
  /** Left out of snatPorts (the node's ephemeral range; [0, 0]: nothing). */
  snatSkip: readonly [number, number];
  /** `PROTO endpoint-id` -> whether that endpoint is on this node. */
  local: ReadonlyMap<string, boolean>;
}

interface TcAttempt {
  flow: Flow;
  /** The frame as sent. */
  frame: Buffer;
  retval: number;
  /** The frame as the program left it. */
  out: Buffer;
  /** The output parsed as TCP/UDP, or as ICMP/ICMPv6; neither if it is not one of those. */
  parsed?: Parsed;
  icmp?: ParsedIcmp;
}

const TC_NAMES: Readonly<Record<number, string>> = { [TC_ACT.OK]: 'TC_ACT_OK', [TC_ACT.SHOT]: 'TC_ACT_SHOT', [TC_ACT.REDIRECT]: 'TC_ACT_REDIRECT' };
const tcName = (v: number): string => TC_NAMES[v] ?? `retval ${v}`;

/** The node's ephemeral port range, which the agent leaves out of the SNAT ports; [0, 0] if unreadable. */
function ephemeralPorts(): [number, number] {
  try {
    const [lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (Number.isInteger(lo) && Number.isInteger(hi) && lo! >= 1 && hi! <= 65535 && lo! <= hi!) return [lo!, hi!];
  } catch {
    // as the agent: nothing left out
  }
  return [0, 0];
}

/** Whether a masqueraded flow's source port is one the program may pick (as rd_snat_reserve reads the knobs). */
function snatPortOk(rig: TcRig, port: number): boolean {
  const [lo, hi] = rig.snatPorts;
  const [slo, shi] = rig.snatSkip;
  const skipped = slo > 0 && slo >= lo && shi >= slo && shi <= hi && port >= slo && port <= shi;
  return port >= lo && port <= hi && !skipped;
}

/**
 * Plays a check's attempts, each the first packet of its own flow (source port CLIENT_PORT + i;
 * rd_ct emptied before each), from the check's client to its frontend; the external affinity
 * state is emptied before the check and kept between its attempts.
 */
function playTc(rig: TcRig, c: Check): TcAttempt[] {
  clearMap(rig.affExt, AffExtKeyCodec.size, 'rd_aff_ext');
  const out: TcAttempt[] = [];
  for (let i = 0; i < attemptsOf(c); i++) {
    clearMap(rig.ct, CtKeyCodec.size, 'rd_ct');
    const flow: Flow = c.proto === 'TCP'
      ? { src: c.src, dst: c.dst, sport: CLIENT_PORT + i, dport: c.port, proto: 'tcp' }
      : { src: c.src, dst: c.dst, sport: CLIENT_PORT + i, dport: c.port, proto: 'udp', payload: '?' };
    const frame = packet(flow);
    const r = progTestRun(rig.prog, frame, undefined, 'rd_from_netdev');
    const a: TcAttempt = { flow, frame, retval: r.retval, out: Buffer.from(r.data) };
    try {
      const p = parse(a.out);
      if (p.proto === 1 || p.proto === 58) a.icmp = parseIcmp(a.out);
      else a.parsed = p;
    } catch {
      // neither: shown as unparsed
    }
    out.push(a);
  }
  clearMap(rig.ct, CtKeyCodec.size, 'rd_ct');
  return out;
}

/** One attempt's outcome, in a form that repeats across attempts (source ports of SNAT vary). */
function showTc(a: TcAttempt): string {
  const v = tcName(a.retval);
  if (a.out.equals(a.frame)) return `${v} unchanged`;
  if (a.icmp !== undefined) return `${v} ICMP${a.icmp.family === 6 ? 'v6' : ''} ${a.icmp.type}/${a.icmp.code} ${a.icmp.src} -> ${a.icmp.dst}`;
  if (a.parsed !== undefined) {
    const p = a.parsed;
    return `${v} ${p.src}${p.sport === a.flow.sport ? ':client-port' : ':other-port'} -> ${idOf(p.dst, p.dport)}`;
  }
  return `${v} ${a.out.length}-byte frame, not parsed`;
}

/** What trace wants of every attempt, in words. */
function wantTc(rig: TcRig, c: Check): string {
  const w = c.want;
  const fam = ipFamily(c.src) === 6 ? 6 : 4;
  switch (w.verdict) {
    case 'forward':
      return `forward (${w.rule}): TC_ACT_OK to one of ${w.backends.join(', ')}, source ${!w.masquerade ? 'kept' : `masqueraded to ${rig.primary[fam] || '(no primary IP)'} ${c.pathMasquerade === true ? 'unless the backend is local' : 'on the way to the client\'s own endpoint if not local (hairpin), else kept'}`}`;
    case 'reject':
      return `reject (${w.rule}): TC_ACT_REDIRECT with ICMP${fam === 6 ? 'v6' : ''} port unreachable from ${c.dst} to the client`;
    case 'drop':
      return `drop (${w.rule}): TC_ACT_SHOT`;
    case 'none':
      return `none (${w.rule}): TC_ACT_OK, the frame unchanged`;
  }
}

/** What is wrong with one attempt, or null. */
function tcProblem(rig: TcRig, c: Check, a: TcAttempt): string | null {
  const w = c.want;
  const fam = ipFamily(c.src) === 6 ? 6 : 4;
  switch (w.verdict) {
    case 'forward': {
      if (a.retval !== TC_ACT.OK) return `${tcName(a.retval)}, not TC_ACT_OK`;
      const p = a.parsed;
      if (p === undefined || p.family !== fam || p.proto !== (c.proto === 'TCP' ? 6 : 17)) return `the output is no ${c.proto}/IPv${fam} packet`;
      const be = idOf(p.dst, p.dport);
      if (!w.backends.includes(be)) return `sent to ${be}, not one of trace's backends`;
      if (!p.ipChecksumOk || !p.l4ChecksumOk) return `checksums invalid (IPv4 header ${p.ipChecksumOk ? 'ok' : 'bad'}, L4 0x${p.l4Checksum.toString(16)} want 0x${p.l4ChecksumWant.toString(16)})`;
      if (!p.payload.equals(Buffer.from(a.flow.payload ?? ''))) return 'payload changed';
      const local = rig.local.get(`${c.proto} ${be}`);
      if (local === undefined) return `${be} is no endpoint of the table`;
      if (masqueradesTo(c, be, local)) {
        const node = rig.primary[fam];
        if (p.src !== node) return `to ${be} (not local) from ${p.src}:${p.sport}: trace masquerades${c.pathMasquerade === true ? '' : ' (hairpin)'}, want the node's primary IP ${node || '(none in this family)'}`;
        if (!snatPortOk(rig, p.sport)) return `masqueraded with source port ${p.sport}, outside the SNAT ports ${rig.snatPorts.join('-')} less ${rig.snatSkip.join('-')}`;
      } else if (p.src !== a.flow.src || p.sport !== a.flow.sport) {
        const why = !w.masquerade ? 'trace does not masquerade' : local ? `${be} is local` : `trace masquerades only hairpin, and ${be} is not the client's own endpoint`;
        return `to ${be} from ${p.src}:${p.sport}: want the client's own ${a.flow.src}:${a.flow.sport} (${why})`;
      }
      return null;
    }
    case 'reject': {
      if (a.retval !== TC_ACT.REDIRECT) return `${tcName(a.retval)}, not TC_ACT_REDIRECT`;
      const e = a.icmp;
      if (e === undefined || e.family !== fam) return `the output is no ICMP${fam === 6 ? 'v6' : ''} message`;
      const [type, code] = fam === 4 ? [3, 3] : [1, 4];
      if (e.type !== type || e.code !== code) return `ICMP type/code ${e.type}/${e.code}, want ${type}/${code} (port unreachable)`;
      if (e.src !== c.dst || e.dst !== c.src) return `from ${e.src} to ${e.dst}, want from ${c.dst} to ${c.src}`;
      if (!e.ipChecksumOk || !e.icmpChecksumOk) return 'checksums invalid';
      const min = fam === 4 ? 28 : 48;
      if (e.quoted.length < min || !e.quoted.equals(a.frame.subarray(14, 14 + e.quoted.length))) return `quotes ${e.quoted.length} bytes that are not the packet as sent`;
      if (e.srcMac !== MACS.dst || e.dstMac !== MACS.src) return 'MAC addresses not swapped';
      return null;
    }
    case 'drop':
      return a.retval === TC_ACT.SHOT ? null : `${tcName(a.retval)}, not TC_ACT_SHOT`;
    case 'none':
      if (a.retval !== TC_ACT.OK) return `${tcName(a.retval)}, not TC_ACT_OK`;
      return a.out.equals(a.frame) ? null : 'the frame was changed';
  }
}

/** What is wrong with the attempts of one check on the tc program, or null. */
function judgeTc(rig: TcRig, c: Check, got: readonly TcAttempt[]): string | null {
  const counts = new Map<string, number>();
  for (const a of got) counts.set(showTc(a), (counts.get(showTc(a)) ?? 0) + 1);
  const bad = (why: string): string => `want ${wantTc(rig, c)}: ${why}; got ${[...counts].map(([k, n]) => (n > 1 ? `${k} x${n}` : k)).join(', ')}`;
  if (got.length === 0) return bad('nothing played');
  for (let i = 0; i < got.length; i++) {
    const why = tcProblem(rig, c, got[i]!);
    if (why !== null) return bad(`attempt ${i + 1} of ${got.length} (client port ${got[i]!.flow.sport}): ${why}`);
  }
  if (c.want.verdict === 'forward') {
    const picked = new Set(got.map((a) => idOf(a.parsed!.dst, a.parsed!.dport)));
    if (c.want.affinity > 0 && picked.size > 1) return bad(`ClientIP affinity (${c.want.affinity} s): one backend for every flow of the client, got ${[...picked].join(', ')}`);
    if (c.telling.length > 0 && ![...picked].some((b) => c.telling.includes(b))) return bad(`some flow to ${c.telling.join(', ')}, which only the outside path may reach`);
  }
  return null;
}

// ---- the suite ------------------------------------------------------------------------------------

interface Count { pass: number; fail: number }
interface Tally {
  file: string;
  /** Every check of its kind; `tc` the part of them played on the tc program (outside clients). */
  cases: Count & { tc: Count };
  probes: Count & { tc: Count };
  /** Outside-client checks that failed as KNOWN_TC_DIFFERENCES says (not in `fail`). */
  known: number;
  skipped: { sctp: number; mixedFamily: number };
  ms: number;
}

const tallies: Tally[] = [];
interface Run { s: EbpfScratch; planes: EbpfDataPlane[]; perPacket?: PerPacket }
const live = new Set<Run>();

async function teardown(run: Run): Promise<void> {
  live.delete(run);
  try {
    run.perPacket?.close();
  } finally {
    run.perPacket = undefined;
    for (const p of run.planes.reverse()) await p.cleanup();
    await run.s.remove();
  }
}

describe('conformance cases against the eBPF data plane in the kernel (socket programs and the per-packet tc program)', { skip: !isRoot && 'needs root' }, () => {
  const t00 = Date.now();
  after(async () => {
    for (const run of [...live]) await teardown(run);
    const count = (c: Count): string => `${c.pass} pass ${c.fail} fail`;
    const line = (t: Tally): string => `${t.file.padEnd(44)} cases ${count(t.cases)} (tc ${count(t.cases.tc)}) | probes ${count(t.probes)} (tc ${count(t.probes.tc)}) | known ${t.known} | skipped ${t.skipped.sctp} SCTP, ${t.skipped.mixedFamily} mixed-family | ${t.ms} ms`;
    const sum = (f: (t: Tally) => number): number => tallies.reduce((n, t) => n + f(t), 0);
    const total = `total: cases ${sum((t) => t.cases.pass)} pass ${sum((t) => t.cases.fail)} fail (tc ${sum((t) => t.cases.tc.pass)} pass ${sum((t) => t.cases.tc.fail)} fail) | probes ${sum((t) => t.probes.pass)} pass ${sum((t) => t.probes.fail)} fail (tc ${sum((t) => t.probes.tc.pass)} pass ${sum((t) => t.probes.tc.fail)} fail) | known ${sum((t) => t.known)} | ${Date.now() - t00} ms`;
    if (tallies.length > 0) console.log(['ebpf conformance:', ...tallies.map(line), total].join('\n  '));
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
      markMasquerade(checks, config, index);
      const sockets = checks.filter((c) => !onTc(c));
      const packets = checks.filter(onTc);

      // The socket checks' addresses; the tc checks need none (their frames go nowhere).
      const listeners = new Map<string, Listener>();
      const listen = (ip: string, port: number, proto: Proto): void => void listeners.set(`${proto} ${idOf(ip, port)}`, { ip, port, proto });
      for (const sp of allPorts(table)) if (sp.protocol !== 'SCTP') for (const e of sp.endpoints) listen(e.ip, e.port, sp.protocol);
      for (const c of sockets) listen(c.dst, c.port, c.proto);
      const addrs = new Set([...listeners.values()].map((l) => l.ip));
      for (const c of sockets) addrs.add(c.src);
      for (const a of addrs) assert.ok(!a.startsWith('127.') && a !== '::1', `${label}: ${a} is a loopback address`);

      const s = await createEbpfScratch([...addrs]);
      const run: Run = { s, planes: [] };
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
          const mine = sockets.filter((c) => c.plane === plane);
          const got = await play(s, mine);
          mine.forEach((c, i) => results.set(c, got[i] ?? []));
        }

        // The per-packet path, last (its external entries change nothing for sockets, but the
        // socket checks stay as they were): the tc object on the same pins, attached to no
        // device, and a plane on its maps with the per-packet state on (external entries and
        // rd_config, as the agent writes them with devices).
        const tcResults = new Map<Check, TcAttempt[]>();
        let rig: TcRig | undefined;
        const tc0 = Date.now();
        if (packets.length > 0) {
          const snatSkip = ephemeralPorts();
          const knobs = { hostNetnsCookie: scratchCookie, hostNamespaceOnly: false, maglevTableSize: TC_SIZES.maglevTableSize, ct: DEFAULT_CT_TIMEOUTS, snatPorts: DEFAULT_SNAT_PORTS, snatSkip };
          const pp = loadPerPacket({ pinPath: s.pinPath, knobs, sizes: TC_SIZES, devices: [], logger: memoryLogger() });
          run.perPacket = pp;
          const fds = Object.fromEntries(MAP_NAMES.map((n) => [n, pp.obj.mapFd(n)])) as MapFds;
          const dp = new EbpfDataPlane({ config, logger: memoryLogger(), pinPath: s.pinPath, reconcileIntervalMs: 3_600_000, maps: { fds, io: bpfMap, perPacket: true } });
          run.planes.push(dp);
          await dp.init();
          await dp.apply(diff(new Map(), table), table, { full: true });
          const local = new Map<string, boolean>();
          for (const sp of allPorts(table)) for (const e of sp.endpoints) local.set(`${sp.protocol} ${e.id}`, e.isLocal);
          rig = {
            prog: pp.obj.progFd('rd_from_netdev'), ct: pp.fds.rd_ct, affExt: pp.fds.rd_aff_ext,
            primary: { 4: primaryNodeIP(config, 4), 6: primaryNodeIP(config, 6) }, snatPorts: DEFAULT_SNAT_PORTS, snatSkip, local,
          };
          for (const c of packets) tcResults.set(c, playTc(rig, c));
        }
        const tcMs = Date.now() - tc0;

        // `rudder lab clean` elsewhere on the machine removes every lab run, this one included.
        const gone = [s.pinPath, s.cgroup, `/run/netns/${s.ns}`].filter((x) => !existsSync(x));
        assert.deepEqual(gone, [], `${label}: the scratch setup was removed under the test (another run of \`rudder lab clean\`?): results are void`);

        const tally: Tally = { file: label, cases: { pass: 0, fail: 0, tc: { pass: 0, fail: 0 } }, probes: { pass: 0, fail: 0, tc: { pass: 0, fail: 0 } }, known: 0, skipped, ms: 0 };
        const failures: string[] = [];
        const knownSeen: string[] = [];
        const stale: string[] = [];
        for (const c of checks) {
          const why = onTc(c) ? judgeTc(rig!, c, tcResults.get(c) ?? []) : judge(c, results.get(c) ?? []);
          const n = c.origin === 'case' ? tally.cases : tally.probes;
          const where = onTc(c) ? 'tc rd_from_netdev' : `${c.plane} socket`;
          const text = `[${c.origin}] ${c.name} (${where}, ${c.proto} ${c.src} -> ${idOf(c.dst, c.port)}, trace rule ${c.want.rule}): ${why}`;
          const known = onTc(c) ? KNOWN_TC_DIFFERENCES.find((k) => k.file === label && k.name === c.name) : undefined;
          if (known !== undefined) {
            if (why === null) stale.push(`[${c.origin}] ${c.name}: listed in KNOWN_TC_DIFFERENCES (${known.why}) but agrees with trace now: remove it`);
            else {
              tally.known++;
              knownSeen.push(`${text} [known: ${known.why}]`);
            }
            continue;
          }
          if (why === null) {
            n.pass++;
            if (onTc(c)) n.tc.pass++;
          } else {
            n.fail++;
            if (onTc(c)) n.tc.fail++;
            failures.push(text);
          }
        }
        tally.ms = Date.now() - t0;
        tallies.push(tally);
        const from = (p: Plane): number => own.filter((c) => c.plane === p).length;
        t.diagnostic(`${own.length} cases checked (${from('pod')} from a pod, ${from('node')} from the node, ${from('external')} from outside on the tc program), ${checks.length - own.length} probes (${packets.length - from('external')} from outside on the tc program); skipped ${skipped.sctp} SCTP, ${skipped.mixedFamily} mixed-family`);
        if (packets.length > 0) {
          const by = (v: Want['verdict']): number => packets.filter((c) => c.want.verdict === v).length;
          const flows = packets.filter((c) => c.want.verdict === 'forward').flatMap((c) => tcResults.get(c) ?? []);
          const snat = flows.filter((a) => a.parsed !== undefined && a.parsed.src !== a.flow.src).length;
          t.diagnostic(`tc program: ${by('forward')} forward checks (${flows.length} flows: ${snat} masqueraded, ${flows.length - snat} kept the client address), ${by('reject')} reject, ${by('drop')} drop, ${by('none')} none; ${tcMs} ms with loading`);
        }
        for (const k of knownSeen) t.diagnostic(`known difference: ${k}`);
        assert.ok(own.length + skipped.sctp + skipped.mixedFamily === f.cases.length);
        const problems = [...failures, ...stale];
        if (problems.length > 0) assert.fail(`${label}: ${problems.length} of ${checks.length} checks disagree with rudder trace:\n  ${problems.join('\n  ')}`);
      } finally {
        await teardown(run);
      }
    });
  }
});
