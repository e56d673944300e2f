// The packet-flow conformance suite: every fixture in test/conformance/ (and the shared samples in
// ../shared/conformance/) is loaded through the same path as `rudder trace` (manifests -> tracker
// -> table) and each case is traced. A handful of cases also run through the real CLI to prove
// that path prints the same JSON.
//
// Fixture format (see test/conformance/README.md):
//   { node: {name, ips, zone?}, clusterCIDR, nodePortAddresses, masqueradeAll?, manifests,
//     cases: [{name, src, dst, port, proto, expect: {verdict, backends?, masquerade?,
//              affinityTimeoutSeconds?}}] }
// Expectations are kube-proxy's behaviour; a failing case is a model bug until kube-proxy's source
// says otherwise. Never edit an expectation to make the model pass.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ConfigFlags } from '../../src/cli/config.js';
import { loadTable, type Loaded } from '../../src/cli/load.js';
import { traceJSON } from '../../src/cli/trace.js';
import { normalizeCIDR, normalizeIP } from '../../src/model/ip.js';
import { indexTable, trace, type TraceIndex, type TraceResult, type Verdict } from '../../src/model/trace.js';
import { DEFAULT_PROXY_NAME } from '../../src/model/types.js';
import { memoryLogger } from '../../src/observe/log.js';
import type { Protocol } from '../../src/source/objects.js';

interface Expect {
  verdict: Verdict;
  backends?: string[];
  masquerade?: boolean;
  /** 0: the service has no ClientIP affinity (the field must be absent). */
  affinityTimeoutSeconds?: number;
}

interface Case {
  name: string;
  src: string;
  dst: string;
  port: number;
  proto: Protocol;
  expect: Expect;
}

interface Fixture {
  /** Path of the JSON file, for messages. */
  file: string;
  node: { name: string; ips: string[]; zone?: string };
  clusterCIDRs: string[];
  nodePortAddresses: string[];
  masqueradeAll: boolean;
  /** Absolute paths. */
  manifests: string[];
  cases: Case[];
}

/** The repository root: the first ancestor of this file holding a package.json (works from src and dist). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

const ROOT = repoRoot();
const OWN_DIR = join(ROOT, 'test', 'conformance');
const SHARED_DIR = resolve(ROOT, '..', 'shared', 'conformance');
const VERDICTS: readonly string[] = ['forward', 'reject', 'drop', 'none'];

// ---- fixture parsing: strict, so a typo in a fixture fails loudly instead of testing nothing ----

function fail(file: string, where: string, problem: string): never {
  throw new Error(`${file}: ${where}: ${problem}`);
}

function str(file: string, where: string, v: unknown): string {
  if (typeof v !== 'string') fail(file, where, `must be a string, got ${JSON.stringify(v)}`);
  return v;
}

function ip(file: string, where: string, v: unknown): string {
  const n = normalizeIP(str(file, where, v));
  if (n === null) fail(file, where, `${JSON.stringify(v)} is not an IP address`);
  return n;
}

function cidr(file: string, where: string, v: unknown): string {
  const n = normalizeCIDR(str(file, where, v).trim());
  if (n === null) fail(file, where, `${JSON.stringify(v)} is not a CIDR`);
  return n;
}

/** "a,b", ["a", "b"], "" or absent: kube-proxy's --cluster-cidr accepts a comma-separated list. */
function cidrList(file: string, where: string, v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const items = Array.isArray(v) ? v : str(file, where, v).split(',');
  return items.filter((x) => !(typeof x === 'string' && x.trim() === '')).map((x, i) => cidr(file, `${where}[${i}]`, x));
}

