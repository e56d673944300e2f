// The packet-flow conformance fixtures (test/conformance/*.json and ../shared/conformance/*.json,
// format in test/conformance/README.md), parsed strictly so that a typo in a fixture fails loudly
// instead of testing nothing. Shared by every test that runs the cases: the model
// (test/unit/conformance.test.ts), the nftables table (test/unit/nftables-conformance.test.ts) and
// the eBPF socket load balancer in the kernel (test/integration/ebpf-conformance.test.ts).

import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ConfigFlags } from '../../src/cli/config.js';
import { normalizeCIDR, normalizeIP } from '../../src/model/ip.js';
import type { Verdict } from '../../src/model/trace.js';
import { DEFAULT_PROXY_NAME } from '../../src/model/types.js';
import type { Protocol } from '../../src/source/objects.js';

export interface Expect {
  verdict: Verdict;
  backends?: string[];
  masquerade?: boolean;
  /** 0: the service has no ClientIP affinity (the field must be absent). */
  affinityTimeoutSeconds?: number;
}

export interface Case {
  name: string;
  src: string;
  dst: string;
  port: number;
  proto: Protocol;
  expect: Expect;
}

export interface Fixture {
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
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

export const ROOT = repoRoot();
export const OWN_DIR = join(ROOT, 'test', 'conformance');
export const SHARED_DIR = resolve(ROOT, '..', 'shared', 'conformance');
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

export function readFixture(file: string): Fixture {
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
export function flagsOf(f: Fixture): ConfigFlags {
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

/** The fixture files of a directory, sorted. Throws if the directory cannot be read. */
export function fixtureFiles(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.endsWith('.json') && !n.startsWith('.')).sort().map((n) => join(dir, n));
}

/** Every fixture file: our own, then the shared ones when the shared tree is present. */
export function allFixtureFiles(): string[] {
  return [OWN_DIR, SHARED_DIR].filter((d) => existsSync(d)).flatMap(fixtureFiles);
}
