// Shared fixtures for the iptables data plane tests (no tests here). ServicePorts are written by
// hand; their resolved endpoint sets come from the model's own categorizeEndpoints, so the
// fixtures never disagree with what model.build would produce.

import { categorizeEndpoints } from '../../src/model/policy.js';
import type { EndpointInfo, ProxyConfig, ServicePort } from '../../src/model/types.js';
import type { ExecResult } from '../../src/util/exec.js';

/** kube-proxy's proxier_test.go conventions: pods 10.0.0.0/8, node 192.168.0.2, node name test-node. */
export const CFG: ProxyConfig = {
  nodeName: 'test-node',
  nodeIPs: ['192.168.0.2'],
  zone: '',
  clusterCIDRs: ['10.0.0.0/8'],
  nodePortAddresses: [],
  masqueradeAll: false,
  proxyName: 'rudder',
};

export function ep(ip: string, port: number, opts: { local?: boolean; ready?: boolean; terminating?: boolean } = {}): EndpointInfo {
  const ready = opts.ready ?? true;
  return {
    ip, port, id: ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`,
    nodeName: opts.local ? CFG.nodeName : 'other-node',
    isLocal: opts.local ?? false,
    ready, serving: ready || (opts.terminating ?? false), terminating: opts.terminating ?? false,
    zone: '', zoneHints: [], nodeHints: [],
  };
}

type PortSpec = Partial<Omit<ServicePort, 'id'>> & Pick<ServicePort, 'namespace' | 'name' | 'clusterIP'>;

/** A service port with defaults (port "p80", TCP 80, IPv4, Cluster policies) and resolved sets. */
export function sp(spec: PortSpec): ServicePort {
  const base = {
    portName: 'p80', protocol: 'TCP' as const, family: 4 as const, port: 80, nodePort: 0,
    externalIPs: [], loadBalancerIPs: [], loadBalancerSourceRanges: [], affinityTimeoutSeconds: 0,
    externalPolicyLocal: false, internalPolicyLocal: false, healthCheckNodePort: 0, lbAlgorithm: '' as const, endpoints: [],
    ...spec,
  };
  const sorted = [...base.endpoints].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const withEps = { ...base, endpoints: sorted };
  const id = `${base.namespace}/${base.name}:${base.portName}/${base.protocol}${base.family === 6 ? '/v6' : ''}`;
  return { id, ...withEps, ...categorizeEndpoints(withEps, CFG) };
}

export function tableOf(...ports: ServicePort[]): Map<string, readonly ServicePort[]> {
  const t = new Map<string, ServicePort[]>();
  for (const p of ports) {
    const key = `${p.namespace}/${p.name}`;
    const list = t.get(key) ?? [];
    list.push(p);
    list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    t.set(key, list);
  }
  return t;
}

export interface Call {
  argv: string[];
  input: string;
}

const BUILTIN: Record<string, string[]> = {
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
};

/**
 * A fake iptables kernel: applies iptables-restore --noflush input to in-memory tables (chain
 * lines create/flush, -A, -I, -D, -X, per-table COMMIT) and prints them back as iptables-save
 * would (without its argument reordering). Unknown jump targets fail the table, as the kernel does.
 */
export class FakeKernel {
  tables = new Map<string, Map<string, string[]>>();

  constructor() {
    for (const [t, chains] of Object.entries(BUILTIN)) this.tables.set(t, new Map(chains.map((c) => [c, []])));
  }

  /** Returns null on success, else an error message (the table being committed is left untouched). */
  restore(text: string): string | null {
    let work: Map<string, string[]> | null = null;
    let name = '';
    let lineNo = 0;
    for (const line of text.split('\n')) {
      lineNo++;
      if (line === '' || line.startsWith('#')) continue;
      if (line.startsWith('*')) {
        name = line.slice(1);
        const cur = this.tables.get(name) ?? new Map<string, string[]>();
        work = new Map([...cur].map(([k, v]) => [k, [...v]]));
        continue;
      }
      if (work === null) return `line ${lineNo}: no table`;
      if (line === 'COMMIT') {
        for (const [chain, rules] of work) {
          for (const r of rules) {
            const j = / -[jg] (\S+)/.exec(' ' + r)?.[1];
            if (j !== undefined && /^[A-Z][A-Z0-9-]*$/.test(j) && j.includes('-') && !work.has(j)) return `Error occurred at line: ${lineNo}: chain ${chain} jumps to missing ${j}`;
          }
        }
        this.tables.set(name, work);
        work = null;
        continue;
      }
      const m = /^(:|-A |-I |-D |-X )(\S+)\s?(.*)$/.exec(line);
      if (m === null) return `Error occurred at line: ${lineNo}: cannot parse ${line}`;
      const [, op, chain, rest] = m as unknown as [string, string, string, string];
      if (op === ':') { work.set(chain, []); continue; }
      const rules = work.get(chain);
      if (rules === undefined) return `Error occurred at line: ${lineNo}: no chain ${chain}`;
      if (op === '-A ') rules.push(rest);
      else if (op === '-I ') rules.unshift(rest.replace(/^1 /, ''));
      else if (op === '-D ') {
        const i = rules.indexOf(rest);
        if (i < 0) return `Error occurred at line: ${lineNo}: no such rule`;
        rules.splice(i, 1);
      } else if (op === '-X ') {
        if (rules.length > 0) return `Error occurred at line: ${lineNo}: chain ${chain} not empty`;
        work.delete(chain);
      }
    }
    return null;
  }

  save(table: string): string {
    const t = this.tables.get(table);
    if (t === undefined) return '';
    const out = [`*${table}`];
    for (const c of t.keys()) out.push(`:${c} ${BUILTIN[table]?.includes(c) ? 'ACCEPT' : '-'} [0:0]`);
    for (const [c, rules] of t) for (const r of rules) out.push(`-A ${c} ${r}`);
    out.push('COMMIT');
    return out.join('\n') + '\n';
  }

  chains(table: string): string[] {
    return [...(this.tables.get(table)?.keys() ?? [])];
  }
}

/** A fake exec: records every call and answers iptables-* from a FakeKernel, conntrack with "0 flows". */
export class FakeExec {
  calls: Call[] = [];
  kernel = new FakeKernel();
  /** The ip6tables side; `ip6tablesMissing` makes its tools fail as if not installed. */
  kernel6 = new FakeKernel();
  ip6tablesMissing = false;
  /** When set, the next iptables-restore fails with this result and changes nothing. */
  failNextRestore: ExecResult | null = null;
  conntrackResult: ExecResult = { code: 1, stdout: '', stderr: 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n' };

  readonly fn = async (argv: readonly string[], opts: { input?: string } = {}): Promise<ExecResult> => {
    this.calls.push({ argv: [...argv], input: opts.input ?? '' });
    const tool = argv[0] ?? '';
    const v6 = tool.startsWith('ip6tables');
    if (v6 && this.ip6tablesMissing) return { code: 127, stdout: '', stderr: `${tool}: not found` };
    const kernel = v6 ? this.kernel6 : this.kernel;
    if (argv[1] === '--version') return { code: 0, stdout: `${tool} v1.8.9\n`, stderr: '' };
    if (tool.endsWith('-save')) {
      const t = argv.indexOf('-t');
      const text = t >= 0 ? kernel.save(argv[t + 1]!) : kernel.save('nat') + kernel.save('filter');
      return { code: 0, stdout: text, stderr: '' };
    }
    if (tool.endsWith('-restore')) {
      if (this.failNextRestore !== null) {
        const r = this.failNextRestore;
        this.failNextRestore = null;
        return r;
      }
      const err = kernel.restore(opts.input ?? '');
      return err === null ? { code: 0, stdout: '', stderr: '' } : { code: 1, stdout: '', stderr: `iptables-restore: ${err}\n` };
    }
    if (tool === 'conntrack') return this.conntrackResult;
    return { code: 127, stdout: '', stderr: `${tool}: not found` };
  };

  /** IPv4 restores (ip6tables' are in restores6). */
  restores(): Call[] {
    return this.calls.filter((c) => c.argv[0]!.startsWith('iptables-') && c.argv[0]!.endsWith('-restore') && c.argv[1] !== '--version');
  }

  restores6(): Call[] {
    return this.calls.filter((c) => c.argv[0]!.startsWith('ip6tables-') && c.argv[0]!.endsWith('-restore') && c.argv[1] !== '--version');
  }

  lastRestore(): string {
    const r = this.restores();
    return r[r.length - 1]?.input ?? '';
  }

  /** IPv4 iptables-save calls. */
  saves(): number {
    return this.calls.filter((c) => c.argv[0]!.startsWith('iptables-') && c.argv[0]!.endsWith('-save') && c.argv[1] !== '--version').length;
  }

  conntrack(): string[][] {
    return this.calls.filter((c) => c.argv[0] === 'conntrack').map((c) => c.argv);
  }
}
