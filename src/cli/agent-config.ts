// The agent's config file: kube-proxy's KubeProxyConfiguration (the fields Rudder implements), so
// an operator can reuse the file they have. Unknown or mistyped fields fail with the file and the
// field named; flags given on the command line win over the file.

import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';

export class ConfigError extends Error {
  readonly code = 'ECONFIG';
  constructor(readonly file: string, readonly field: string, problem: string) {
    super(`${file}: ${field}: ${problem}`);
    this.name = 'ConfigError';
  }
}

export interface AgentFileConfig {
  dataplane?: string;
  hostnameOverride?: string;
  nodeIPs?: string[];
  clusterCIDRs?: string[];
  nodePortAddresses?: string[];
  healthzBindAddress?: string;
  metricsBindAddress?: string;
  kubeconfig?: string;
  masqueradeAll?: boolean;
  syncPeriodMs?: number;
  minSyncPeriodMs?: number;
  manifests?: string[];
}

const API_VERSION = 'kubeproxy.config.k8s.io/v1alpha1';

/**
 * The range each sync interval must lie in: a zero sync period would be a busy loop, and timers
 * longer than a day are not what anyone means (Node's cap is 24.8 days).
 */
export const SYNC_PERIOD_RANGE = { min: 1, max: 86_400_000 } as const;
export const MIN_SYNC_PERIOD_RANGE = { min: 0, max: 86_400_000 } as const;

/** The problem with a duration outside its range, or null. */
export function durationRangeProblem(ms: number, r: { min: number; max: number }): string | null {
  if (ms < r.min) return r.min === 1 ? 'must be greater than 0' : `must be at least ${r.min} ms`;
  if (ms > r.max) return 'must be at most 24h';
  return null;
}

/** Parses a Go duration ("30s", "1m", "500ms", "1m30s") into milliseconds. */
export function parseDuration(s: string): number | null {
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    if (m.index !== consumed) return null;
    consumed += m[0].length;
    total += Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
  }
  return consumed === s.length && consumed > 0 ? total : null;
}

type Obj = Record<string, unknown>;

export function loadAgentConfig(file: string): AgentFileConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(file, '(file)', `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new ConfigError(file, '(file)', `not valid YAML: ${doc.errors[0]!.message.split('\n')[0]}`);
  const raw: unknown = doc.toJS();
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(file, '(root)', 'must be a mapping');
  const o = raw as Obj;
  const fail = (field: string, problem: string): never => { throw new ConfigError(file, field, problem); };
  if (o['kind'] !== 'KubeProxyConfiguration') fail('kind', `must be KubeProxyConfiguration, got ${JSON.stringify(o['kind'])}`);
  if (o['apiVersion'] !== API_VERSION) fail('apiVersion', `must be ${API_VERSION}, got ${JSON.stringify(o['apiVersion'])}`);

  const str = (v: unknown, field: string): string => (typeof v === 'string' ? v : fail(field, `must be a string, got ${JSON.stringify(v)}`));
  const strList = (v: unknown, field: string): string[] =>
    Array.isArray(v) ? v.map((x, i) => str(x, `${field}[${i}]`)) : fail(field, 'must be a list of strings');
  const dur = (v: unknown, field: string, range: { min: number; max: number }): number => {
    const ms = parseDuration(str(v, field));
    if (ms === null) return fail(field, `${JSON.stringify(v)} is not a duration like 30s or 1m`);
    const problem = durationRangeProblem(ms, range);
    return problem === null ? ms : fail(field, `${JSON.stringify(v)} ${problem}`);
  };
  const sub = (v: unknown, field: string): Obj => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : fail(field, 'must be a mapping'));

  const out: AgentFileConfig = {};
  const known = new Set(['apiVersion', 'kind', 'mode', 'hostnameOverride', 'nodeIPOverride', 'clusterCIDR', 'nodePortAddresses', 'healthzBindAddress', 'metricsBindAddress', 'clientConnection', 'iptables', 'nftables', 'syncPeriod', 'minSyncPeriod', 'manifests']);
  for (const k of Object.keys(o)) if (!known.has(k)) fail(k, 'is not a field Rudder understands');
  if (o['mode'] !== undefined) {
    const mode = str(o['mode'], 'mode');
    if (!['iptables', 'nftables', 'ebpf', ''].includes(mode)) fail('mode', `${JSON.stringify(mode)} is not iptables, nftables or ebpf`);
    if (mode !== '') out.dataplane = mode;
  }
  if (o['hostnameOverride'] !== undefined) out.hostnameOverride = str(o['hostnameOverride'], 'hostnameOverride');
  if (o['nodeIPOverride'] !== undefined) out.nodeIPs = strList(o['nodeIPOverride'], 'nodeIPOverride');
  if (o['clusterCIDR'] !== undefined) out.clusterCIDRs = str(o['clusterCIDR'], 'clusterCIDR').split(',').map((x) => x.trim()).filter((x) => x !== '');
  if (o['nodePortAddresses'] !== undefined) out.nodePortAddresses = strList(o['nodePortAddresses'], 'nodePortAddresses');
  if (o['healthzBindAddress'] !== undefined) out.healthzBindAddress = str(o['healthzBindAddress'], 'healthzBindAddress');
  if (o['metricsBindAddress'] !== undefined) out.metricsBindAddress = str(o['metricsBindAddress'], 'metricsBindAddress');
  if (o['manifests'] !== undefined) out.manifests = strList(o['manifests'], 'manifests');
  if (o['clientConnection'] !== undefined) {
    const cc = sub(o['clientConnection'], 'clientConnection');
    for (const k of Object.keys(cc)) if (!['kubeconfig', 'qps', 'burst', 'contentType', 'acceptContentTypes'].includes(k)) fail(`clientConnection.${k}`, 'is not a field Rudder understands');
    if (cc['kubeconfig'] !== undefined && cc['kubeconfig'] !== '') out.kubeconfig = str(cc['kubeconfig'], 'clientConnection.kubeconfig');
  }
  for (const section of ['iptables', 'nftables'] as const) {
    if (o[section] === undefined) continue;
    const s = sub(o[section], section);
    for (const [k, v] of Object.entries(s)) {
      if (k === 'masqueradeAll') out.masqueradeAll = typeof v === 'boolean' ? v : fail(`${section}.masqueradeAll`, 'must be true or false');
      else if (k === 'syncPeriod') out.syncPeriodMs = dur(v, `${section}.syncPeriod`, SYNC_PERIOD_RANGE);
      else if (k === 'minSyncPeriod') out.minSyncPeriodMs = dur(v, `${section}.minSyncPeriod`, MIN_SYNC_PERIOD_RANGE);
      else if (k === 'masqueradeBit' || k === 'localhostNodePorts') continue; // kube-proxy fields with Rudder's fixed defaults
      else fail(`${section}.${k}`, 'is not a field Rudder understands');
    }
  }
  if (o['syncPeriod'] !== undefined) out.syncPeriodMs = dur(o['syncPeriod'], 'syncPeriod', SYNC_PERIOD_RANGE);
  if (o['minSyncPeriod'] !== undefined) out.minSyncPeriodMs = dur(o['minSyncPeriod'], 'minSyncPeriod', MIN_SYNC_PERIOD_RANGE);
  return out;
}
