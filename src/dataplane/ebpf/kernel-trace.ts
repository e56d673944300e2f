// `rudder trace --kernel`: a packet run through the per-packet program as loaded in the kernel,
// on the live maps, with BPF_PROG_TEST_RUN. A dry-run copy of the program (programs.ts
// loadTracer) decides and rewrites like the attached one but writes no map (no CT entry, no
// counter, no affinity) and records what it went through in its own rd_trace map. So the answer
// comes from the kernel's own code path and state, not from a model of them.

import { formatIP } from '../../model/ip.js';
import type { Verdict } from '../../model/trace.js';
import { BackendCodec, flagNames, IPPROTO, readAddr, SCOPE_EXT, TraceCodec, writeAddr, type Knobs } from './codecs.js';
import type { MapSizes } from './defaults.js';
import { bpfMap, progTestRun, type BpfObject } from './libbpf.js';
import { loadTracer } from './programs.js';

export interface KernelTrace {
  verdict: Verdict;
  /** What the program took the packet for (a tracked flow's packet, a new flow, ...). */
  step: string;
  /** Why it decided as it did. */
  reason: string;
  /** The packet as the program left it (forwarded, or the refusal it answers with). */
  out?: { src: string; sport: number; dst: string; dport: number; icmp?: string };
  frontend?: { entry: 'external' | 'internal'; id: number; flags: string[] };
  backend?: { id: number; address: string };
  masquerade: boolean;
  explanation: string[];
}

export interface TracePacket {
  src: string;
  dst: string;
  port: number;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  /** Source port (default 40000). */
  sport?: number;
}

const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;
const STEPS = ['not a packet the programs handle', 'a packet of a tracked flow, from the client', 'a reply of a tracked flow', 'the first packet of a flow to a frontend', 'not a frontend', 'an ICMP error about a tracked flow'];
const REASONS = [
  'forwarded', 'a loopback NodePort serves the node itself only', 'the source is outside loadBalancerSourceRanges',
  'traffic policy Local and no local endpoint', 'no endpoints: refused', 'a slot names a missing backend', 'masquerade needs a node address of the family', 'no free SNAT port',
];

/** The address as the maps hold it (16 bytes, IPv4 as ::ffff:a.b.c.d). */
function addr16(ip: string): Buffer {
  const b = Buffer.alloc(16);
  writeAddr(b, 0, ip);
  return b;
}

/** An Ethernet frame of a TCP SYN or a UDP datagram (checksums left to the kernel's incremental updates; nothing verifies them here). */
function frame(p: TracePacket): Buffer {
  const v4 = !p.src.includes(':');
  const tcp = p.protocol === 'TCP';
  const l4 = tcp ? 20 : 8;
  const l3 = v4 ? 20 : 40;
  const f = Buffer.alloc(14 + l3 + l4);
  f.writeUInt16BE(v4 ? 0x0800 : 0x86dd, 12);
  const ip = 14;
  if (v4) {
    f[ip] = 0x45;
    f.writeUInt16BE(l3 + l4, ip + 2);
    f[ip + 8] = 64;
    f[ip + 9] = tcp ? IPPROTO.TCP : IPPROTO.UDP;
    addr16(p.src).copy(f, ip + 12, 12);
    addr16(p.dst).copy(f, ip + 16, 12);
  } else {
    f[ip] = 0x60;
    f.writeUInt16BE(l4, ip + 4);
    f[ip + 6] = tcp ? IPPROTO.TCP : IPPROTO.UDP;
    f[ip + 7] = 64;
    addr16(p.src).copy(f, ip + 8);
    addr16(p.dst).copy(f, ip + 24);
  }
  const o = ip + l3;
  f.writeUInt16BE(p.sport ?? 40000, o);
  f.writeUInt16BE(p.port, o + 2);
  if (tcp) {
    f[o + 12] = 0x50;
    f[o + 13] = 0x02; // SYN
    f.writeUInt16BE(64240, o + 14);
  } else {
    f.writeUInt16BE(l4, o + 4);
  }
  return f;
}

