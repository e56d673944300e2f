// The traffic benchmark behind `rudder bench`: one lab, an HTTP server in pod-2a (node-2), and wrk
// with one TCP connection per request from pod-1b (node-1) and from the external client, straight
// to the pod IP (no data plane loaded at all: the baseline; the external client's routed through
// node-1 both ways, as a masqueraded NodePort's packets go), through the ClusterIP and through a
// NodePort on node-1 for every data plane and service count asked for. Configurations are
// interleaved within each round (A B C A B C ...) because these machines drift; conntrack is
// flushed in the node namespaces before every sample. Every sample also reads the whole machine's
// busy CPU time just before and after wrk, for the CPU per request. Everything happens inside lab
// namespaces; the lab is destroyed at the end, on failure and on signals.
//
// The ebpf plane translates pods' and the node's connections at connect() in the programs
// attached to each node's cgroup (wrk in pod-1b runs in node-1's cgroup: checked before the first
// sample), and the external client's packets in tc programs on the interface holding the node IP,
// which its agent finds from --node-ip (each agent must report it attached before a sample).
// Between states its agents' pinned programs are removed with `rudder cleanup`, and the node
// cgroups and those interfaces are checked to hold no program any more, so the direct rows
// measure no BPF hook.

import { existsSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, release } from 'node:os';
import { RUDDER_BIN, startAgent, type LabAgent } from '../src/lab/agents.js';
import { Lab, defaultTopology, findCgroup2Mount, type Topology } from '../src/lab/index.js';
import { findProgram } from '../src/lab/probes.js';
import { cpuMs, rssMiB } from './proc.js';
import { cpuUsPerRequest, machineBusyCpuSeconds } from './traffic-cpu.js';
import { perPacketPath, rejectedFlows, rejectedSince } from './traffic-ebpf.js';
import { assertLabDestination } from '../src/lab/topology.js';
import { createLogger, type Logger } from '../src/observe/log.js';
import { manifestDir, type BenchTarget } from './traffic-manifests.js';
import { CPU_PER_REQUEST_NOTE, renderTable, summarize, type BenchConfig, type Row, type Sample } from './traffic-report.js';
import { startBenchServer, type BenchServer } from './traffic-server.js';
import { parseWrk, wrkArgv } from './traffic-wrk.js';

export interface TrafficBenchOptions {
  dataplanes: string[];
  /** Services in the table (the target included), one data plane state per count. */
  services: number[];
  durationSec: number;
  connections: number;
  threads: number;
  rounds: number;
  /** Use nginx as the server when it is installed (else the lab's Node.js pod server). */
  preferNginx: boolean;
  /** The command line as typed, printed with the results. */
  command: string;
  /** Progress lines (stderr in the CLI). */
  progress: (line: string) => void;
  logger?: Logger;
}

export interface MachineFacts {
  nproc: number;
  cpu: string;
  kernel: string;
  node: string;
  wrk: string;
  iptables: string;
  loadBefore: number[];
  loadAfter: number[];
}

export interface AgentStart {
  dataplane: string;
  services: number;
  /** Seconds from starting both agents to both answering /healthz (first full sync done), per round. */
  seconds: number[];
  /** Seconds `rudder cleanup` took on both nodes when leaving the state, per round (when it ran). */
  cleanupSeconds: number[];
  /** The agents' resident memory once healthy (the larger of the two nodes), MiB, per round. */
  rssMiB: number[];
  /** CPU time both agents used while wrk ran, ms, per sample (an idle agent uses next to none). */
  cpuMsPerSample: number[];
}

export interface TrafficBenchResult {
  command: string;
  machine: MachineFacts;
  settings: {
    durationSec: number; connections: number; threads: number; rounds: number;
    dataplanes: string[]; services: number[]; conntrackTimeWaitSec: number | null;
  };
  server: string;
  target: BenchTarget;
  /** The cgroup v2 path wrk ran in inside the client pod (/proc/self/cgroup), '' if none. */
  clientCgroup: string;
  labRun: string;
  rows: Row[];
  agentStarts: AgentStart[];
  notes: string[];
  manifestGenerationMs: Record<string, number>;
  elapsedSec: number;
}

