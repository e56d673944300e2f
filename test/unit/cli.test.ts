import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../../bin/rudder.js', import.meta.url));
const EXAMPLE = fileURLToPath(new URL('../../../examples/demo.yaml', import.meta.url));

function rudder(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function assertNoStack(stderr: string): void {
  assert.doesNotMatch(stderr, /^\s+at .+:\d+:\d+\)?$/m, `a user error printed a stack trace:\n${stderr}`);
}

test('usage errors exit 2 with one line naming the problem', () => {
  for (const [args, msg] of [
    [['trace', '-f', EXAMPLE, '--dst', '10.96.0.10', '--port', '80'], /--src is required/],
    [['trace', '-f', EXAMPLE, '--src', '10.244.1.5', '--dst', '10.96.0.999', '--port', '80'], /--dst: "10\.96\.0\.999" is not an IP address/],
    [['trace', '-f', EXAMPLE, '--src', '10.244.1.5', '--dst', '10.96.0.10', '--port', '70000'], /--port: "70000" must be an integer from 1 to 65535/],
    [['trace', '-f', EXAMPLE, '--src', '10.244.1.5', '--dst', '10.96.0.10', '--port', '80', '--proto', 'icmp'], /--proto/],
    [['services', '--bogus'], /unknown flag --bogus/],
    [['services', '-f', EXAMPLE, '--cluster-cidr', '10.0.0.0/99'], /--cluster-cidr: "10\.0\.0\.0\/99" is not a CIDR/],
    [['agent', '--dataplane', 'ipvs', '-f', EXAMPLE], /--dataplane: "ipvs" is not one of iptables, nftables, ebpf/],
    [['agent', '--dataplane', 'iptables'], /exactly one source/],
    [['agent', '-f', EXAMPLE, '--log-level', 'loud'], /--log-level: "loud" is not one of debug, info, warn, error/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ] as const) {
    const r = rudder(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, msg);
    assertNoStack(r.stderr);
  }
});

test('a malformed manifest exits 3 naming the file, the document and the field', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rudder-cli-'));
  try {
    const f = join(dir, 'bad.yaml');
    writeFileSync(f, 'apiVersion: v1\nkind: Service\nmetadata: {name: ok}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n---\napiVersion: v1\nmetadata: {name: x}\n');
    const r = rudder('services', '-f', f);
    assert.equal(r.code, 3);
    assert.equal(r.stderr.trim(), `rudder services: ${f}: document 2: kind: is required`);
    const missing = rudder('services', '-f', join(dir, 'nope.yaml'));
    assert.equal(missing.code, 3);
    assert.match(missing.stderr, /nope\.yaml: cannot read: ENOENT/);
    const cfg = join(dir, 'config.yaml');
    writeFileSync(cfg, 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables:\n  syncPeriod: soon\n');
    const bad = rudder('agent', '--config', cfg, '-f', EXAMPLE);
    assert.equal(bad.code, 3);
    assert.match(bad.stderr, /config\.yaml: iptables\.syncPeriod: "soon" is not a duration/);
    writeFileSync(cfg, 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables:\n  syncPeriod: 0s\n');
    const zero = rudder('agent', '--config', cfg, '-f', EXAMPLE);
    assert.equal(zero.code, 3);
    assert.match(zero.stderr, /config\.yaml: iptables\.syncPeriod: "0s" must be greater than 0/);
    for (const [flag, v, want] of [['--sync-period', '0s', /--sync-period: "0s" must be greater than 0/], ['--sync-period', '1000h', /--sync-period: "1000h" must be at most 24h/], ['--min-sync-period', '25h', /--min-sync-period: "25h" must be at most 24h/]] as const) {
      const u = rudder('agent', flag, v, '-f', EXAMPLE);
      assert.equal(u.code, 2, `${flag} ${v}: ${u.stderr}`);
      assert.match(u.stderr, want);
      assertNoStack(u.stderr);
    }
    for (const x of [r, missing, bad]) assertNoStack(x.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an invalid object is skipped with a warning and every other service is still served', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rudder-cli-'));
  try {
    const f = join(dir, 'm.yaml');
    writeFileSync(f, [
      'apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: a}\nspec: {clusterIP: 10.96.0.1, ports: [{name: x, port: 80}, {name: x, port: 81}]}',
      'apiVersion: v1\nkind: Service\nmetadata: {name: good, namespace: a}\nspec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}',
    ].join('\n---\n'));
    const r = rudder('services', '-f', f, '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /skipping invalid object: .*m\.yaml: document 1: Service a\/bad: spec\.ports\[1\]\.name: duplicate port name "x"/);
    const rows = JSON.parse(r.stdout) as Array<{ service: string }>;
    assert.deepEqual(rows.map((x) => x.service), ['a/good:/TCP']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('trace explains in words without --json, and services prints a table', () => {
  const t = rudder('trace', '-f', EXAMPLE, '--node', 'node-1', '--cluster-cidr', '10.244.0.0/16', '--src', '198.18.0.100', '--dst', '198.18.1.10', '--port', '80');
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stdout, /^TCP 198\.18\.0\.100 -> 198\.18\.1\.10:80: FORWARD$/m);
  assert.match(t.stdout, /externalTrafficPolicy is Local: only endpoints on this node are used/);
  assert.match(t.stdout, /backends: 10\.244\.1\.11:8081$/m);
  const s = rudder('services', '-f', EXAMPLE, '--node', 'node-1');
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stdout, /^demo\/shop:http\/TCP\s+198\.18\.1\.10:80\/TCP\s+LoadBalancer\s+eTP=Local\s+10\.244\.1\.11:8081 \(ready, local\)$/m);
  assert.match(s.stdout, /^demo\/empty:http\/TCP\s+10\.96\.0\.14:80\/TCP\s+ClusterIP\s+iTP=Cluster\s+\(none: reject\)$/m);
});

test('eBPF per-packet flags: devices (or none), conntrack size and SNAT ports are checked and named in errors', async () => {
  const { ebpfOptions, EBPF_FLAGS } = await import('../../src/cli/ebpf-flags.js');
  const { parseArgs } = await import('../../src/cli/args.js');
  const opts = (...argv: string[]) => ebpfOptions(parseArgs(argv, EBPF_FLAGS));
  assert.deepEqual(opts('--devices', 'eth0,bond0.10').devices, ['eth0', 'bond0.10']);
  assert.deepEqual(opts('--devices', 'none').devices, []);
  assert.equal(opts().devices, undefined, 'absent: detected from the node IPs');
  assert.throws(() => opts('--devices', 'eth0,../x'), /--devices: "\.\.\/x" is not an interface name/);
  assert.deepEqual(opts('--bpf-snat-ports', '40000-50000').snatPorts, [40000, 50000]);
  for (const bad of ['50000-40000', '80-90', '1-2-3', '61000-70000']) assert.throws(() => opts('--bpf-snat-ports', bad), /--bpf-snat-ports/);
  assert.equal(opts('--bpf-ct-max', '1024').sizes?.ct, 1024);
  assert.throws(() => opts('--bpf-ct-max', '0'), /--bpf-ct-max/);
});

test('trace --kernel: the kernel\'s answer is held against the model\'s (verdict, backend set, masquerade of remote backends)', async () => {
  const { kernelDifferences } = await import('../../src/cli/trace.js');
  const model = { verdict: 'forward' as const, backends: ['10.244.1.10:8080', '10.244.2.10:8080'], masquerade: true, rule: 'external-cluster', explanation: [] };
  const k = (o: Record<string, unknown>) => ({ verdict: 'forward' as const, step: '', reason: '', masquerade: true, explanation: [], backend: { id: 1, address: '10.244.2.10:8080' }, ...o });
  const local = new Set(['10.244.1.10:8080']);
  assert.deepEqual(kernelDifferences(model, k({}), local), []);
  // A local backend keeps the client address: not a difference.
  assert.deepEqual(kernelDifferences(model, k({ backend: { id: 2, address: '10.244.1.10:8080' }, masquerade: false }), local), []);
  assert.match(kernelDifferences(model, k({ masquerade: false }), local).join(), /masquerade: the model masquerades/);
  assert.match(kernelDifferences(model, k({ backend: { id: 3, address: '10.244.9.9:8080' } }), local).join(), /backend: the kernel picked 10.244.9.9:8080/);
  assert.match(kernelDifferences(model, k({ verdict: 'drop' }), local).join(), /verdict: the model says forward, the kernel drop/);
  assert.match(kernelDifferences({ ...model, masquerade: false }, k({}), local).join(), /the kernel masqueraded/);
});

test('the agent checks its input before it touches the kernel: bad bind addresses, an unreadable manifest', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rudder-cli-'));
  try {
    // Nothing may be initialised: no data plane line, no admin server, on any of these.
    const untouched = (r: ReturnType<typeof rudder>): void => {
      assert.doesNotMatch(r.stderr, /backend selected|socket load balancer attached|rudder agent starting|nftables table/i, `the kernel was touched first:\n${r.stderr}`);
      assertNoStack(r.stderr);
    };
    const demo = rudder('demo', '--dataplane', 'foo');
    assert.equal(demo.code, 2, demo.stderr);
    assert.match(demo.stderr, /^rudder demo: --dataplane: "foo" is not one of iptables, nftables, ebpf$/m);
    assert.doesNotMatch(demo.stderr + demo.stdout, /lab|namespace/i, 'rejected before a lab is built');
    const flag = rudder('agent', '--healthz-bind-address', 'localhost', '-f', EXAMPLE);
    assert.equal(flag.code, 2, flag.stderr);
    assert.match(flag.stderr, /--healthz-bind-address: "localhost" is not host:port/);
    untouched(flag);
    const cfg = join(dir, 'config.yaml');
    writeFileSync(cfg, 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmetricsBindAddress: "10249"\n');
    const file = rudder('agent', '--config', cfg, '-f', EXAMPLE);
    assert.equal(file.code, 3, file.stderr);
    assert.match(file.stderr, /config\.yaml: metricsBindAddress: "10249" is not host:port/);
    untouched(file);
    const missing = rudder('agent', '--healthz-bind-address', '', '--metrics-bind-address', '', '-f', join(dir, 'nope.yaml'));
    assert.equal(missing.code, 3, missing.stderr);
    assert.match(missing.stderr, /nope\.yaml: cannot read: ENOENT/);
    untouched(missing);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
