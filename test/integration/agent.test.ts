// The agent's lifecycle on a real kernel: started through nsenter, healthy after its first sync,
// leaves its rules in place on SIGTERM (traffic keeps flowing), and `rudder cleanup` removes them.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Lab, defaultTopology } from '../../src/lab/index.js';
import { RUDDER_BIN } from '../../src/lab/agents.js';
import { createLogger } from '../../src/observe/log.js';
import { DEMO_MANIFESTS } from '../../src/cli/demo.js';
import { parseUdpEntries } from '../../src/dataplane/conntrack.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = process.getuid?.() === 0;
let lab: Lab;

before(async () => {
  if (!root) return;
  lab = await Lab.create(defaultTopology(), { logger: createLogger({ level: 'warn' }) });
  await lab.startServers();
});

after(async () => {
  await lab?.destroy();
});

async function status(node: string, url: string): Promise<number> {
  const r = await lab.exec(node, ['curl', '-s', '-o', '/dev/null', '--max-time', '2', '-w', '%{http_code}', url]);
  return Number(r.stdout) || 0;
}

async function kubeChains(node: string): Promise<string[]> {
  const out: string[] = [];
  for (const table of ['nat', 'filter']) {
    const r = await lab.execOk(node, ['iptables-save', '-t', table]);
    out.push(...r.stdout.split('\n').filter((l) => /^:KUBE-/.test(l)).map((l) => `${table} ${l.slice(1).split(' ')[0]}`));
  }
  return out;
}

