// The eBPF agent's lifecycle on a real kernel, in the lab: a pod keeps connecting to a ClusterIP
// every few milliseconds while the agent is killed with SIGKILL and restarted (not one connection
// may fail: the programs and maps live on in bpffs); so do an external client's keep-alive
// connections through NodePorts (the per-packet path and its pinned connection tracking);
// `rudder services --agent` reads the maps back; the programs' counters reach /metrics;
// switching the node to iptables removes every eBPF pin; `rudder cleanup --dataplane ebpf`
// detaches everything.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, defaultTopology } from '../../src/lab/index.js';
import { RUDDER_BIN, startAgent, type LabAgent } from '../../src/lab/agents.js';
import { createLogger } from '../../src/observe/log.js';
import { DEMO_MANIFESTS } from '../../src/cli/demo.js';
import type { ProgrammedFrontend } from '../../src/dataplane/dataplane.js';
import type { KeepAliveSummary } from '../support/keepalive-client.js';

const root = process.getuid?.() === 0;
const KEEPALIVE_CLIENT = fileURLToPath(new URL('../support/keepalive-client.js', import.meta.url));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Two eTP=Cluster NodePorts beside the demo's: one backend on node-2 (SNATed), one on node-1. */
const nodePortService = (name: string, clusterIP: string, nodePort: number, ip: string, node: string): string => `
apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: demo}
spec:
  type: NodePort
  clusterIP: ${clusterIP}
  clusterIPs: [${clusterIP}]
  externalTrafficPolicy: Cluster
  selector: {app: ${name}}
  ports:
  - {name: http, port: 80, targetPort: 8080, nodePort: ${nodePort}, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${name}-1
  namespace: demo
  labels: {kubernetes.io/service-name: ${name}}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
endpoints:
- {addresses: [${ip}], nodeName: ${node}, conditions: {ready: true, serving: true, terminating: false}}
`;
const NODEPORTS_YAML = [
  nodePortService('hold-remote', '10.96.0.20', 30090, '10.244.2.10', 'node-2'),
  nodePortService('hold-local', '10.96.0.21', 30091, '10.244.1.10', 'node-1'),
].join('---');

/** Connects to url every `gapMs` for `ms`, one connection at a time; prints {ok, failed, errors}. */
const connectLoop = (host: string, port: number, ms: number, gapMs: number): string => `
const http = require('http'); let ok = 0, failed = 0; const errors = {}; const end = Date.now() + ${ms};
const one = () => new Promise((res) => { const req = http.get({ host: ${JSON.stringify(host)}, port: ${port}, path: '/', agent: false, timeout: 1000 }, (r) => { r.resume(); r.on('end', () => { ok++; res(); }); });
  req.on('timeout', () => req.destroy(new Error('TIMEOUT'))); req.on('error', (e) => { failed++; errors[e.code || e.message] = (errors[e.code || e.message] || 0) + 1; res(); }); });
(async () => { console.log('started'); while (Date.now() < end) { await one(); await new Promise((r) => setTimeout(r, ${gapMs})); } console.log(JSON.stringify({ ok, failed, errors })); })();`;

