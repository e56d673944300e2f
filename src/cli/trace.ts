// `rudder trace`: where a packet goes, and why.

import { normalizeIP } from '../model/ip.js';
import type { TraceResult } from '../model/trace.js';
import { allPorts, type ServiceTable } from '../model/types.js';
import type { Protocol } from '../source/objects.js';
import { UsageError, flagOne, type FlagSpecs, type Parsed } from './args.js';

export const TRACE_FLAGS: FlagSpecs = {
  src: { value: 'IP', help: 'source address of the packet' },
  dst: { value: 'IP', help: 'destination address of the packet' },
  port: { value: 'PORT', help: 'destination port' },
  proto: { value: 'tcp|udp|sctp', help: 'protocol (default tcp)' },
  json: { boolean: true, help: 'print one JSON object' },
  agent: { value: 'HOST:PORT', help: 'ask a running agent (its metrics address) about its live table instead of reading manifests' },
  kernel: { boolean: true, help: 'eBPF: also run the packet, as it arrives on the node\'s interface, through the per-packet program loaded in the kernel (BPF_PROG_TEST_RUN on the live maps, no state written) and compare' },
  'bpf-pin-path': { value: 'DIR', help: 'eBPF: with --kernel and manifests, the pins of the local agent (default /sys/fs/bpf/rudder)' },
};

/** The kernel's answer (KernelTrace of src/dataplane/ebpf/kernel-trace.ts), as plain data. */
export interface KernelAnswer {
  verdict: TraceResult['verdict'];
  step: string;
  reason: string;
  out?: { src: string; sport: number; dst: string; dport: number; icmp?: string };
  frontend?: { entry: string; id: number; flags: string[] };
  backend?: { id: number; address: string };
  masquerade: boolean;
  explanation: string[];
}

/**
 * Where the kernel and the model disagree about a packet from outside the node, one line each:
 * the verdict, a backend the model does not list, masquerade (the program keeps the client's
 * address for a local backend, where kube-proxy masquerades: not a difference). Empty: they agree.
 */
export function kernelDifferences(model: TraceResult, k: KernelAnswer, localBackends: ReadonlySet<string> = new Set()): string[] {
  const out: string[] = [];
  if (model.verdict !== k.verdict) return [`verdict: the model says ${model.verdict}, the kernel ${k.verdict}`];
  if (k.verdict !== 'forward') return out;
  const be = k.backend?.address;
  if (be === undefined || !model.backends.includes(be)) out.push(`backend: the kernel picked ${be ?? 'none'}, the model allows ${model.backends.join(' ') || 'none'}`);
  const remote = be !== undefined && !localBackends.has(be);
  if (model.masquerade && remote && !k.masquerade) out.push(`masquerade: the model masquerades, the kernel kept the client address for remote backend ${be}`);
  if (!model.masquerade && k.masquerade) out.push('masquerade: the kernel masqueraded, the model does not');
  return out;
}

export function kernelText(k: KernelAnswer, diffs: readonly string[] | null): string {
  const lines = [`kernel (rd_from_netdev, the packet as it arrives on the node's interface): ${k.verdict.toUpperCase()}`, ...k.explanation.map((s) => `  ${s}`)];
  if (diffs === null) lines.push('  (the source is a pod or the node: its connections are decided at connect() by the socket programs; not compared)');
  else if (diffs.length === 0) lines.push('  kernel and model agree');
  else lines.push('  KERNEL AND MODEL DIFFER:', ...diffs.map((d) => `    ${d}`));
  return lines.join('\n') + '\n';
}

/** `rudder trace --agent`: the same question, answered by a running agent from its live table. */
export async function traceAgent(agent: string, pkt: PacketFlags, kernel = false): Promise<TraceResult & { kernel?: KernelAnswer; kernelDifferences?: string[] | null }> {
  const q = new URLSearchParams({ src: pkt.src, dst: pkt.dst, port: String(pkt.port), proto: pkt.protocol, ...(kernel ? { kernel: '1' } : {}) });
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

/** The endpoints of the matched service port that run on this node ("ip:port"), for kernelDifferences. */
export function localBackendsOf(table: ServiceTable, service: string | undefined): Set<string> {
  const out = new Set<string>();
  if (service === undefined) return out;
  for (const sp of allPorts(table)) if (sp.id === service) for (const e of sp.endpoints) if (e.isLocal) out.add(e.id);
  return out;
}