// Roles of the default topology the benchmark uses.
const SERVER_POD = 'pod-2a';
const CLIENT_POD = 'pod-1b';
const EXTERNAL = 'client';
const INGRESS_NODE = 'node-1';
const SERVER_PORT = 8080;
/**
 * conntrack TIME_WAIT timeout in the node namespaces during the run. nf_conntrack_max is one
 * machine-wide limit (262,144 here): 20k connections/s for 5 s in two node namespaces at the
 * default 120 s would fill most of it and drop other labs' packets.
 */
const CONNTRACK_TIME_WAIT_SEC = 2;
/** The same for the eBPF plane's own connection tracking: closed flows (and their SNAT ports) go after as long. */
const EBPF_CT_ARGS = ['--bpf-ct-timeout-tcp-closing', `${CONNTRACK_TIME_WAIT_SEC}s`];

type State = { dataplane: null } | { dataplane: string; services: number };

function stateName(s: State): string {
  return s.dataplane === null ? 'no data plane' : `${s.dataplane}, ${s.services.toLocaleString('en-US')} service${s.services === 1 ? '' : 's'}`;
}

function benchTarget(topo: Topology): BenchTarget {
  const pod = topo.pods.find((p) => p.name === SERVER_POD);
  if (pod === undefined) throw new Error(`the topology has no ${SERVER_POD}`);
  return { namespace: 'zz-bench', name: 'target', clusterIP: '10.96.0.10', port: 80, nodePort: 30080, endpointIP: pod.ip, endpointNode: pod.node, targetPort: SERVER_PORT };
}

/** The configurations in table order: pod paths first, then the external client's. */
function configurations(lab: Lab, t: BenchTarget, o: TrafficBenchOptions): BenchConfig[] {
  const podURL = `http://${t.endpointIP}:${t.targetPort}/`;
  const pod: BenchConfig[] = [{ id: 'direct/pod', kind: 'pod', via: 'direct', label: `${CLIENT_POD} -> ${SERVER_POD} pod IP (direct)`, dataplane: null, services: null, from: CLIENT_POD, url: podURL }];
  const ext: BenchConfig[] = [{ id: 'direct/external', kind: 'external', via: 'direct', label: `${EXTERNAL} -> ${SERVER_POD} pod IP via ${INGRESS_NODE}, both ways (direct)`, dataplane: null, services: null, from: EXTERNAL, url: podURL }];
  for (const dp of o.dataplanes) {
    for (const n of o.services) {
      pod.push({ id: `clusterip/${dp}/${n}`, kind: 'pod', via: 'clusterip', label: `${CLIENT_POD} -> ClusterIP`, dataplane: dp, services: n, from: CLIENT_POD, url: `http://${t.clusterIP}:${t.port}/` });
      ext.push({ id: `nodeport/${dp}/${n}`, kind: 'external', via: 'nodeport', label: `${EXTERNAL} -> NodePort on ${INGRESS_NODE} (eTP Cluster)`, dataplane: dp, services: n, from: EXTERNAL, url: `http://${lab.ip(INGRESS_NODE)}:${t.nodePort}/` });
    }
  }
  return [...pod, ...ext];
}

function inState(c: BenchConfig, s: State): boolean {
  return s.dataplane === null ? c.dataplane === null : c.dataplane === s.dataplane && c.services === s.services;
}

/** "dropped 96, refused 2". */
const reasons = (m: ReadonlyMap<string, number>): string => [...m].map(([reason, n]) => `${reason} ${n.toLocaleString('en-US')}`).join(', ');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const secondsSince = (t0: number): number => (Date.now() - t0) / 1000;

async function httpStatus(lab: Lab, from: string, url: string): Promise<string> {
  const r = await lab.exec(from, ['curl', '-s', '-o', '/dev/null', '--max-time', '2', '-w', '%{http_code}', url], { timeoutMs: 10_000 });
  return r.stdout.trim() === '200' ? '200' : `curl exit ${r.code}, HTTP ${r.stdout.trim() || '-'}`;
}

/** Waits until a configuration's URL answers 200 from its source. Throws Error naming the path. */
async function checkPath(lab: Lab, c: BenchConfig, s: State): Promise<void> {
  let last = '';
  for (let i = 0; i < 20; i++) {
    last = await httpStatus(lab, c.from, c.url);
    if (last === '200') return;
    await sleep(250);
  }
  throw new Error(`${c.label} (${c.url}) with ${stateName(s)} does not answer: ${last}`);
}

