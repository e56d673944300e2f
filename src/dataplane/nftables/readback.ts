// Reading the table back from `nft -j` output: which chains exist, and what each frontend does.
// Pure functions over the JSON text; they throw SyntaxError only for text that is not JSON.

import type { ProgrammedFrontend } from '../dataplane.js';
import { IP_PICK, NP_PICK, SERVICE_IPS, SERVICE_NODEPORTS, TABLE } from './layout.js';
import { KIND_CODE } from './render.js';

type Json = unknown;

function objects(text: string): Array<Record<string, Json>> {
  const doc = JSON.parse(text) as { nftables?: Array<Record<string, Json>> };
  return Array.isArray(doc.nftables) ? doc.nftables : [];
}

const rec = (x: Json): Record<string, Json> | undefined =>
  (typeof x === 'object' && x !== null && !Array.isArray(x) ? (x as Record<string, Json>) : undefined);

/** The chains of `ip rudder` in `nft -j list chains ip` output (or of `ip6 rudder` in `... ip6`). */
export function parseChains(text: string): Set<string> {
  const out = new Set<string>();
  for (const o of objects(text)) {
    const c = rec(o['chain']);
    if (c !== undefined && c['table'] === TABLE && typeof c['name'] === 'string') out.add(c['name']);
  }
  return out;
}

/** "a|b|c" for a key: a scalar, or {"concat": [...]}, possibly wrapped in {"elem": {"val": ..., "comment"}}. */
function keyOf(x: Json): { key: string; parts: string[]; comment: string | undefined } {
  let comment: string | undefined;
  const e = rec(rec(x)?.['elem']);
  if (e !== undefined) {
    x = e['val'];
    if (typeof e['comment'] === 'string') comment = e['comment'];
  }
  const concat = rec(x)?.['concat'];
  const parts = Array.isArray(concat) ? concat.map(String) : [String(x)];
  return { key: parts.join('|'), parts, comment };
}

const gotoTarget = (x: Json): string | undefined => {
  const g = rec(rec(x)?.['goto'] ?? rec(x)?.['jump']);
  return typeof g?.['target'] === 'string' ? g['target'] : undefined;
};

/** Every goto/jump target and every `dnat to addr:port` anywhere in a rule's expressions. */
function walk(x: Json, gotos: string[], dnats: string[]): void {
  if (Array.isArray(x)) {
    for (const y of x) walk(y, gotos, dnats);
    return;
  }
  const r = rec(x);
  if (r === undefined) return;
  const t = gotoTarget(r);
  if (t !== undefined) gotos.push(t);
  const d = rec(r['dnat']);
  if (d !== undefined && typeof d['addr'] === 'string' && d['port'] !== undefined) dnats.push(hostPort(d['addr'], String(d['port'])));
  for (const v of Object.values(r)) walk(v, gotos, dnats);
}

/** "10.0.0.1:80", "[fd00::1]:80". */
const hostPort = (host: string, port: string): string => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

const KINDS = new Map(Object.entries(KIND_CODE).map(([k, v]) => [v, k]));

/**
 * The frontends `nft -j list table ip rudder` (or `ip6 rudder`) shows, each with the endpoints a new connection
 * from outside the node may reach (the frontend's own set: internal for ClusterIPs, the external
 * policy's for the others). Frontends without endpoints are not listed, as with iptables.
 */
export function programmedFrontends(text: string): ProgrammedFrontend[] {
  const maps = new Map<string, Json[]>();
  const rules = new Map<string, Json[]>();
  for (const o of objects(text)) {
    const m = rec(o['map']) ?? rec(o['set']);
    if (m !== undefined && m['table'] === TABLE && typeof m['name'] === 'string') maps.set(m['name'], Array.isArray(m['elem']) ? m['elem'] : []);
    const r = rec(o['rule']);
    if (r !== undefined && r['table'] === TABLE && typeof r['chain'] === 'string') {
      const l = rules.get(r['chain']) ?? [];
      l.push(r['expr']);
      rules.set(r['chain'], l);
    }
  }
  const pairs = (name: string): Array<[ReturnType<typeof keyOf>, Json]> =>
    (maps.get(name) ?? []).filter(Array.isArray).map((p) => [keyOf((p as Json[])[0]), (p as Json[])[1]]);
  // Endpoint maps, indexed once: "map|frontend key" -> endpoints by slot.
  const slots = new Map<string, string[]>();
  for (const name of maps.keys()) {
    if (!/^(ip|np)-c?eps-\d+$/.test(name)) continue;
    for (const [k, v] of pairs(name)) {
      const slot = Number(k.parts[k.parts.length - 1]);
      const id = `${name}|${k.parts.slice(0, -1).join('|')}`;
      const value = rec(v)?.['concat'];
      if (!Array.isArray(value) || value.length !== 2) continue;
      const list = slots.get(id) ?? [];
      list[slot] = hostPort(String(value[0]), String(value[1]));
      slots.set(id, list);
    }
  }
  // Affinity chains: policy chain -> endpoint chains -> `dnat to`.
  const chainBackends = (chain: string, depth: number): string[] => {
    const gotos: string[] = [];
    const dnats: string[] = [];
    walk(rules.get(chain) ?? [], gotos, dnats);
    const out = new Set(dnats);
    if (depth < 3) for (const g of gotos) for (const b of chainBackends(g, depth + 1)) out.add(b);
    return [...out].sort();
  };
  // Pick maps indexed once by key: looking each frontend up in the whole list was O(n²).
  const picks = new Map<string, Map<string, Json>>();
  const pickOf = (pickMap: string, key: string): Json => {
    let m = picks.get(pickMap);
    if (m === undefined) picks.set(pickMap, (m = new Map(pairs(pickMap).map(([k, v]) => [k.key, v]))));
    return m.get(key);
  };
  const backends = (pickMap: string, key: string): string[] => {
    const target = pickOf(pickMap, key);
    const chain = gotoTarget(target);
    if (chain === undefined) return [];
    const pick = /^(ip|np)-(c?)pick-(\d+)$/.exec(chain);
    if (pick === null) return chainBackends(chain, 0);
    return (slots.get(`${pick[1]}-${pick[2]}eps-${pick[3]}|${key}`) ?? []).filter((b) => typeof b === 'string').sort();
  };

  const out: ProgrammedFrontend[] = [];
  for (const [dispatch, pickMap] of [[SERVICE_IPS, IP_PICK], [SERVICE_NODEPORTS, NP_PICK]] as const) {
    for (const [k] of pairs(dispatch)) {
      const [code, ...rest] = (k.comment ?? '').split(' ');
      const port = k.parts[k.parts.length - 1]!;
      out.push({
        service: rest.join(' '),
        kind: KINDS.get(code ?? '') ?? (dispatch === SERVICE_IPS ? 'unknown' : 'nodePort'),
        address: dispatch === SERVICE_IPS ? hostPort(k.parts[0]!, port) : `*:${port}`,
        backends: backends(pickMap, k.key),
      });
    }
  }
  return out;
}
