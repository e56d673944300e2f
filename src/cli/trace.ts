// `rudder trace`: where a packet goes, and why.

import { normalizeIP } from '../model/ip.js';
import type { TraceResult } from '../model/trace.js';
import type { Protocol } from '../source/objects.js';
import { UsageError, flagInt, flagOne, type FlagSpecs, type Parsed } from './args.js';

export const TRACE_FLAGS: FlagSpecs = {
  src: { value: 'IP', help: 'source address of the packet' },
  dst: { value: 'IP', help: 'destination address of the packet' },
  port: { value: 'PORT', help: 'destination port' },
  proto: { value: 'tcp|udp|sctp', help: 'protocol (default tcp)' },
  json: { boolean: true, help: 'print one JSON object' },
};

export interface PacketFlags {
  src: string;
  dst: string;
  port: number;
  protocol: Protocol;
}

export function packetFlags(p: Parsed): PacketFlags {
  const need = (n: string): string => {
    const v = flagOne(p, n);
    if (v === undefined) throw new UsageError(`--${n} is required`);
    return v;
  };
  const src = normalizeIP(need('src'));
  if (src === null) throw new UsageError(`--src: ${JSON.stringify(flagOne(p, 'src'))} is not an IP address`);
  const dst = normalizeIP(need('dst'));
  if (dst === null) throw new UsageError(`--dst: ${JSON.stringify(flagOne(p, 'dst'))} is not an IP address`);
  if ((src.includes(':')) !== (dst.includes(':'))) throw new UsageError('--src and --dst must be of the same IP family');
  need('port');
  const port = flagInt(p, 'port', 1, 65535)!;
  const proto = (flagOne(p, 'proto') ?? 'tcp').toUpperCase();
  if (proto !== 'TCP' && proto !== 'UDP' && proto !== 'SCTP') throw new UsageError(`--proto: ${JSON.stringify(flagOne(p, 'proto'))} is not tcp, udp or sctp`);
  return { src, dst, port, protocol: proto };
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