function parseCase(file: string, i: number, raw: unknown): Case {
  const at = `cases[${i}]`;
  if (typeof raw !== 'object' || raw === null) fail(file, at, 'must be an object');
  const c = raw as Record<string, unknown>;
  const name = str(file, `${at}.name`, c['name']);
  const port = c['port'];
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) fail(file, `${at}.port`, `bad port ${JSON.stringify(port)}`);
  const proto = str(file, `${at}.proto`, c['proto'] ?? 'TCP').toUpperCase();
  if (proto !== 'TCP' && proto !== 'UDP' && proto !== 'SCTP') fail(file, `${at}.proto`, `unknown protocol ${proto}`);
  const e = c['expect'];
  if (typeof e !== 'object' || e === null) fail(file, `${at}.expect`, 'is required');
  const ex = e as Record<string, unknown>;
  const verdict = str(file, `${at}.expect.verdict`, ex['verdict']);
  if (!VERDICTS.includes(verdict)) fail(file, `${at}.expect.verdict`, `must be one of ${VERDICTS.join(', ')}`);
  const expect: Expect = { verdict: verdict as Verdict };
  if (ex['backends'] !== undefined) {
    if (!Array.isArray(ex['backends'])) fail(file, `${at}.expect.backends`, 'must be a list');
    const b = ex['backends'].map((x, j) => str(file, `${at}.expect.backends[${j}]`, x));
    if (JSON.stringify(b) !== JSON.stringify([...b].sort())) fail(file, `${at}.expect.backends`, 'must be sorted');
    expect.backends = b;
  }
  if (ex['masquerade'] !== undefined) {
    if (typeof ex['masquerade'] !== 'boolean') fail(file, `${at}.expect.masquerade`, 'must be true or false');
    expect.masquerade = ex['masquerade'];
  }
  if (ex['affinityTimeoutSeconds'] !== undefined) {
    const a = ex['affinityTimeoutSeconds'];
    if (typeof a !== 'number' || !Number.isInteger(a) || a < 0) fail(file, `${at}.expect.affinityTimeoutSeconds`, 'must be a non-negative integer');
    expect.affinityTimeoutSeconds = a;
  }
  return { name, src: ip(file, `${at}.src`, c['src']), dst: ip(file, `${at}.dst`, c['dst']), port, proto, expect };
}

function readFixture(file: string): Fixture {
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const node = raw['node'] as Record<string, unknown> | undefined;
  if (node === undefined || typeof node !== 'object') fail(file, 'node', 'is required');
  const ips = node['ips'];
  if (!Array.isArray(ips)) fail(file, 'node.ips', 'must be a list');
  const zone = node['zone'] === undefined ? undefined : str(file, 'node.zone', node['zone']);
  const m = raw['manifests'];
  const manifests = (Array.isArray(m) ? m : [m]).map((x, i) => resolve(dirname(file), str(file, `manifests[${i}]`, x)));
  const npa = raw['nodePortAddresses'];
  if (npa !== undefined && !Array.isArray(npa)) fail(file, 'nodePortAddresses', 'must be a list');
  const cases = raw['cases'];
  if (!Array.isArray(cases) || cases.length === 0) fail(file, 'cases', 'must be a non-empty list');
  const parsed = cases.map((c, i) => parseCase(file, i, c));
  const names = new Set<string>();
  for (const c of parsed) {
    if (names.has(c.name)) fail(file, 'cases', `duplicate case name ${JSON.stringify(c.name)}`);
    names.add(c.name);
  }
  return {
    file,
    node: { name: str(file, 'node.name', node['name']), ips: ips.map((x, i) => ip(file, `node.ips[${i}]`, x)), ...(zone !== undefined ? { zone } : {}) },
    clusterCIDRs: cidrList(file, 'clusterCIDR', raw['clusterCIDR']),
    // kube-proxy's "primary" keyword stands alone; anything else is a CIDR list.
    nodePortAddresses: Array.isArray(npa) && npa.length === 1 && npa[0] === 'primary' ? ['primary'] : cidrList(file, 'nodePortAddresses', npa),
    masqueradeAll: raw['masqueradeAll'] === true,
    manifests,
    cases: parsed,
  };
}

