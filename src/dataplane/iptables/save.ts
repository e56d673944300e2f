// Reading iptables-save output back: which chains exist, which jump rules are installed, and what
// the nat table actually does for each service frontend. Pure functions over the saved text.

import type { ProgrammedFrontend } from '../dataplane.js';
import {
  EXT_PREFIX, FW_PREFIX, KUBE_MARK_MASQ, KUBE_NODEPORTS, KUBE_SERVICES, SEP_PREFIX, SVC_PREFIX, SVL_PREFIX,
} from './chains.js';
import type { JumpRule } from './chains.js';

export interface SavedRule {
  chain: string;
  /** The rule specification after "-A CHAIN", tokenised (quotes removed). */
  args: string[];
}

export interface SavedTable {
  chains: Set<string>;
  rules: SavedRule[];
}

/** Splits one iptables-save line into arguments: blanks separate, "..." groups, \" escapes inside quotes. */
export function tokenize(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inQuote = false;
  let has = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (inQuote) {
      if (ch === '\\' && i + 1 < line.length) { cur += line[++i]; continue; }
      if (ch === '"') { inQuote = false; continue; }
      cur += ch;
    } else if (ch === '"') {
      inQuote = true;
      has = true;
    } else if (ch === ' ' || ch === '\t') {
      if (has || cur.length > 0) out.push(cur);
      cur = '';
      has = false;
    } else {
      cur += ch;
    }
  }
  if (has || cur.length > 0) out.push(cur);
  return out;
}

/** Parses iptables-save output (one or several tables). Unknown lines are ignored. */
export function parseSave(text: string): Map<string, SavedTable> {
  const tables = new Map<string, SavedTable>();
  let cur: SavedTable | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (line.startsWith('*')) {
      cur = { chains: new Set(), rules: [] };
      tables.set(line.slice(1), cur);
    } else if (cur === undefined) {
      continue;
    } else if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0];
      if (name) cur.chains.add(name);
    } else if (line.startsWith('-A ')) {
      const tokens = tokenize(line);
      const chain = tokens[1];
      if (chain !== undefined) cur.rules.push({ chain, args: tokens.slice(2) });
    }
  }
  return tables;
}

/** The value following `flag` in a rule, unless the flag is negated ("! -d x"). */
export function option(args: readonly string[], flag: string): string | undefined {
  for (let i = 0; i < args.length - 1; i++) {
    if (args[i] === flag && args[i - 1] !== '!') return args[i + 1];
  }
  return undefined;
}

/** Whether the jump rule is installed (same chain, target and comment; iptables-save reorders matches). */
export function hasJump(table: SavedTable | undefined, j: JumpRule): boolean {
  if (table === undefined) return false;
  return table.rules.some((r) => r.chain === j.from && option(r.args, '-j') === j.to && option(r.args, '--comment') === j.comment);
}

const FRONTEND_COMMENT = /^(.+) (cluster IP|external IP|loadbalancer IP)$/;
const NO_ENDPOINTS_COMMENT = /^(.+) has no (?:local )?endpoints$/;
const KINDS: Record<string, string> = { 'cluster IP': 'clusterIP', 'external IP': 'externalIP', 'loadbalancer IP': 'loadBalancerIP' };

/** iptables-save prints a host address as a /32 (or /128 for IPv6) network. */
function stripHostMask(cidr: string): string {
  return cidr.replace(/\/(32|128)$/, '');
}

/** Rudder's service port id from the comment name ("ns/name:port" or "ns/name") and the -p protocol. */
function serviceId(name: string, proto: string | undefined): string {
  return `${name.includes(':') ? name : name + ':'}/${(proto ?? '').toUpperCase()}`;
}

/**
 * The frontends the nat table implements, each with the endpoints ("ip:port") a new connection
 * from outside the node may reach. Follows the jumps (FW -> EXT -> SVC/SVL -> SEP -> DNAT), so it
 * works with or without per-endpoint comments. For EXT chains only the fall-through rule is
 * followed (the pod and node short-circuits are not what outside clients get).
 */
export function programmedFrontends(nat: SavedTable | undefined, family: 4 | 6 = 4, filter?: SavedTable): ProgrammedFrontend[] {
  if (nat === undefined) return [];
  const byChain = new Map<string, SavedRule[]>();
  for (const r of nat.rules) {
    let list = byChain.get(r.chain);
    if (list === undefined) byChain.set(r.chain, (list = []));
    list.push(r);
  }
  const memo = new Map<string, string[]>();
  const backends = (chain: string, depth: number): string[] => {
    const known = memo.get(chain);
    if (known !== undefined) return known;
    const out: string[] = [];
    memo.set(chain, out); // guards against loops
    if (depth > 8) return out;
    for (const r of byChain.get(chain) ?? []) {
      const target = option(r.args, '-j');
      if (target === undefined || target === KUBE_MARK_MASQ) continue;
      if (target === 'DNAT') {
        const to = option(r.args, '--to-destination');
        if (to !== undefined && !out.includes(to)) out.push(to);
        continue;
      }
      if (chain.startsWith(EXT_PREFIX) && (option(r.args, '-s') !== undefined || r.args.includes('--src-type'))) continue;
      if (![SVC_PREFIX, SVL_PREFIX, EXT_PREFIX, FW_PREFIX, SEP_PREFIX].some((p) => target.startsWith(p))) continue;
      for (const b of backends(target, depth + 1)) if (!out.includes(b)) out.push(b);
    }
    return out;
  };

  const hostPort = (host: string, port: string): string => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);
  // The model's ids name the IPv6 entry of a service port with a "/v6" suffix.
  const id = (name: string, proto: string | undefined): string => serviceId(name, proto) + (family === 6 ? '/v6' : '');
  const result: ProgrammedFrontend[] = [];
  for (const r of byChain.get(KUBE_SERVICES) ?? []) {
    const m = FRONTEND_COMMENT.exec(option(r.args, '--comment') ?? '');
    const dst = option(r.args, '-d');
    const target = option(r.args, '-j');
    if (m === null || dst === undefined || target === undefined) continue;
    result.push({
      service: id(m[1]!, option(r.args, '-p')),
      kind: KINDS[m[2]!]!,
      address: hostPort(stripHostMask(dst), option(r.args, '--dport') ?? ''),
      backends: backends(target, 0),
    });
  }
  for (const r of byChain.get(KUBE_NODEPORTS) ?? []) {
    const name = option(r.args, '--comment');
    const target = option(r.args, '-j');
    if (name === undefined || target === undefined) continue;
    const dst = option(r.args, '-d');
    result.push({
      service: id(name, option(r.args, '-p')),
      kind: 'nodePort',
      address: dst === undefined ? `*:${option(r.args, '--dport') ?? ''}` : hostPort(stripHostMask(dst), option(r.args, '--dport') ?? ''),
      backends: backends(target, 0),
    });
  }
  // ClusterIPs that no nat rule serves: rejected (no endpoints) or dropped (no local endpoints).
  for (const r of filter?.rules ?? []) {
    if (r.chain !== KUBE_SERVICES) continue;
    const m = NO_ENDPOINTS_COMMENT.exec(option(r.args, '--comment') ?? '');
    const dst = option(r.args, '-d');
    const port = option(r.args, '--dport');
    if (m === null || dst === undefined || port === undefined) continue;
    result.push({ service: id(m[1]!, option(r.args, '-p')), kind: 'clusterIP', address: hostPort(stripHostMask(dst), port), backends: [] });
  }
  return result;
}
