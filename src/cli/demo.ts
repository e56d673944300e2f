// `rudder demo`: a two-node lab, one agent per node, real requests through a ClusterIP, a
// NodePort, a LoadBalancer IP and an external IP, then `rudder services` read back from the
// kernel. Everything is torn down at the end, on failure and on Ctrl-C.

import { fileURLToPath } from 'node:url';
import { startAgent, type LabAgent } from '../lab/agents.js';
import { Lab, defaultTopology } from '../lab/index.js';
import type { ProbeResult } from '../lab/index.js';
import { createLogger } from '../observe/log.js';
import { renderProgrammed } from './services.js';
import type { ProgrammedFrontend } from '../dataplane/dataplane.js';
import { UsageError, flagBool, flagOne, parseArgs, renderHelp, type FlagSpecs } from './args.js';

export const DEMO_MANIFESTS = fileURLToPath(new URL('../../../examples/demo.yaml', import.meta.url));

const FLAGS: FlagSpecs = {
  dataplane: { value: 'NAME', help: 'data plane to demonstrate (default ebpf where the kernel supports it, else iptables)' },
  requests: { value: 'N', help: 'requests per frontend (default 6)' },
  help: { boolean: true, alias: 'h', help: 'show this help' },
};

function say(s: string): void {
  process.stdout.write(`${s}\n`);
}

function describe(r: ProbeResult): string {
  return r.ok ? `${r.reply.pod} (saw client ${r.reply.client})` : `failed: ${r.kind}${r.message ? ` (${r.message})` : ''}`;
}

async function show(lab: Lab, title: string, from: string, url: string, n: number): Promise<number> {
  say(`\n== ${title}: ${n} requests from ${from} to ${url}`);
  const counts = new Map<string, number>();
  let failures = 0;
  for (let i = 0; i < n; i++) {
    const r = await lab.curl(from, url, { timeoutMs: 2000 });
    const d = describe(r);
    if (!r.ok) failures++;
    counts.set(d, (counts.get(d) ?? 0) + 1);
  }
  for (const [d, c] of counts) say(`   ${String(c).padStart(3)} x ${d}`);
  return failures;
}

export async function demoCommand(argv: string[]): Promise<number> {
  const p = parseArgs(argv, FLAGS);
  if (flagBool(p, 'help')) {
    process.stdout.write(renderHelp('Usage: rudder demo [--dataplane ebpf|iptables|nftables]   (root: builds network namespaces)', FLAGS));
    return 0;
  }
  let dataplane = flagOne(p, 'dataplane');
  if (dataplane === undefined) {
    const { ebpfUnsupported } = await import('../dataplane/ebpf/support.js');
    const why = ebpfUnsupported();
    if (why !== null) say(`== eBPF is not available here (${why}): showing the iptables data plane`);
    dataplane = why === null ? 'ebpf' : 'iptables';
  }
  const { DATAPLANES } = await import('../dataplane/index.js');
  if (!(DATAPLANES as readonly string[]).includes(dataplane)) throw new UsageError(`--dataplane: ${JSON.stringify(dataplane)} is not one of ${DATAPLANES.join(', ')}`);
  const n = Number(flagOne(p, 'requests') ?? '6');
  if (!Number.isInteger(n) || n < 1 || n > 1000) throw new UsageError('--requests must be 1..1000');
  if (process.getuid?.() !== 0) throw new UsageError('the demo builds network namespaces: run it as root');

  const logger = createLogger({ level: process.env['RUDDER_LOG_LEVEL'] === 'debug' ? 'debug' : 'warn' });
  const topo = defaultTopology();
  say('== Building the lab: 2 nodes, 4 pods, 1 external client (network namespaces, no default route)');
  const lab = await Lab.create(topo, { logger });
  const agents: LabAgent[] = [];
  let failures = 0;
  try {
    for (const node of topo.nodes) say(`   ${node.name.padEnd(7)} ${node.ip.padEnd(13)} pods ${topo.pods.filter((x) => x.node === node.name).map((x) => `${x.name}=${x.ip}`).join(' ')}`);
    for (const c of topo.clients) say(`   ${c.name.padEnd(7)} ${c.ip}`);
    await lab.startServers();
    say(`== Starting one rudder agent per node (--dataplane ${dataplane}) on ${DEMO_MANIFESTS}`);
    for (const node of topo.nodes) {
      agents.push(await startAgent(lab, node.name, { dataplane, manifests: [DEMO_MANIFESTS], clusterCIDR: topo.clusterCIDR }));
      say(`   agent on ${node.name}: healthy`);
    }
    failures += await show(lab, 'ClusterIP demo/web (pod to service; 3 endpoints on 2 nodes)', 'pod-1b', 'http://10.96.0.10/', n);
    if (dataplane === 'ebpf') {
      // Socket LB: every connection that starts on a node is sent to its backend at connect().
      failures += await show(lab, 'NodePort demo/web on 127.0.0.1 (the node\'s own process; localhost NodePorts)', 'node-1', 'http://127.0.0.1:30080/', n);
      failures += await show(lab, 'LoadBalancer IP demo/shop from a pod (short-circuited to every endpoint)', 'pod-1a', 'http://198.18.1.10/', n);
      failures += await show(lab, 'external IP demo/api from a pod (endpoint on node-2)', 'pod-1b', 'http://198.18.1.20/', Math.min(n, 3));
      say('\n   (external clients reach NodePorts, LB IPs and external IPs through the per-packet path, not built for eBPF yet)');
    } else {
      failures += await show(lab, 'NodePort demo/web (external client to node-1; eTP=Cluster, masqueraded)', 'client', 'http://198.18.0.2:30080/', n);
      failures += await show(lab, 'LoadBalancer IP demo/shop (eTP=Local: node-local endpoint, client IP kept)', 'client', 'http://198.18.1.10/', n);
      failures += await show(lab, 'external IP demo/api (endpoint on node-2)', 'client', 'http://198.18.1.20/', Math.min(n, 3));
    }
    say('\n== A service without endpoints is rejected at once (no timeout)');
    const t0 = Date.now();
    const r = await lab.curl('pod-1b', 'http://10.96.0.14/', { timeoutMs: 3000 });
    say(`   ${r.ok ? 'unexpectedly answered' : r.kind} after ${Date.now() - t0} ms`);
    if (r.ok || r.kind !== 'refused') failures++;

    say(`\n== rudder services on node-1 (read back from the kernel${dataplane === 'ebpf' ? ': the BPF maps' : ''})`);
    const res = await agents[0]!.get('/services');
    if (res.status !== 200) throw new Error(`agent /services answered ${res.status}`);
    process.stdout.write(renderProgrammed(JSON.parse(res.body) as ProgrammedFrontend[]));
  } finally {
    say('\n== Tearing down');
    for (const a of agents) await a.stop();
    await lab.destroy();
    say('   lab removed');
  }
  say(failures === 0 ? '\nDemo finished: every request went where the semantics say.' : `\nDemo finished with ${failures} failed request(s).`);
  return failures === 0 ? 0 : 1;
}