test('agent under nsenter: healthy after the first sync, rules survive SIGTERM, cleanup removes them', { skip: root ? false : 'needs root' }, async () => {
  const ns = lab.ns('node-1');
  const agent = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', process.execPath, RUDDER_BIN, 'agent', '--dataplane', 'iptables',
    '-f', DEMO_MANIFESTS, '--node', 'node-1', '--cluster-cidr', '10.244.0.0/16'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  agent.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
  try {
    const deadline = Date.now() + 15_000;
    while ((await status('node-1', 'http://127.0.0.1:10256/healthz')) !== 200) {
      assert.ok(Date.now() < deadline, `agent never became healthy:\n${stderr}`);
      assert.equal(agent.exitCode, null, `agent exited:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(await status('node-1', 'http://127.0.0.1:10256/livez'), 200);
    const metrics = await lab.execOk('node-1', ['curl', '-s', 'http://127.0.0.1:10249/metrics']);
    assert.match(metrics.stdout, /^kubeproxy_sync_proxy_rules_last_timestamp_seconds \d/m);
    assert.match(metrics.stdout, /^rudder_service_ports 5$/m);
    assert.match(stderr, /rudder agent starting/);
    assert.match(stderr, /iptables backend/);

    const traced = await lab.execOk('node-1', [process.execPath, RUDDER_BIN, 'trace', '--agent', '127.0.0.1:10249',
      '--src', '10.244.1.11', '--dst', '10.96.0.10', '--port', '80', '--json']);
    const verdict = JSON.parse(traced.stdout) as { verdict: string; backends: string[] };
    assert.deepEqual([verdict.verdict, verdict.backends], ['forward', ['10.244.1.10:8080', '10.244.2.10:8080', '10.244.2.11:8080']], 'trace --agent answers from the live table');
    const services = await lab.execOk('node-1', [process.execPath, RUDDER_BIN, 'services', '--agent', '127.0.0.1:10249']);
    assert.match(services.stdout, /^demo\/web:http\/TCP\s+10\.96\.0\.10:80\/TCP\s+ClusterIP\s+10\.244\.1\.10:8080$/m, 'services --agent reads the kernel back');

    // demo/shop has eTP=Local and healthCheckNodePort 32000: a load balancer probing node-1 from
    // outside learns it has one local endpoint.
    const hc = await lab.execOk('client', ['curl', '-s', '--max-time', '3', '-w', '\n%{http_code}', 'http://198.18.0.2:32000/']);
    const [hcBody, hcStatus] = hc.stdout.split('\n');
    assert.equal(hcStatus, '200', hc.stdout);
    assert.deepEqual(JSON.parse(hcBody!), { service: { namespace: 'demo', name: 'shop' }, localEndpoints: 1, serviceProxyHealthy: true });

    const programmed = await kubeChains('node-1');
    assert.ok(programmed.includes('nat KUBE-SERVICES') && programmed.some((c) => c.startsWith('nat KUBE-SVC-')), programmed.join('\n'));

    agent.kill('SIGTERM');
    const [code] = await once(agent, 'exit');
    assert.equal(code, 0, stderr);
    assert.deepEqual(await kubeChains('node-1'), programmed, 'SIGTERM leaves every rule in place');
    const r = await lab.curl('pod-1b', 'http://10.96.0.10/', { timeoutMs: 2000 });
    assert.ok(r.ok, `service traffic still flows after the agent stopped: ${JSON.stringify(r)}`);

    await lab.execOk('node-1', [process.execPath, RUDDER_BIN, 'cleanup', '--bpf-pin-path', lab.bpfPinPath('node-1')]);
    assert.deepEqual(await kubeChains('node-1'), [], 'cleanup removes every KUBE- chain');
    const save = await lab.execOk('node-1', ['iptables-save']);
    assert.doesNotMatch(save.stdout, /KUBE-/, 'no jump rule is left either');
  } finally {
    if (agent.exitCode === null) agent.kill('SIGKILL');
  }
});

test('taking a node over from kube-proxy\'s nftables mode: its tables go once Rudder\'s first sync has landed', { skip: root ? false : 'needs root' }, async () => {
  const ns = lab.ns('node-2');
  // kube-proxy's tables, as its nftables mode names them (the content does not matter here).
  await lab.execOk('node-2', ['nft', 'add table ip kube-proxy; add chain ip kube-proxy services; add table ip6 kube-proxy; add chain ip6 kube-proxy services; add table ip keepme']);
  const agent = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', process.execPath, RUDDER_BIN, 'agent', '--dataplane', 'nftables',
    '-f', DEMO_MANIFESTS, '--node', 'node-2', '--cluster-cidr', '10.244.0.0/16', '--bpf-pin-path', lab.bpfPinPath('node-2')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  agent.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
  try {
    const tables = async (): Promise<string> => (await lab.execOk('node-2', ['nft', 'list', 'tables'])).stdout;
    const deadline = Date.now() + 15_000;
    while ((await status('node-2', 'http://127.0.0.1:10256/healthz')) !== 200 || /kube-proxy/.test(await tables())) {
      assert.ok(Date.now() < deadline, `agent never became healthy with kube-proxy's tables gone:\n${await tables()}\n${stderr}`);
      assert.equal(agent.exitCode, null, `agent exited:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const t = await tables();
    assert.match(t, /table ip rudder/);
    assert.match(t, /table ip keepme/, 'another tool\'s table stays');
    const r = await lab.curl('pod-2b', 'http://10.96.0.10/', { timeoutMs: 2000 });
    assert.ok(r.ok, `served by Rudder: ${JSON.stringify(r)}`);
  } finally {
    if (agent.exitCode === null) agent.kill('SIGKILL');
    await lab.exec('node-2', [process.execPath, RUDDER_BIN, 'cleanup', '--bpf-pin-path', lab.bpfPinPath('node-2')]);
    await lab.exec('node-2', ['nft', 'delete table ip keepme']);
  }
});

test('a restart re-balances no live UDP flow; only entries towards an endpoint that left meanwhile are deleted', { skip: root ? false : 'needs root' }, async () => {
  const ns = lab.ns('node-1');
  const dir = mkdtempSync(join(tmpdir(), 'rudder-udp-'));
  const manifest = join(dir, 'udp.yaml');
  const write = (eps: string[]): void => writeFileSync(manifest, [
    'apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: t}\nspec: {clusterIP: 10.96.0.40, ports: [{name: u, port: 53, targetPort: 5300, protocol: UDP}]}',
    `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: echo-1, namespace: t, labels: {kubernetes.io/service-name: echo}}\naddressType: IPv4\nports: [{name: u, port: 5300, protocol: UDP}]\nendpoints: [${eps.map((ip) => `{addresses: [${ip}]}`).join(', ')}]`,
  ].join('\n---\n'));
  const start = async () => {
    const agent = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', process.execPath, RUDDER_BIN, 'agent', '--dataplane', 'iptables',
      '-f', manifest, '--node', 'node-1', '--cluster-cidr', '10.244.0.0/16', '--bpf-pin-path', lab.bpfPinPath('node-1')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    agent.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    const deadline = Date.now() + 15_000;
    while ((await status('node-1', 'http://127.0.0.1:10256/healthz')) !== 200) {
      assert.ok(Date.now() < deadline && agent.exitCode === null, `agent not healthy:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return agent;
  };
  const stop = async (agent: ReturnType<typeof spawn>): Promise<void> => {
    agent.kill('SIGTERM');
    await once(agent, 'exit');
  };
  /** The flows to the service, by client port: where their replies come from. */
  const flows = async (): Promise<Map<number, string>> => {
    const r = await lab.exec('node-1', ['conntrack', '-L', '-p', 'udp', '--orig-dst', '10.96.0.40']);
    return new Map(parseUdpEntries(r.stdout).map((e) => [e.sport, e.replySrc]));
  };
  let agent: ReturnType<typeof spawn> | undefined;
  try {
    await lab.exec('node-1', ['conntrack', '-D', '-p', 'udp', '--orig-dst', '10.96.0.40']);
    write(['10.244.1.10', '10.244.2.10']);
    agent = await start();
    // Flows from fixed client ports until both endpoints hold one.
    for (let port = 41000; port < 41040; port++) {
      const r = await lab.udp('pod-1b', '10.96.0.40', 53, 'x', { localPort: port });
      assert.ok(r.ok, `UDP through the service: ${JSON.stringify(r)}`);
      if (new Set((await flows()).values()).size === 2) break;
    }
    const before = await flows();
    assert.equal(new Set(before.values()).size, 2, `flows to both endpoints: ${[...before]}`);

    await stop(agent);
    agent = await start();
    assert.deepEqual(await flows(), before, 'a restart keeps every live flow where it was');

    await stop(agent);
    write(['10.244.1.10']);
    agent = await start();
    const after = await flows();
    assert.deepEqual([...after.values()].filter((ip) => ip !== '10.244.1.10'), [], `the flows to the endpoint that left are gone: ${[...after]}`);
    assert.deepEqual([...after], [...before].filter(([, ip]) => ip === '10.244.1.10'), 'the others stay');
  } finally {
    if (agent !== undefined && agent.exitCode === null) agent.kill('SIGKILL');
    await lab.exec('node-1', [process.execPath, RUDDER_BIN, 'cleanup', '--bpf-pin-path', lab.bpfPinPath('node-1')]);
    rmSync(dir, { recursive: true, force: true });
  }
});