/**
 * The cgroup v2 directory a process started in `role` runs in, from its own /proc/self/cgroup
 * (absolute, under the cgroup2 mount); '' when it has none. Throws ExecError if cat fails.
 */
async function cgroupInside(lab: Lab, role: string): Promise<string> {
  const r = await lab.execOk(role, ['cat', '/proc/self/cgroup']);
  const line = r.stdout.split('\n').find((l) => l.startsWith('0::'));
  const mount = findCgroup2Mount();
  return line === undefined || mount === null ? '' : `${mount}${line.slice(3).trim()}`.replace(/\/$/, '');
}

async function machineFacts(lab: Lab): Promise<MachineFacts> {
  const wrk = await lab.exec(CLIENT_POD, ['wrk', '-v']);
  const ipt = await lab.exec(INGRESS_NODE, ['iptables', '--version']);
  return {
    nproc: availableParallelism(),
    cpu: cpus()[0]?.model.trim() ?? '?',
    kernel: release(),
    node: process.version,
    wrk: /wrk\s+(\S+)/.exec(wrk.stdout + wrk.stderr)?.[1] ?? '?',
    iptables: ipt.stdout.trim() || '?',
    loadBefore: loadavg(),
    loadAfter: [],
  };
}

/** Runs the benchmark. Throws on any failure (a path that does not answer, wrk failing, an agent not healthy). */
export async function runTrafficBench(o: TrafficBenchOptions): Promise<TrafficBenchResult> {
  const started = Date.now();
  const logger = o.logger ?? createLogger({ level: 'warn' });
  const topo = defaultTopology();
  const target = benchTarget(topo);
  const dir = manifestDir();
  // The lab removes itself on exit and signals (lab.ts); this removes the manifests.
  const onExit = (): void => dir.remove();
  const onSignal = (sig: NodeJS.Signals): void => { process.exit(sig === 'SIGINT' ? 130 : 143); };
  process.on('exit', onExit);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let lab: Lab | null = null;
  let server: BenchServer | null = null;
  let agents: LabAgent[] = [];
  try {
    const manifests = new Map<number, string>();
    const generationMs: Record<string, number> = {};
    if (o.dataplanes.length > 0) {
      for (const n of o.services) {
        const t0 = performance.now();
        manifests.set(n, dir.write(topo, n, target));
        generationMs[String(n)] = Math.round((performance.now() - t0) * 10) / 10;
      }
      o.progress(`manifests: ${o.services.map((n) => `${n.toLocaleString('en-US')} service${n === 1 ? '' : 's'} in ${generationMs[String(n)]} ms`).join(', ')} (${dir.dir})`);
    }

    o.progress('building the lab (2 nodes, 4 pods, 1 external client)');
    const l = await Lab.create(topo, { logger });
    lab = l;
    o.progress(`lab run ${l.runId} is up (namespaces ${l.ns(INGRESS_NODE).replace(INGRESS_NODE, '*')})`);
    const nodes = topo.nodes.map((n) => n.name);
    const machine = await machineFacts(l);
    const notes: string[] = [];

    for (const role of [CLIENT_POD, EXTERNAL]) await l.execOk(role, ['sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=1024 65535']);
    // No TIME_WAIT sockets in the server pod. Back-to-back samples reuse the same 4-tuples (the
    // ClusterIP path keeps the pod's source, NodePort SNATs to node-1): a SYN meeting the last
    // sample's TIME_WAIT is PAWS-rejected and retried a second later, which measured 5-8x fewer
    // req/s for whichever configuration came next, whatever its data plane.
    await l.execOk(SERVER_POD, ['sysctl', '-q', '-w', 'net.ipv4.tcp_max_tw_buckets=0']);
    let timeWait: number | null = CONNTRACK_TIME_WAIT_SEC;
    for (const n of nodes) {
      const r = await l.exec(n, ['sysctl', '-q', '-w', `net.netfilter.nf_conntrack_tcp_timeout_time_wait=${CONNTRACK_TIME_WAIT_SEC}`]);
      if (r.code !== 0) timeWait = null;
    }
    if (timeWait === null) notes.push('could not shorten the conntrack TIME_WAIT timeout in the node namespaces: kernel default used');
    // The external client reaches the pod directly through node-1, the NodePort's forward path, and
    // the pod's node answers it through node-1 too: a NodePort masqueraded to a remote endpoint sends
    // every reply back through the node that translated it, so the direct path carries the same
    // packets over the same hops and the ratio measures the data plane, not the route. (The lab's
    // default would send the replies from node-2 straight to the client: half the packets through
    // node-1.) Nothing else goes to the client's address from node-2.
    await l.setRoute(EXTERNAL, topo.nodes.find((n) => n.name === target.endpointNode)!.podCIDR, l.ip(INGRESS_NODE));
    await l.setRoute(target.endpointNode, `${l.ip(EXTERNAL)}/32`, l.ip(INGRESS_NODE));

    server = await startBenchServer(l, { pod: SERVER_POD, port: SERVER_PORT, probeFrom: CLIENT_POD, workDir: dir.dir, preferNginx: o.preferNginx });
    o.progress(`server: ${server.kind} in ${SERVER_POD} ${target.endpointIP}:${SERVER_PORT}`);

    const configs = configurations(l, target, o);
    for (const c of configs) assertLabDestination(topo, new URL(c.url).hostname);
    const states: State[] = [{ dataplane: null }, ...o.dataplanes.flatMap((dp) => o.services.map((services): State => ({ dataplane: dp, services })))];
    const starts = new Map<string, AgentStart>();
    const startRecord = (dp: string, n: number): AgentStart => {
      const k = `${dp}/${n}`;
      let a = starts.get(k);
      if (a === undefined) starts.set(k, a = { dataplane: dp, services: n, seconds: [], cleanupSeconds: [], rssMiB: [], cpuMsPerSample: [] });
      return a;
    };
    const samples = new Map<string, Sample[]>();
    const haveConntrack = findProgram('conntrack') !== null;
    const haveNft = findProgram('nft') !== null;
    const haveBpftool = findProgram('bpftool') !== null;
    // Socket LB translates only what starts inside the node's cgroup: wrk in the client pod must.
    const clientCgroup = await cgroupInside(l, CLIENT_POD);
    const clientNode = topo.pods.find((p) => p.name === CLIENT_POD)!.node;
    if (o.dataplanes.includes('ebpf') && clientCgroup !== l.cgroup(clientNode)) {
      throw new Error(`wrk in ${CLIENT_POD} would run in cgroup ${clientCgroup || '(none)'}, not ${l.cgroup(clientNode)} where the ebpf plane attaches`);
    }
    o.progress(`wrk in ${CLIENT_POD} runs in cgroup ${clientCgroup || '(none)'}`);
    let current: State = { dataplane: null };
    /** Per node, the interfaces the running ebpf agents hold tc programs on. */
    const tcDevices = new Map<string, string[]>();

    const leave = async (s: State): Promise<void> => {
      await Promise.all(agents.map((a) => a.stop()));
      agents = [];
      if (s.dataplane === null) return;
      const dp = s.dataplane;
      const t0 = Date.now();
      await Promise.all(nodes.map(async (n) => {
        // The ebpf agent's pins (and so its attached programs) outlive it: the cleanup must find
        // them, in the root mount namespace where /sys/fs/bpf is visible.
        const ebpf = dp === 'ebpf' ? ['--bpf-pin-path', l.bpfPinPath(n)] : [];
        const r = await l.exec(n, [process.execPath, RUDDER_BIN, 'cleanup', '--dataplane', dp, ...ebpf], { timeoutMs: 600_000, keepMounts: dp === 'ebpf' });
        if (r.code !== 0) throw new Error(`rudder cleanup --dataplane ${dp} on ${n} failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
      }));
      startRecord(dp, s.services).cleanupSeconds.push(secondsSince(t0));
      if (dp === 'ebpf') for (const n of nodes) await assertNoBpfLeft(n);
      tcDevices.clear();
      // Back to a pristine namespace: the built-in tables the data plane created stay registered
      // after cleanup and keep nf_conntrack in the path, which the direct baseline must not pay.
      if (haveNft) for (const n of nodes) await l.execOk(n, ['nft', 'flush', 'ruleset']);
    };

    /**
     * Throws unless the node's pins are gone and neither its cgroup nor the interfaces its agent
     * translated packets on have a program attached. Removes the clsact qdisc the tc programs
     * hung from, so the next state starts from a pristine namespace.
     */
    const assertNoBpfLeft = async (n: string): Promise<void> => {
      if (existsSync(l.bpfPinPath(n))) throw new Error(`rudder cleanup left ${l.bpfPinPath(n)} behind`);
      for (const dev of tcDevices.get(n) ?? []) {
        for (const dir of ['ingress', 'egress']) {
          const r = await l.execOk(n, ['tc', 'filter', 'show', 'dev', dev, dir]);
          if (r.stdout.trim() !== '') throw new Error(`tc filters still on ${dev} ${dir} of ${n} after rudder cleanup: ${r.stdout.trim().slice(0, 300)}`);
        }
        await l.exec(n, ['tc', 'qdisc', 'del', 'dev', dev, 'clsact']);
      }
      if (!haveBpftool) return;
      const r = await l.execOk(n, ['bpftool', '-j', 'cgroup', 'show', l.cgroup(n)], { keepMounts: true });
      const progs = r.stdout.trim() === '' ? [] : JSON.parse(r.stdout) as unknown[];
      if (progs.length > 0) throw new Error(`programs still attached to ${l.cgroup(n)} after rudder cleanup: ${r.stdout.trim().slice(0, 300)}`);
    };

    const enter = async (s: State): Promise<void> => {
      if (s.dataplane === null) return;
      const dp = s.dataplane;
      const file = manifests.get(s.services)!;
      const t0 = Date.now();
      const readyTimeoutMs = 60_000 + s.services * 25;
      const results = await Promise.allSettled(nodes.map((n) => startAgent(l, n, { dataplane: dp, manifests: [file], clusterCIDR: topo.clusterCIDR, extraArgs: ['--sync-period', '1h', ...(dp === 'ebpf' ? EBPF_CT_ARGS : [])], readyTimeoutMs })));
      agents = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
      startRecord(dp, s.services).seconds.push(secondsSince(t0));
      startRecord(dp, s.services).rssMiB.push(Math.max(...agents.map((a) => rssMiB(a.proc.child.pid))));
      // The external client's NodePort needs the per-packet path: every ebpf agent must have
      // attached it, on the interfaces holding its --node-ip (found by the agent itself).
      if (dp === 'ebpf') {
        const attached: string[] = [];
        for (const a of agents) {
          const pp = perPacketPath(a.proc.output());
          if (pp === null) throw new Error(`the ebpf agent on ${a.node} did not attach its per-packet path: ${a.proc.output().slice(-3).join(' | ')}`);
          tcDevices.set(a.node, pp.devices);
          attached.push(`${a.node} ${pp.devices.join(',')} (SNAT ports ${pp.snatPorts})`);
        }
        const note = `ebpf: per-packet path on ${attached.join(', ')}, the interfaces holding --node-ip (found by the agents)`;
        if (!notes.includes(note)) notes.push(note);
      }
      // Which iptables backend the agent chose (agents of other planes log it too, when they
      // remove iptables leftovers at start: only the iptables plane's own choice is noted).
      for (const line of dp === 'iptables' ? agents[0]!.proc.output() : []) {
        const m = /iptables backend selected.*?backend=(\S+)/.exec(line);
        const note = m === null ? null : `${dp}: ${m[1]} backend (auto-detected by the agent)`;
        if (note !== null && !notes.includes(note)) notes.push(note);
      }
    };

    /**
     * Connection attempts the running ebpf agents' programs turned away so far, per reason, both nodes;
     * null when an agent's /metrics does not answer.
     */
    const ebpfRejected = async (): Promise<Map<string, number> | null> => {
      const out = new Map<string, number>();
      for (const a of agents) {
        const m = await a.get('/metrics');
        if (m.status !== 200) return null;
        for (const [reason, n] of rejectedFlows(m.body)) out.set(reason, (out.get(reason) ?? 0) + n);
      }
      return out;
    };
    /** Per configuration id, the connection attempts the BPF programs turned away during its samples, per reason. */
    const turnedAway = new Map<string, Map<string, number>>();

    const sample = async (c: BenchConfig, round: number): Promise<void> => {
      if (haveConntrack) await Promise.all(nodes.map((n) => l.exec(n, ['conntrack', '-F'])));
      await sleep(300);
      const argv = wrkArgv({ url: c.url, threads: o.threads, connections: o.connections, durationSec: o.durationSec, timeoutSec: 2 });
      const agentCpu = (): number => agents.reduce((sum, a) => sum + cpuMs(a.proc.child.pid), 0);
      const rejected0 = c.dataplane === 'ebpf' ? await ebpfRejected() : null;
      const cpu0 = agentCpu();
      const busy0 = machineBusyCpuSeconds();
      const r = await l.exec(c.from, argv, { timeoutMs: (o.durationSec + 30) * 1000 });
      const busy = machineBusyCpuSeconds() - busy0;
      if (c.dataplane !== null && c.services !== null) startRecord(c.dataplane, c.services).cpuMsPerSample.push(agentCpu() - cpu0);
      // wrk counts a flow whose SYN the programs drop as a slow connection, not an error: count them here.
      const rejected1 = rejected0 === null ? null : await ebpfRejected();
      const away = rejected0 === null || rejected1 === null ? new Map<string, number>() : rejectedSince(rejected0, rejected1);
      if (away.size > 0) {
        const sum = turnedAway.get(c.id) ?? new Map<string, number>();
        for (const [reason, n] of away) sum.set(reason, (sum.get(reason) ?? 0) + n);
        turnedAway.set(c.id, sum);
      }
      if (r.code !== 0) throw new Error(`wrk in ${c.from} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().slice(0, 300)}`);
      const w = parseWrk(r.stdout);
      const s: Sample = {
        round, reqPerSec: w.reqPerSec, requests: w.requests, p50Ms: w.p50Ms, p99Ms: w.p99Ms, errors: w.errors, errorDetail: w.errorDetail,
        cpuSeconds: busy, cpuUsPerRequest: cpuUsPerRequest(busy, w.requests),
      };
      samples.set(c.id, [...(samples.get(c.id) ?? []), s]);
      o.progress(`  ${c.label}: ${Math.round(w.reqPerSec).toLocaleString('en-US')} req/s, p50 ${w.p50Ms.toFixed(2)} ms, p99 ${w.p99Ms.toFixed(2)} ms, CPU ${s.cpuUsPerRequest.toFixed(1)} µs/req`
        + `${w.errors > 0 ? `, errors: ${w.errorDetail}` : ''}${away.size > 0 ? `, connection attempts turned away by the BPF programs: ${reasons(away)}` : ''}`);
    };

    for (let round = 1; round <= o.rounds; round++) {
      for (const s of states) {
        await leave(current);
        current = { dataplane: null };
        o.progress(`[round ${round}/${o.rounds}] ${stateName(s)}${s.dataplane === null ? '' : ': starting agents on every node'}`);
        await enter(s);
        current = s;
        const mine = configs.filter((c) => inState(c, s));
        for (const c of mine) await checkPath(l, c, s);
        for (const c of mine) await sample(c, round);
      }
    }

    machine.loadAfter = loadavg();
    for (const c of configs) {
      const away = turnedAway.get(c.id);
      if (away !== undefined) notes.push(`${c.dataplane}, ${c.services} service${c.services === 1 ? '' : 's'}, ${c.label}: the BPF programs turned away connection attempts during the samples (${reasons(away)}; rudder_ebpf_service_rejected_total, both nodes); wrk waits for the SYN retransmits instead of counting errors, so this shows as fewer req/s`);
    }
    return {
      command: o.command,
      machine,
      settings: {
        durationSec: o.durationSec, connections: o.connections, threads: o.threads, rounds: o.rounds,
        dataplanes: o.dataplanes, services: o.services, conntrackTimeWaitSec: timeWait,
      },
      server: `${server.kind} in ${SERVER_POD} (${target.endpointIP}:${SERVER_PORT}, on ${target.endpointNode})`,
      target,
      clientCgroup,
      labRun: l.runId,
      rows: summarize(configs, samples),
      agentStarts: [...starts.values()],
      notes,
      manifestGenerationMs: generationMs,
      elapsedSec: Math.round(secondsSince(started)),
    };
  } finally {
    // Agents and the server die with the lab's namespaces; stopping them first keeps the exit quiet.
    await Promise.all(agents.map((a) => a.stop().catch(() => {})));
    await server?.stop().catch(() => {});
    await lab?.destroy();
    dir.remove();
    process.off('exit', onExit);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function minutes(sec: number): string {
  return sec < 60 ? `${sec} s` : `${Math.floor(sec / 60)} min ${sec % 60} s`;
}

const load = (l: number[]): string => l.map((x) => x.toFixed(2)).join(' ');

/** The report: command, machine facts, method, the table, agent start times, notes. */
export function renderReport(r: TrafficBenchResult): string {
  const m = r.machine;
  const s = r.settings;
  // The median of per-round figures with its unit; '-' when there are none or one is unreadable.
  const mid = (xs: number[], digits: number, unit: string): string => (xs.length === 0 || xs.some((x) => !Number.isFinite(x)) ? '-' : `${[...xs].sort((a, b) => a - b)[xs.length >> 1]!.toFixed(digits)} ${unit}`);
  const out = [
    '## rudder bench: short-connection HTTP through the data planes',
    '',
    `command: \`${r.command}\``,
    `machine: ${m.nproc} CPUs (${m.cpu}), Linux ${m.kernel}, Node.js ${m.node}, wrk ${m.wrk}, ${m.iptables}; load average ${load(m.loadBefore)} before, ${load(m.loadAfter)} after`,
    `method: \`${wrkArgv({ url: 'URL', threads: s.threads, connections: s.connections, durationSec: s.durationSec, timeoutSec: 2 }).join(' ').replace('Connection: close', "'Connection: close'")}\` (one TCP connection per request); `
      + `${s.rounds} round${s.rounds === 1 ? '' : 's'}, configurations interleaved in each; medians over the rounds; conntrack flushed in the node namespaces before every sample`
      + `${s.conntrackTimeWaitSec === null ? '' : ` (TIME_WAIT timeout ${s.conntrackTimeWaitSec} s there; for ebpf its closing timeout, ${EBPF_CT_ARGS.join(' ')})`}; ip_local_port_range 1024-65535 where wrk runs; no TIME_WAIT sockets kept in the server pod (tcp_max_tw_buckets=0)`,
    `server: ${r.server}; wrk in ${CLIENT_POD} (node-1, cgroup ${r.clientCgroup || 'none'}) and in the external client; direct rows run with no data plane loaded (no conntrack, no BPF program attached)`,
    `target: ${r.target.namespace}/${r.target.name} ClusterIP ${r.target.clusterIP}:${r.target.port}, NodePort ${r.target.nodePort}, one endpoint; "services" counts every service in the table, the target last in rule order (the others: ClusterIP, 4 endpoints each)`,
    '',
    renderTable(r.rows),
    CPU_PER_REQUEST_NOTE,
    '',
  ];
  if (r.agentStarts.length > 0) {
    out.push(`agent start to healthy, both nodes in parallel (median): ${r.agentStarts.map((a) => `${a.dataplane} ${a.services.toLocaleString('en-US')}: ${mid(a.seconds, 1, 's')}`).join(', ')}`);
    const cleanups = r.agentStarts.filter((a) => a.cleanupSeconds.length > 0);
    if (cleanups.length > 0) out.push(`rudder cleanup, both nodes in parallel (median): ${cleanups.map((a) => `${a.dataplane} ${a.services.toLocaleString('en-US')}: ${mid(a.cleanupSeconds, 1, 's')}`).join(', ')}`);
    out.push(`agent RSS once healthy, larger node (median): ${r.agentStarts.map((a) => `${a.dataplane} ${a.services.toLocaleString('en-US')}: ${mid(a.rssMiB, 0, 'MiB')}`).join(', ')}`);
    out.push(`agents' CPU while wrk ran, both nodes (median per ${s.durationSec} s sample): ${r.agentStarts.map((a) => `${a.dataplane} ${a.services.toLocaleString('en-US')}: ${mid(a.cpuMsPerSample, 0, 'ms')}`).join(', ')}`);
  }
  // How far the same configuration moves between rounds: ratios closer to 1 than this are noise.
  for (const d of r.rows.filter((x) => x.via === 'direct' && x.samples.length > 1)) {
    const xs = d.samples.map((x) => x.reqPerSec);
    const lo = Math.min(...xs);
    const hi = Math.max(...xs);
    const cpu = d.samples.map((x) => x.cpuUsPerRequest);
    out.push(`spread: ${d.label} ${Math.round(lo).toLocaleString('en-US')}-${Math.round(hi).toLocaleString('en-US')} req/s over the rounds (${(((hi - lo) / d.reqPerSec) * 100).toFixed(0)}% of its median), `
      + `CPU ${Math.min(...cpu).toFixed(1)}-${Math.max(...cpu).toFixed(1)} µs/req`);
  }
  for (const n of r.notes) out.push(`note: ${n}`);
  out.push(`lab run ${r.labRun}; took ${minutes(r.elapsedSec)}`);
  return out.join('\n') + '\n';
}
