// `rudder services`: every frontend with its backends and their state, like `cilium service list`.
import type { ProgrammedFrontend } from '../dataplane/dataplane.js';

import { frontendRecords, portPaths, type FrontendPath } from '../model/frontends.js';
import { allPorts, type FrontendKind, type ProxyConfig, type ServicePort, type ServiceTable } from '../model/types.js';

export interface BackendRow {
  address: string;
  /** ready | terminating | not-ready (serving-terminating endpoints are "terminating"). */
  state: 'ready' | 'terminating' | 'not-ready';
  local: boolean;
  /** Whether traffic to this frontend may use it. */
  active: boolean;
}

export interface FrontendRow {
  service: string;
  type: 'ClusterIP' | 'ExternalIP' | 'LoadBalancer' | 'NodePort';
  frontend: string;
  protocol: string;
  policy: string;
  affinityTimeoutSeconds: number;
  /** What happens to new connections when no backend is active: forward | reject | drop. */
  action: 'forward' | 'reject' | 'drop';
  backends: BackendRow[];
}

const TYPE: Record<FrontendKind, FrontendRow['type']> = { clusterIP: 'ClusterIP', externalIP: 'ExternalIP', loadBalancerIP: 'LoadBalancer', nodePort: 'NodePort' };

function addr(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

function backendRows(sp: ServicePort, active: readonly string[]): BackendRow[] {
  const set = new Set(active);
  return sp.endpoints.map((ep) => ({
    address: ep.id,
    state: ep.ready ? 'ready' : ep.serving && ep.terminating ? 'terminating' : 'not-ready',
    local: ep.isLocal,
    active: set.has(ep.id),
  }));
}

/**
 * One row per frontend record. The path shown is a pod's for a ClusterIP (the usual client) and
 * an outside client's for the others: the policy their rows name.
 */
export function serviceRows(table: ServiceTable, cfg: ProxyConfig): FrontendRow[] {
  const rows: FrontendRow[] = [];
  for (const sp of allPorts(table)) {
    const row = (kind: FrontendKind, frontend: string, path: FrontendPath): FrontendRow => {
      const internal = kind === 'clusterIP';
      const local = internal ? sp.internalPolicyLocal : sp.externalPolicyLocal;
      return {
        service: sp.id,
        type: TYPE[kind],
        frontend,
        protocol: sp.protocol,
        policy: `${internal ? 'iTP' : 'eTP'}=${local ? 'Local' : 'Cluster'}`,
        affinityTimeoutSeconds: sp.affinityTimeoutSeconds,
        action: path.verdict,
        backends: backendRows(sp, path.endpoints),
      };
    };
    const records = frontendRecords(sp, cfg);
    for (const r of records) rows.push(row(r.kind, addr(r.ip, r.port), r.kind === 'clusterIP' ? r.fromPod : r.fromExternal));
    // No known NodePort address of the family (no node IPs, say): still show the NodePort.
    if (sp.nodePort > 0 && !records.some((r) => r.kind === 'nodePort')) {
      rows.push(row('nodePort', addr(sp.family === 6 ? '::' : '0.0.0.0', sp.nodePort), portPaths(sp, cfg).external.fromExternal));
    }
  }
  return rows;
}

export function renderServiceRows(rows: readonly FrontendRow[]): string {
  const head = ['SERVICE', 'FRONTEND', 'TYPE', 'POLICY', 'BACKENDS'];
  const lines: string[][] = [];
  for (const r of rows) {
    const policy = r.affinityTimeoutSeconds > 0 ? `${r.policy},affinity=${r.affinityTimeoutSeconds}s` : r.policy;
    const bs = r.backends.length === 0 ? [`(none: ${r.action})`] : r.backends.map((b) => {
      const tags = [b.state, ...(b.local ? ['local'] : []), ...(b.active ? [] : ['unused'])];
      return `${b.address} (${tags.join(', ')})`;
    });
    if (r.backends.length > 0 && r.action !== 'forward') bs.push(`(no usable backend: ${r.action})`);
    bs.forEach((b, i) => lines.push(i === 0 ? [r.service, `${r.frontend}/${r.protocol}`, r.type, policy, b] : ['', '', '', '', b]));
  }
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (l: readonly string[]): string => l.map((c, i) => (i === l.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [fmt(head), ...lines.map(fmt)].join('\n') + '\n';
}

/** `rudder services --agent HOST:PORT`: what a running agent has in the kernel, read back. */
export async function programmedServices(agent: string, json: boolean): Promise<number> {
  const url = `http://${agent}/services`;
  let body: string;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    if (!res.ok) throw new Error(`${url} answered ${res.status}`);
    body = await res.text();
  } catch (e) {
    throw new Error(`cannot read ${url}: ${(e as Error).message}`);
  }
  const rows = JSON.parse(body) as ProgrammedFrontend[];
  process.stdout.write(json ? JSON.stringify(rows, null, 1) + '\n' : renderProgrammed(rows));
  return 0;
}

const KIND_ORDER: Record<string, number> = { clusterIP: 0, externalIP: 1, loadBalancerIP: 2, nodePort: 3 };
const KIND_NAME: Readonly<Record<string, string>> = TYPE;

export function renderProgrammed(rows: readonly ProgrammedFrontend[]): string {
  const sorted = [...rows].sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1
    : (KIND_ORDER[a.kind] ?? 9) - (KIND_ORDER[b.kind] ?? 9) || (a.address < b.address ? -1 : a.address > b.address ? 1 : 0)));
  // Planes that read typed entries back (eBPF) say per frontend whether it matches the table.
  const status = rows.some((r) => r.flags !== undefined || r.drift !== undefined);
  const head = ['SERVICE', 'FRONTEND', 'TYPE', ...(status ? ['STATUS'] : []), 'BACKENDS (programmed)'];
  const lines: string[][] = [];
  for (const r of sorted) {
    const protocol = r.protocol ?? r.service.slice(r.service.lastIndexOf('/') + 1);
    const frontend = /^(TCP|UDP|SCTP)$/.test(protocol) ? `${r.address}/${protocol}` : r.address;
    const flags = (r.flags ?? []).filter((f) => f !== 'nodeport');
    const none = flags.includes('reject') ? '(none: refused)' : flags.includes('drop') ? '(none: not served)' : '(none)';
    const bs = r.backends.length === 0 ? [none] : r.backends;
    const state = r.drift !== undefined ? `DRIFT: ${r.drift}` : ['ok', ...flags.filter((f) => f !== 'reject' && f !== 'drop'), ...(r.scope ? [`${r.scope} namespace`] : [])].join(' ');
    const service = r.service === '' ? '(unknown)' : r.service;
    bs.forEach((b, i) => lines.push(i === 0 ? [service, frontend, KIND_NAME[r.kind] ?? r.kind, ...(status ? [state] : []), b] : ['', '', '', ...(status ? [''] : []), b]));
  }
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (l: readonly string[]): string => l.map((c, i) => (i === l.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [fmt(head), ...lines.map(fmt)].join('\n') + '\n';
}