/** The ConfigFlags the CLI would build from the flags listed in cliArgs(). */
function flagsOf(f: Fixture): ConfigFlags {
  return {
    nodeName: f.node.name,
    nodeIPs: f.node.ips,
    zone: f.node.zone,
    clusterCIDRs: f.clusterCIDRs,
    nodePortAddresses: f.nodePortAddresses,
    masqueradeAll: f.masqueradeAll,
    proxyName: DEFAULT_PROXY_NAME,
  };
}

function cliArgs(f: Fixture, c: Case): string[] {
  const args = ['trace', ...f.manifests.flatMap((m) => ['-f', m]), '--node', f.node.name];
  for (const a of f.node.ips) args.push('--node-ip', a);
  if (f.node.zone !== undefined) args.push(`--zone=${f.node.zone}`);
  if (f.clusterCIDRs.length > 0) args.push('--cluster-cidr', f.clusterCIDRs.join(','));
  if (f.nodePortAddresses.length > 0) args.push('--nodeport-addresses', f.nodePortAddresses.join(','));
  if (f.masqueradeAll) args.push('--masquerade-all');
  args.push('--src', c.src, '--dst', c.dst, '--port', String(c.port), '--proto', c.proto.toLowerCase(), '--json');
  return args;
}

// ---- running ----

interface Prepared {
  loaded: Loaded;
  index: TraceIndex;
  warnings: string[];
}

const prepared = new Map<string, Prepared | Error>();

/** Loads a fixture's manifests once; a load error is rethrown by every test of the fixture. */
function prepare(f: Fixture): Prepared {
  let p = prepared.get(f.file);
  if (p === undefined) {
    try {
      const logger = memoryLogger();
      const loaded = loadTable(f.manifests, flagsOf(f), logger);
      p = { loaded, index: indexTable(loaded.table), warnings: logger.lines };
    } catch (e) {
      p = e instanceof Error ? e : new Error(String(e));
    }
    prepared.set(f.file, p);
  }
  if (p instanceof Error) throw p;
  return p;
}

function traceCase(f: Fixture, c: Case): TraceResult {
  const p = prepare(f);
  return trace(p.loaded.table, p.loaded.config, { src: c.src, dst: c.dst, port: c.port, protocol: c.proto }, p.index);
}

function describeFailure(f: Fixture, c: Case, r: TraceResult, mismatches: string[]): string {
  const actual: Record<string, unknown> = { verdict: r.verdict, backends: r.backends, masquerade: r.masquerade, rule: r.rule };
  if (r.service !== undefined) actual['service'] = r.service;
  if (r.frontend !== undefined) actual['frontend'] = r.frontend;
  if (r.affinityTimeoutSeconds !== undefined) actual['affinityTimeoutSeconds'] = r.affinityTimeoutSeconds;
  return [
    `conformance case failed: ${f.file}`,
    `  case:     ${JSON.stringify(c)}`,
    `  mismatch: ${mismatches.join('; ')}`,
    `  actual:   ${JSON.stringify(actual)}`,
    '  explanation:',
    ...r.explanation.map((s) => `    - ${s}`),
  ].join('\n');
}

function checkCase(f: Fixture, c: Case): void {
  const r = traceCase(f, c);
  const e = c.expect;
  const mismatches: string[] = [];
  if (r.verdict !== e.verdict) mismatches.push(`verdict: want ${e.verdict}, got ${r.verdict}`);
  if (e.backends !== undefined && JSON.stringify(r.backends) !== JSON.stringify(e.backends)) {
    mismatches.push(`backends: want ${JSON.stringify(e.backends)}, got ${JSON.stringify(r.backends)}`);
  }
  if (e.masquerade !== undefined && r.masquerade !== e.masquerade) mismatches.push(`masquerade: want ${e.masquerade}, got ${r.masquerade}`);
  if (e.affinityTimeoutSeconds !== undefined && (r.affinityTimeoutSeconds ?? 0) !== e.affinityTimeoutSeconds) {
    mismatches.push(`affinityTimeoutSeconds: want ${e.affinityTimeoutSeconds || 'none'}, got ${r.affinityTimeoutSeconds ?? 'none'}`);
  }
  if (mismatches.length > 0) assert.fail(describeFailure(f, c, r, mismatches));
}

