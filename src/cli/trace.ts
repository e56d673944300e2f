// `rudder trace`: where a packet goes, and why.

import { normalizeIP } from '../model/ip.js';
import type { TraceResult } from '../model/trace.js';
import type { Protocol } from '../source/objects.js';
import { UsageError, flagOne, type FlagSpecs, type Parsed } from './args.js';

export const TRACE_FLAGS: FlagSpecs = {
  src: { value: 'IP', help: 'source address of the packet' },
  dst: { value: 'IP', help: 'destination address of the packet' },
  port: { value: 'PORT', help: 'destination port' },
  proto: { value: 'tcp|udp|sctp', help: 'protocol (default tcp)' },
  json: { boolean: true, help: 'print one JSON object' },
  agent: { value: 'HOST:PORT', help: 'ask a running agent (its metrics address) about its live table instead of reading manifests' },
};

/** `rudder trace --agent`: the same question, answered by a running agent from its live table. */
export async function traceAgent(agent: string, pkt: PacketFlags): Promise<TraceResult> {
  const q = new URLSearchParams({ src: pkt.src, dst: pkt.dst, port: String(pkt.port), proto: pkt.protocol });
  const url = `http://${agent}/trace?${q}`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  } catch (e) {
    throw new Error(`cannot reach ${url}: ${(e as Error).message}`);
  }
  if (!res.ok) throw new Error(`${url} answered ${res.status}: ${(await res.text()).trim()}`);
  return (await res.json()) as TraceResult;
}

export interface PacketFlags {
  src: string;
  dst: string;
  port: number;
  protocol: Protocol;
}

export function packetFlags(p: Parsed): PacketFlags {
  return packetFrom((n) => flagOne(p, n), (msg) => new UsageError(msg));
}

/** The packet of an agent's /trace query; throws TypeError naming the parameter. */
export function packetQuery(q: URLSearchParams): PacketFlags {
  return packetFrom((n) => q.get(n) ?? undefined, (msg) => new TypeError(msg.replace(/--(\w+)/g, '$1')));
}

function packetFrom(get: (name: string) => string | undefined, error: (msg: string) => Error): PacketFlags {
  const need = (n: string): string => {
    const v = get(n);
    if (v === undefined) throw error(`--${n} is required`);
    return v;
  };
  const src = normalizeIP(need('src'));
  if (src === null) throw error(`--src: ${JSON.stringify(get('src'))} is not an IP address`);
  const dst = normalizeIP(need('dst'));
  if (dst === null) throw error(`--dst: ${JSON.stringify(get('dst'))} is not an IP address`);
  if ((src.includes(':')) !== (dst.includes(':'))) throw error('--src and --dst must be of the same IP family');
  const portText = need('port');
  if (!/^\d+$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) throw error(`--port: ${JSON.stringify(portText)} must be an integer from 1 to 65535`);
  const proto = (get('proto') ?? 'tcp').toUpperCase();
  if (proto !== 'TCP' && proto !== 'UDP' && proto !== 'SCTP') throw error(`--proto: ${JSON.stringify(get('proto'))} is not tcp, udp or sctp`);
  return { src, dst, port: Number(portText), protocol: proto };
}

export function traceJSON(r: TraceResult): string {
  const out: Record<string, unknown> = { verdict: r.verdict, backends: r.backends, masquerade: r.masquerade };
  if (r.service !== undefined) out['service'] = r.service;
  if (r.frontend !== undefined) out['frontend'] = r.frontend;
  out['rule'] = r.rule;
  if (r.affinityTimeoutSeconds !== undefined) out['affinityTimeoutSeconds'] = r.affinityTimeoutSeconds;
  out['explanation'] = r.explanation;
  return JSON.stringify(out, null, 1) + '\n';
}

export function traceText(pkt: PacketFlags, r: TraceResult): string {
  const head = `${pkt.protocol} ${pkt.src} -> ${pkt.dst}:${pkt.port}: ${r.verdict.toUpperCase()}`;
  const lines = [head, ...r.explanation.map((s) => `  ${s}`)];
  if (r.verdict === 'forward') lines.push(`  backends: ${r.backends.join(' ')}${r.masquerade ? '  (masquerade)' : ''}`);
  return lines.join('\n') + '\n';
}