function readOut(f: Buffer): KernelTrace['out'] {
  const v4 = f.readUInt16BE(12) === 0x0800;
  const ip = 14;
  const proto = v4 ? f[ip + 9]! : f[ip + 6]!;
  const at = (o: number, n: 4 | 16) => (n === 4 ? formatIP({ family: 4, value: BigInt(f.readUInt32BE(o)) }) : readAddr(f, o));
  const src = v4 ? at(ip + 12, 4) : at(ip + 8, 16);
  const dst = v4 ? at(ip + 16, 4) : at(ip + 24, 16);
  const l4 = ip + (v4 ? 20 : 40);
  if (proto === 1 || proto === 58) return { src, sport: 0, dst, dport: 0, icmp: `type ${f[l4]} code ${f[l4 + 1]}` };
  return { src, sport: f.readUInt16BE(l4), dst, dport: f.readUInt16BE(l4 + 2) };
}

export class KernelTracer {
  private readonly obj: BpfObject;
  private readonly prog: number;
  private readonly traceFd: number;
  private readonly backendsFd: number;

  /** Throws DataPlaneError EINIT when no per-packet path is pinned at `pinPath`. */
  constructor(pinPath: string, knobs: Knobs, sizes?: MapSizes) {
    this.obj = loadTracer({ pinPath, knobs, ...(sizes === undefined ? {} : { sizes }) });
    this.prog = this.obj.progFd('rd_from_netdev');
    this.traceFd = this.obj.mapFd('rd_trace');
    this.backendsFd = this.obj.mapFd('rd_backends');
  }

  /** The packet as it arrives on the node's interface. Throws DataPlaneError EREAD. */
  trace(p: TracePacket): KernelTrace {
    const key = Buffer.alloc(4);
    const rec = Buffer.alloc(TraceCodec.size);
    bpfMap.update(this.traceFd, key, rec, 'rd_trace');
    const input = frame(p);
    const r = progTestRun(this.prog, input, undefined, 'rd_from_netdev');
    bpfMap.lookup(this.traceFd, key, rec, 'rd_trace');
    const t = TraceCodec.decode(rec);
    const out = readOut(r.data);
    const changed = !r.data.equals(input);
    const verdict: Verdict = r.retval === TC_ACT_SHOT ? 'drop' : out?.icmp !== undefined && r.retval === TC_ACT_REDIRECT ? 'reject' : changed ? 'forward' : 'none';
    const res: KernelTrace = { verdict, step: STEPS[t.step] ?? `step ${t.step}`, reason: verdict === 'none' ? '' : REASONS[t.reason] ?? `reason ${t.reason}`, masquerade: t.snat, explanation: [] };
    if (changed) res.out = out;
    if (t.revNatId !== 0) res.frontend = { entry: t.scope === SCOPE_EXT ? 'external' : 'internal', id: t.revNatId, flags: flagNames(t.flags) };
    if (t.backendId !== 0) {
      key.writeUInt32LE(t.backendId);
      const b = Buffer.alloc(BackendCodec.size);
      const have = bpfMap.lookup(this.backendsFd, key, b, 'rd_backends');
      const be = have ? BackendCodec.decode(b) : undefined;
      res.backend = { id: t.backendId, address: be === undefined ? '(gone)' : be.addr.includes(':') ? `[${be.addr}]:${be.port}` : `${be.addr}:${be.port}` };
    }
    const e = res.explanation;
    e.push(`rd_from_netdev took it for ${res.step}.`);
    if (res.frontend !== undefined) e.push(`Frontend entry: ${res.frontend.entry === 'external' ? 'the external one' : 'the internal one (no external entry: the paths agree)'}, id ${res.frontend.id}, flags ${res.frontend.flags.join(',') || '-'}.`);
    if (res.backend !== undefined) e.push(`Backend ${res.backend.id}: ${res.backend.address}${res.masquerade ? ', masqueraded to the node' : ''}.`);
    if (res.reason !== '') e.push(`Verdict ${verdict}: ${res.reason}.`);
    if (out !== undefined && changed) e.push(out.icmp !== undefined ? `Answered with ICMP ${out.icmp} to ${out.dst}.` : `Leaves as ${out.src}:${out.sport} -> ${out.dst}:${out.dport}.`);
    return res;
  }

  close(): void {
    this.obj.close();
  }
}