function fixtureFiles(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.endsWith('.json') && !n.startsWith('.')).sort().map((n) => join(dir, n));
}

function suite(label: string, file: string): void {
  let f: Fixture;
  try {
    f = readFixture(file);
  } catch (e) {
    test(`${label}: fixture is readable`, () => {
      throw e;
    });
    return;
  }
  describe(label, () => {
    test('manifests load without invalid objects', () => {
      const p = prepare(f);
      const bad = p.warnings.filter((l) => l.includes('skipping invalid object'));
      assert.deepEqual(bad, [], `${file}: the manifests hold objects the decoder refused`);
    });
    for (const c of f.cases) test(c.name, () => checkCase(f, c));
  });
}

// Our own fixtures, one describe() per file.
assert.ok(existsSync(OWN_DIR), `${OWN_DIR} is missing`);
const ownFiles = fixtureFiles(OWN_DIR);
test('the conformance suite has at least 70 cases of its own', () => {
  const total = ownFiles.reduce((n, file) => n + readFixture(file).cases.length, 0);
  assert.ok(total >= 70, `only ${total} cases in ${OWN_DIR}`);
});
for (const file of ownFiles) suite(`conformance ${file.slice(OWN_DIR.length + 1)}`, file);

// The shared samples, when the shared tree is present.
const sharedFlows = join(SHARED_DIR, 'sample-flows.json');
if (existsSync(sharedFlows)) {
  suite('shared sample-flows.json', sharedFlows);
} else {
  test('shared sample-flows.json', { skip: `${sharedFlows} is absent` }, () => {});
}

// The CLI path: the same cases through `node bin/rudder.js trace ... --json`.
const CLI_CASES: Array<[string, string]> = [
  ['nodeport.json', 'NodePort on a node address outside nodePortAddresses is not service traffic'],
  ['nodeport-primary.json', 'nodePortAddresses primary: not on the second node address'],
  ['dual-stack.json', "IPv6 NodePort on the node's IPv6 address uses the IPv6 endpoints, masqueraded"],
  ['masquerade-all.json', 'masqueradeAll: pod to ClusterIP is masqueraded'],
  ['topology.json', "zone hints: only endpoints hinted for this node's zone"],
  ['session-affinity.json', 'ClientIP affinity on a ClusterIP: forward with the configured timeout'],
];

describe('rudder trace CLI prints the same JSON as the model', () => {
  const bin = join(ROOT, 'bin', 'rudder.js');
  for (const [fileName, caseName] of CLI_CASES) {
    test(`${fileName}: ${caseName}`, () => {
      const f = readFixture(join(OWN_DIR, fileName));
      const c = f.cases.find((x) => x.name === caseName);
      assert.ok(c !== undefined, `no case named ${JSON.stringify(caseName)} in ${fileName}`);
      const args = cliArgs(f, c);
      const run = spawnSync(process.execPath, [bin, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
      assert.equal(run.status, 0, `rudder ${args.join(' ')} exited ${run.status}: ${run.stderr}`);
      let got: unknown;
      try {
        got = JSON.parse(run.stdout);
      } catch {
        assert.fail(`rudder ${args.join(' ')} printed no JSON:\n${run.stdout}\n${run.stderr}`);
      }
      const want: unknown = JSON.parse(traceJSON(traceCase(f, c)));
      assert.deepEqual(got, want, `CLI and model disagree for ${fileName}: ${caseName}`);
      // The CLI answer must also meet the case's expectation on its own.
      const g = got as { verdict: string; backends: string[]; masquerade: boolean };
      assert.equal(g.verdict, c.expect.verdict, `CLI verdict for ${caseName}`);
      if (c.expect.backends !== undefined) assert.deepEqual(g.backends, c.expect.backends, `CLI backends for ${caseName}`);
      if (c.expect.masquerade !== undefined) assert.equal(g.masquerade, c.expect.masquerade, `CLI masquerade for ${caseName}`);
    });
  }
});
