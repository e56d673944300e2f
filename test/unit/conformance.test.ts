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
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadTable, type Loaded } from '../../src/cli/load.js';
import { traceJSON } from '../../src/cli/trace.js';
import { indexTable, trace, type TraceIndex, type TraceResult } from '../../src/model/trace.js';
import { memoryLogger } from '../../src/observe/log.js';
import { fixtureFiles, flagsOf, OWN_DIR, readFixture, ROOT, SHARED_DIR, type Case, type Fixture } from '../support/conformance-fixtures.js';

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
