// The interfaces this node's pods are reached through, for the eBPF per-packet path: replies of
// local backends are caught on the ingress of these (a veth per pod for point-to-point CNIs, the
// bridge for bridged ones). A local endpoint's interface is the one its address is routed to
// directly (no gateway) in the main routing table, as `ip -j route show` prints it.

import { cidrContains, parseCIDR, parseIP } from '../model/ip.js';
import { exec as defaultExec, type ExecFn } from '../util/exec.js';

export interface DirectRoute {
  /** An address or CIDR ("default" routes are left out). */
  dst: string;
  dev: string;
}

/** The direct (gateway-less) routes in `ip -j route show` output; unreadable output yields none. */
export function parseDirectRoutes(text: string): DirectRoute[] {
  let routes: unknown;
  try {
    routes = JSON.parse(text);
  } catch {
    return [];
  }
  if (!Array.isArray(routes)) return [];
  const out: DirectRoute[] = [];
  for (const r of routes as Array<{ dst?: unknown; dev?: unknown; gateway?: unknown; type?: unknown }>) {
    if (typeof r?.dst !== 'string' || typeof r.dev !== 'string' || r.dst === 'default' || r.gateway !== undefined) continue;
    if (r.type !== undefined && r.type !== 'unicast') continue;
    out.push({ dst: r.dst, dev: r.dev });
  }
  return out;
}

/** The interfaces the addresses are routed to directly (longest prefix), without `exclude`, sorted. */
export function devicesFor(ips: readonly string[], routes: readonly DirectRoute[], exclude: readonly string[] = []): string[] {
  const parsed = routes.map((r) => ({ dev: r.dev, cidr: parseCIDR(r.dst.includes('/') ? r.dst : `${r.dst}/${r.dst.includes(':') ? 128 : 32}`) }));
  const out = new Set<string>();
  for (const ip of ips) {
    const p = parseIP(ip);
    if (p === null) continue;
    let best: { dev: string; prefix: number } | undefined;
    for (const r of parsed) {
      if (r.cidr === null || !cidrContains(r.cidr, p)) continue;
      if (best === undefined || r.cidr.prefix > best.prefix) best = { dev: r.dev, prefix: r.cidr.prefix };
    }
    if (best !== undefined && !exclude.includes(best.dev)) out.add(best.dev);
  }
  return [...out].sort();
}

/** This namespace's direct routes of both families. Throws Error when `ip` cannot run or fails. */
export async function readDirectRoutes(exec: ExecFn = defaultExec): Promise<DirectRoute[]> {
  const out: DirectRoute[] = [];
  for (const fam of ['-4', '-6']) {
    const r = await exec(['ip', '-j', fam, 'route', 'show', 'table', 'main'], { timeoutMs: 10_000 });
    if (r.code !== 0) throw new Error(`ip -j ${fam} route show failed (exit ${r.code}): ${r.stderr.trim()}`);
    out.push(...parseDirectRoutes(r.stdout));
  }
  return out;
}

/**
 * The interfaces of the direct routes that lie inside `cidrs` (the cluster's pod CIDRs): every
 * local pod's interface, endpoint or not (a /32 per veth, or the bridge's subnet), without
 * `exclude`, sorted.
 */
export function devicesWithin(routes: readonly DirectRoute[], cidrs: readonly string[], exclude: readonly string[] = []): string[] {
  const pods = cidrs.map((c) => parseCIDR(c)).filter((c) => c !== null);
  const out = new Set<string>();
  for (const r of routes) {
    const c = parseCIDR(r.dst.includes('/') ? r.dst : `${r.dst}/${r.dst.includes(':') ? 128 : 32}`);
    if (c === null || exclude.includes(r.dev)) continue;
    const first = parseIP(r.dst.split('/')[0]!);
    if (first !== null && pods.some((p) => p.family === c.family && c.prefix >= p.prefix && cidrContains(p, first))) out.add(r.dev);
  }
  return [...out].sort();
}