describe('ebpf agent in the lab', { skip: root ? false : 'needs root' }, () => {
  let lab: Lab;
  let agent: LabAgent | undefined;
  let manifestDir: string | undefined;
  let nodePorts: string;

  before(async () => {
    manifestDir = mkdtempSync(join(tmpdir(), 'rudder-ebpf-agent-'));
    nodePorts = join(manifestDir, 'nodeports.yaml');
    writeFileSync(nodePorts, NODEPORTS_YAML);
    lab = await Lab.create(defaultTopology(), { logger: createLogger({ level: 'warn' }) });
    await lab.startServers();
  });

  after(async () => {
    await agent?.stop().catch(() => undefined);
    await lab?.destroy();
    if (manifestDir !== undefined) rmSync(manifestDir, { recursive: true, force: true });
  });

  // keepMounts for every plane: an agent of another plane must see /sys/fs/bpf to remove the
  // eBPF pins, as it does on a node (where nothing remounts /sys under it).
  const start = async (dataplane = 'ebpf'): Promise<LabAgent> =>
    startAgent(lab, 'node-1', { dataplane, manifests: [DEMO_MANIFESTS, nodePorts], clusterCIDR: '10.244.0.0/16', extraArgs: ['--sync-period', '2s'], keepMounts: true });

  test('a pod\'s connections every 5 ms survive SIGKILL and a restart of the agent: none fails', async () => {
    agent = await start();
    const lines: string[] = [];
    const client = lab.spawn('pod-1a', [process.execPath, '-e', connectLoop('10.96.0.10', 80, 6000, 5)], { label: 'client', onStdoutLine: (l) => lines.push(l) });
    for (let i = 0; i < 100 && !lines.includes('started'); i++) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 1000));
    agent.proc.child.kill('SIGKILL');
    await agent.proc.exited;
    await new Promise((r) => setTimeout(r, 1000));
    agent = await start();
    await client.exited;
    const summary = JSON.parse(lines.at(-1) ?? '{}') as { ok: number; failed: number; errors: Record<string, number> };
    assert.equal(summary.failed, 0, `connections failed around the restart: ${JSON.stringify(summary)}`);
    assert.ok(summary.ok > 200, `the client kept connecting: ${JSON.stringify(summary)}`);
    console.log(`# ${summary.ok} connections, ${summary.failed} failed, across SIGKILL + restart`);
  });

  // Four keep-alive connections from the external client to node-1's NodePorts, two to a backend
  // on node-2 (DNAT and SNAT to the node IP at tc) and two to a backend on node-1, each exchanging
  // a request and its answer every 20 ms while the agent is SIGKILLed and restarted: the tc
  // filters stay attached and translate from the pinned connection tracking, so no exchange fails,
  // no connection is reset, and the pod sees the same connection (same client address and port).
  test('an external client\'s keep-alive connections through NodePorts survive SIGKILL and a restart of the agent: none fails or resets', async () => {
    agent ??= await start();
    const node = lab.ip('node-1');
    const targets = ['remote-a', 'remote-b'].map((n) => `${n}=${node}:30090`).concat(['local-a', 'local-b'].map((n) => `${n}=${node}:30091`));
    const lines: string[] = [];
    const client = lab.spawn('client', [process.execPath, KEEPALIVE_CLIENT, '--every', '20', '--timeout', '1000', ...targets], { label: 'keepalive-client', onStdoutLine: (l) => lines.push(l) });
    const phase = (name: string): void => { client.child.stdin!.write(`phase ${name}\n`); };
    for (let i = 0; i < 200 && client.running() && !lines.some((l) => l.includes('"ready"')); i++) await sleep(50);
    assert.ok(client.running() && lines.some((l) => l.includes('"ready"')), `the client connected: ${client.output().join('\n')}`);
    await sleep(1000);
    phase('agent-killed');
    agent.proc.child.kill('SIGKILL');
    await agent.proc.exited;
    await sleep(1000);
    phase('agent-starting');
    agent = await start();
    phase('agent-healthy');
    await sleep(3000);
    client.child.stdin!.end('stop\n');
    await client.exited;
    const summary = JSON.parse(lines.at(-1) ?? '{}') as KeepAliveSummary;
    const conns = summary.connections ?? [];
    assert.equal(conns.length, targets.length, `one summary per connection: ${client.output().join('\n')}`);
    for (const c of conns) {
      const what = `${c.name} (${c.target}): ${JSON.stringify(c)}`;
      assert.equal(c.failure, null, `an exchange failed or the connection was reset: ${what}`);
      assert.equal(c.viewChanges, 0, `the pod saw the same connection throughout: ${what}`);
      for (const p of ['start', 'agent-killed', 'agent-starting', 'agent-healthy']) assert.ok((c.byPhase[p] ?? 0) > 0, `exchanges in phase ${p}: ${what}`);
      if (c.name.startsWith('remote')) assert.deepEqual([c.view?.pod, c.view?.client], ['pod-2a', node], `SNATed to node-1 on the way to node-2: ${what}`);
      else assert.equal(c.view?.pod, 'pod-1a', what);
    }
    const total = conns.reduce((n, c) => n + c.exchanges, 0);
    const down = conns.reduce((n, c) => n + (c.byPhase['agent-killed'] ?? 0) + (c.byPhase['agent-starting'] ?? 0), 0);
    const worst = conns.reduce((a, b) => (b.maxGapMs > a.maxGapMs ? b : a));
    console.log(`# ${total} exchanges on ${conns.length} keep-alive connections across SIGKILL + restart (${down} while the agent was dead or starting), 0 failed, 0 reset;`
      + ` longest gap between two exchanges on a connection: ${worst.maxGapMs} ms (${worst.name}, ${worst.maxGapPhase}; per connection ${conns.map((c) => `${c.name} ${c.maxGapMs}`).join(', ')} ms)`);
  });

  test('rudder services --agent reads the maps back; the programs\' counters are metrics', async () => {
    const r = await lab.execOk('node-1', [process.execPath, RUDDER_BIN, 'services', '--agent', '127.0.0.1:10249', '--json']);
    const fes = JSON.parse(r.stdout) as Array<Record<string, unknown>>;
    assert.ok(fes.length > 0, r.stdout);
    const raw = JSON.parse((await agent!.get('/services')).body) as ProgrammedFrontend[];
    const web = raw.find((f) => f.address === '10.96.0.10:80');
    assert.ok(web !== undefined && web.backends.length > 0 && web.drift === undefined, JSON.stringify(web));
    await lab.curl('pod-1a', 'http://10.96.0.10/', { timeoutMs: 2000 });
    const metrics = (await agent!.get('/metrics')).body;
    const m = /^rudder_ebpf_service_connections_total\{[^}]*frontend="10\.96\.0\.10:80"[^}]*\} (\d+)$/m.exec(metrics);
    assert.ok(m !== null && Number(m[1]) > 0, `per-frontend connection counter: ${metrics.split('\n').filter((l) => l.startsWith('rudder_ebpf')).slice(0, 5).join(' | ')}`);
    assert.match(metrics, /^rudder_dataplane_drift_repairs_total 0$/m);
    assert.match(metrics, /^rudder_ebpf_backend_connections_total\{backend="10\.244\.\d+\.\d+:8080",protocol="TCP"\} [1-9]/m);
  });

  test('switching the node to iptables removes every eBPF pin; back to ebpf, and cleanup detaches it', async () => {
    const pins = lab.bpfPinPath('node-1');
    assert.ok(existsSync(pins) && readdirSync(pins).length > 0);
    // The per-packet programs sit on the interface holding the node IP.
    const tcFilters = async (): Promise<string> => {
      const show = (dir: string) => lab.execOk('node-1', ['tc', 'filter', 'show', 'dev', 'eth0', dir]).then((r) => r.stdout);
      return `${await show('ingress')}${await show('egress')}`;
    };
    assert.match(await tcFilters(), /rd_from_netdev[\s\S]*rd_to_netdev/, 'ingress and egress filters on eth0');
    // An agent removes the other plane's leftovers once its own first sync has landed.
    const eventually = async (cond: () => Promise<boolean> | boolean, what: string): Promise<void> => {
      const deadline = Date.now() + 10_000;
      while (!(await cond())) {
        assert.ok(Date.now() < deadline, what);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await agent!.stop();
    agent = await start('iptables');
    await eventually(() => !existsSync(pins), 'the iptables agent removed the eBPF leftovers');
    await eventually(async () => !/rd_/.test(await tcFilters()), 'and the tc filters');
    await agent.stop();
    agent = await start('ebpf');
    const chains = async (): Promise<string[]> => (await lab.execOk('node-1', ['iptables-save', '-t', 'nat'])).stdout.split('\n').filter((l) => /KUBE-/.test(l));
    await eventually(async () => (await chains()).length === 0, `the ebpf agent removed the iptables plane's chains: ${(await chains()).join(' | ')}`);
    await agent.stop();
    agent = undefined;
    const r = await lab.curl('pod-1a', 'http://10.96.0.10/', { timeoutMs: 2000 });
    assert.ok(r.ok, 'rules stay in place after SIGTERM');
    await lab.execOk('node-1', [process.execPath, RUDDER_BIN, 'cleanup', '--dataplane', 'ebpf', '--bpf-pin-path', pins], { keepMounts: true });
    assert.equal(existsSync(pins), false);
    assert.doesNotMatch(await tcFilters(), /rd_/, 'cleanup detached the tc filters');
    const after = await lab.curl('pod-1a', 'http://10.96.0.10/', { timeoutMs: 1500 });
    assert.ok(!after.ok, 'no longer translated after cleanup');
  });
});
