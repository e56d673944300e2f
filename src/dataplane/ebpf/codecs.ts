// One typed codec per BPF map struct. Offsets and sizes are written out here and must match the C
// structs in bpf/lib/common.h; test/unit/ebpf-codecs.test.ts compares every one with the compiled
// object's BTF. Addresses are 16 bytes everywhere (IPv4 as ::ffff:a.b.c.d), ports and addresses
// in network byte order, everything else little-endian (host order on the machines Rudder runs on;
// init refuses a big-endian host).
//
// Encoders write into caller-owned buffers so the hot paths reuse preallocated ones.

import { formatIP, parseIP } from '../../model/ip.js';
import { DataPlaneError } from '../dataplane.js';
import { DEFAULT_CT_TIMEOUTS, DEFAULT_SNAT_PORTS, type CtTimeouts } from './defaults.js';

export const ADDR_SIZE = 16;

/** Dotted-quad IPv4 into `buf` at `off` (network order); false if `ip` is not one. No allocation: map writes run it per element. */
function writeV4(buf: Buffer, off: number, ip: string): boolean {
  let octet = 0;
  let digits = 0;
  let part = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || part === 3) return false;
      buf[off + part++] = octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return false; // leading zero
      octet = octet * 10 + (c - 48);
      if (octet > 255 || ++digits > 3) return false;
    } else {
      return false;
    }
  }
  if (digits === 0 || part !== 3) return false;
  buf[off + 3] = octet;
  return true;
}

/** Writes an address (validated text) at `off`. Throws DataPlaneError EAPPLY for a non-address. */
export function writeAddr(buf: Buffer, off: number, ip: string): void {
  if (!ip.includes(':')) {
    if (writeV4(buf, off + 12, ip)) {
      buf.fill(0, off, off + 10);
      buf[off + 10] = 0xff;
      buf[off + 11] = 0xff;
      return;
    }
    throw new DataPlaneError('EAPPLY', `not an IP address: ${JSON.stringify(ip)}`);
  }
  const p = parseIP(ip);
  if (p === null) throw new DataPlaneError('EAPPLY', `not an IP address: ${JSON.stringify(ip)}`);
  if (p.family === 4) {
    buf.fill(0, off, off + 10);
    buf.writeUInt16BE(0xffff, off + 10);
    buf.writeUInt32BE(Number(p.value), off + 12);
  } else {
    buf.writeBigUInt64BE(p.value >> 64n, off);
    buf.writeBigUInt64BE(p.value & 0xffffffffffffffffn, off + 8);
  }
}

export function readAddr(buf: Buffer, off: number): string {
  if (buf.readUInt32BE(off) === 0 && buf.readUInt32BE(off + 4) === 0 && buf.readUInt32BE(off + 8) === 0xffff) {
    return `${buf[off + 12]}.${buf[off + 13]}.${buf[off + 14]}.${buf[off + 15]}`;
  }
  const hi = buf.readBigUInt64BE(off);
  const lo = buf.readBigUInt64BE(off + 8);
  if (hi === 0n && lo >> 32n === 0xffffn) return formatIP({ family: 4, value: lo & 0xffffffffn });
  return formatIP({ family: 6, value: (hi << 64n) | lo });
}

export const IPPROTO = { TCP: 6, UDP: 17, SCTP: 132 } as const;
export type ProtoName = keyof typeof IPPROTO;
export function protoName(n: number): string {
  return n === 6 ? 'TCP' : n === 17 ? 'UDP' : n === 132 ? 'SCTP' : `proto-${n}`;
}

export const SCOPE_EXT = 0;
export const SCOPE_INT = 1;
/** Only where the node's own namespace gets another path than its pods (see state.ts). */
export const SCOPE_HOST = 2;

/** rd_svc_val.flags (RD_F_* in common.h). */
export const SVC_F = {
  REJECT: 1 << 0,
  DROP: 1 << 1,
  AFFINITY: 1 << 2,
  SRC_RANGE: 1 << 3,
  MAGLEV: 1 << 4,
  NODEPORT: 1 << 5,
  LOOPBACK: 1 << 6,
  SRC_NODE_OK: 1 << 7,
  MASQ: 1 << 8,
} as const;

/** The names of the RD_F_* bits set in a frontend entry's flags, lowercase. */
export function flagNames(flags: number): string[] {
  return Object.entries(SVC_F).filter(([, bit]) => flags & bit).map(([n]) => n.toLowerCase());
}

/** rd_backend.flags (RD_BE_* in common.h). */
export const BE_F = {
  LOCAL: 1 << 0,
} as const;

/** struct rd_svc_key (24 bytes). */
export interface SvcKey {
  addr: string;
  port: number;
  slot: number;
  proto: number;
  scope: number;
}
export const SvcKeyCodec = {
  size: 24,
  struct: 'rd_svc_key',
  offsets: { addr: 0, port: 16, slot: 18, proto: 20, scope: 21 },
  encode(k: SvcKey, buf: Buffer, off = 0): void {
    SvcKeyCodec.encodeFields(k.addr, k.port, k.slot, k.proto, k.scope, buf, off);
  },
  encodeFields(addr: string, port: number, slot: number, proto: number, scope: number, buf: Buffer, off: number): void {
    writeAddr(buf, off, addr);
    buf.writeUInt16BE(port, off + 16);
    buf.writeUInt16LE(slot, off + 18);
    buf[off + 20] = proto;
    buf[off + 21] = scope;
    buf.writeUInt16LE(0, off + 22);
  },
  decode(buf: Buffer, off = 0): SvcKey {
    return { addr: readAddr(buf, off), port: buf.readUInt16BE(off + 16), slot: buf.readUInt16LE(off + 18), proto: buf.readUInt8(off + 20), scope: buf.readUInt8(off + 21) };
  },
};

/** struct rd_svc_val (16 bytes). */
export interface SvcVal {
  backendId: number;
  count: number;
  flags: number;
  revNatId: number;
  affinityTimeout: number;
}
export const SvcValCodec = {
  size: 16,
  struct: 'rd_svc_val',
  offsets: { backend_id: 0, count: 4, flags: 6, rev_nat_id: 8, affinity_timeout: 12 },
  encode(v: SvcVal, buf: Buffer, off = 0): void {
    SvcValCodec.encodeFields(v.backendId, v.count, v.flags, v.revNatId, v.affinityTimeout, buf, off);
  },
  encodeFields(backendId: number, count: number, flags: number, revNatId: number, affinityTimeout: number, buf: Buffer, off: number): void {
    buf.writeUInt32LE(backendId, off);
    buf.writeUInt16LE(count, off + 4);
    buf.writeUInt16LE(flags, off + 6);
    buf.writeUInt32LE(revNatId, off + 8);
    buf.writeUInt32LE(affinityTimeout, off + 12);
  },
  decode(buf: Buffer, off = 0): SvcVal {
    return { backendId: buf.readUInt32LE(off), count: buf.readUInt16LE(off + 4), flags: buf.readUInt16LE(off + 6), revNatId: buf.readUInt32LE(off + 8), affinityTimeout: buf.readUInt32LE(off + 12) };
  },
};

/** struct rd_backend (20 bytes), keyed by a __u32 backend id. */
export interface Backend {
  addr: string;
  port: number;
  proto: number;
  flags: number;
}
export const BackendCodec = {
  size: 20,
  struct: 'rd_backend',
  offsets: { addr: 0, port: 16, proto: 18, flags: 19 },
  encode(b: Backend, buf: Buffer, off = 0): void {
    writeAddr(buf, off, b.addr);
    buf.writeUInt16BE(b.port, off + 16);
    buf.writeUInt8(b.proto, off + 18);
    buf.writeUInt8(b.flags, off + 19);
  },
  decode(buf: Buffer, off = 0): Backend {
    return { addr: readAddr(buf, off), port: buf.readUInt16BE(off + 16), proto: buf.readUInt8(off + 18), flags: buf.readUInt8(off + 19) };
  },
};

/** struct rd_rev_nat (20 bytes), keyed by a __u32 frontend (rev-NAT) id. */
export interface RevNat {
  addr: string;
  port: number;
}
export const RevNatCodec = {
  size: 20,
  struct: 'rd_rev_nat',
  offsets: { addr: 0, port: 16 },
  encode(r: RevNat, buf: Buffer, off = 0): void {
    writeAddr(buf, off, r.addr);
    buf.writeUInt16BE(r.port, off + 16);
    buf.writeUInt16LE(0, off + 18);
  },
  decode(buf: Buffer, off = 0): RevNat {
    return { addr: readAddr(buf, off), port: buf.readUInt16BE(off + 16) };
  },
};

/** struct rd_aff_match (8 bytes). */
export const AffMatchCodec = {
  size: 8,
  struct: 'rd_aff_match',
  offsets: { rev_nat_id: 0, backend_id: 4 },
  encode(revNatId: number, backendId: number, buf: Buffer, off = 0): void {
    buf.writeUInt32LE(revNatId, off);
    buf.writeUInt32LE(backendId, off + 4);
  },
  decode(buf: Buffer, off = 0): { revNatId: number; backendId: number } {
    return { revNatId: buf.readUInt32LE(off), backendId: buf.readUInt32LE(off + 4) };
  },
};

/** struct rd_aff_key (16 bytes): the client's network namespace cookie and the frontend. */
export const AffKeyCodec = {
  size: 16,
  struct: 'rd_aff_key',
  offsets: { client: 0, rev_nat_id: 8 },
  decode(buf: Buffer, off = 0): { client: bigint; revNatId: number } {
    return { client: buf.readBigUInt64LE(off), revNatId: buf.readUInt32LE(off + 8) };
  },
};

/** struct rd_src_range_key (24 bytes), an LPM trie key: prefixlen counts the id's 32 bits too. */
export const SrcRangeKeyCodec = {
  size: 24,
  struct: 'rd_src_range_key',
  offsets: { prefixlen: 0, rev_nat_id: 4, addr: 8 },
  /** `cidr` is validated text; IPv4 prefixes are shifted by the 96 bits of the mapped prefix. */
  encode(revNatId: number, cidr: string, buf: Buffer, off = 0): void {
    const slash = cidr.indexOf('/');
    const ip = slash < 0 ? cidr : cidr.slice(0, slash);
    const v4 = !ip.includes(':');
    const bits = slash < 0 ? (v4 ? 32 : 128) : Number(cidr.slice(slash + 1));
    buf.writeUInt32LE(32 + (v4 ? 96 : 0) + bits, off);
    buf.writeUInt32LE(revNatId, off + 4);
    writeAddr(buf, off + 8, ip);
  },
  decode(buf: Buffer, off = 0): { revNatId: number; cidr: string } {
    const plen = buf.readUInt32LE(off) - 32;
    const addr = readAddr(buf, off + 8);
    return { revNatId: buf.readUInt32LE(off + 4), cidr: `${addr}/${addr.includes(':') ? plen : plen - 96}` };
  },
};

/** struct rd_config (32 bytes), the one element of rd_config_map. */
export const ConfigCodec = {
  size: 36,
  struct: 'rd_config',
  offsets: { node_ip4: 0, node_ip6: 16, flags: 32 },
  encode(c: { nodeIP4: string; nodeIP6: string; flags?: number }, buf: Buffer): void {
    buf.fill(0);
    if (c.nodeIP4 !== '') writeAddr(buf, 0, c.nodeIP4);
    if (c.nodeIP6 !== '') writeAddr(buf, 16, c.nodeIP6);
    buf.writeUInt32LE(c.flags ?? 0, 32);
  },
};

/** rd_config.flags (RD_CFG_* in common.h). */
export const CFG_F = { MASQ_OFF_CLUSTER4: 1 << 0, MASQ_OFF_CLUSTER6: 1 << 1 } as const;


/**
 * rd_knobs.ct_end_window: how long a flow end stays live in rd_ct_ends (lib/ct.h), in the
 * programs' 2^30 ns units: the longest CT timeout, rounded up, plus two units of slack (an entry
 * is refreshed up to a second before its ends are).
 */
export function ctEndWindow(ct: CtTimeouts): number {
  const longest = Math.max(ct.tcpSyn, ct.tcpEstablished, ct.tcpClosing, ct.udp);
  return Math.ceil((longest * 1e9) / 2 ** 30) + 2;
}

/** struct rd_knobs (48 bytes): the objects' read-only data, fixed at load. */
export interface Knobs {
  hostNetnsCookie: bigint;
  hostNamespaceOnly: boolean;
  maglevTableSize: number;
  ct?: CtTimeouts;
  /** Source ports of flows SNATed to the node, inclusive. */
  snatPorts?: [number, number];
  /** Ports inside snatPorts left out: the node's ephemeral range (net.ipv4.ip_local_port_range). */
  snatSkip?: [number, number];
  /** Per-packet programs that decide and rewrite but write no map (rudder trace --kernel). */
  dryRun?: boolean;
}
export const KnobsCodec = {
  size: 48,
  struct: 'rd_knobs',
  offsets: { host_netns_cookie: 0, host_ns_only: 8, maglev_m: 12, ct_tcp_syn: 16, ct_tcp_established: 20, ct_tcp_closing: 24, ct_udp: 28, snat_port_min: 32, snat_port_max: 34, snat_skip_min: 36, snat_skip_max: 38, dry_run: 40, ct_end_window: 44 },
  encode(k: Knobs): Buffer {
    const buf = Buffer.alloc(48);
    const ct = k.ct ?? DEFAULT_CT_TIMEOUTS;
    const [lo, hi] = k.snatPorts ?? DEFAULT_SNAT_PORTS;
    buf.writeBigUInt64LE(k.hostNetnsCookie, 0);
    buf.writeUInt32LE(k.hostNamespaceOnly ? 1 : 0, 8);
    buf.writeUInt32LE(k.maglevTableSize, 12);
    buf.writeUInt32LE(ct.tcpSyn, 16);
    buf.writeUInt32LE(ct.tcpEstablished, 20);
    buf.writeUInt32LE(ct.tcpClosing, 24);
    buf.writeUInt32LE(ct.udp, 28);
    buf.writeUInt16LE(lo, 32);
    buf.writeUInt16LE(hi, 34);
    const [slo, shi] = k.snatSkip ?? [0, 0];
    buf.writeUInt16LE(slo, 36);
    buf.writeUInt16LE(shi, 38);
    buf.writeUInt32LE(k.dryRun === true ? 1 : 0, 40);
    buf.writeUInt32LE(ctEndWindow(ct), 44);
    return buf;
  },
};


/** skb->mark of a packet the per-packet programs redirected (RD_MARK_FORWARDED, tc_nodeport.c). */
export const MARK_FORWARDED = 0x52440001;

/** rd_ct_ends (lib/ct.h): slots of the flow-end filter in front of rd_ct, __u32 each. */
export const CT_ENDS = 65536;

/** struct rd_ct_key (40 bytes) and struct rd_ct_val (56 bytes): written by the tc programs (lib/ct.h). */
export const CtKeyCodec = { size: 40, struct: 'rd_ct_key', offsets: { saddr: 0, daddr: 16, sport: 32, dport: 34, proto: 36, dir: 37 } };
export const CtValCodec = {
  size: 56,
  struct: 'rd_ct_val',
  offsets: { nat_saddr: 0, nat_daddr: 16, nat_sport: 32, nat_dport: 34, rev_nat_id: 36, last_seen_ns: 40, backend_id: 48, state: 52, flags: 53 },
};
/** struct rd_trace (20 bytes): what the last packet of a dry run went through. */
export const TraceCodec = {
  size: 20,
  struct: 'rd_trace',
  offsets: { step: 0, reason: 4, rev_nat_id: 8, backend_id: 12, flags: 16, scope: 18, snat: 19 },
  decode(b: Buffer): { step: number; reason: number; revNatId: number; backendId: number; flags: number; scope: number; snat: boolean } {
    return { step: b.readUInt32LE(0), reason: b.readUInt32LE(4), revNatId: b.readUInt32LE(8), backendId: b.readUInt32LE(12), flags: b.readUInt16LE(16), scope: b[18]!, snat: b[19] !== 0 };
  },
};

/** struct rd_aff_ext_key (24 bytes): per-packet affinity, by client address. */
export const AffExtKeyCodec = { size: 24, struct: 'rd_aff_ext_key', offsets: { client: 0, rev_nat_id: 16 } };

/** struct rd_svc_stats (24 bytes per CPU). */
export const SvcStatsCodec = {
  size: 24,
  struct: 'rd_svc_stats',
  offsets: { connects: 0, refused: 8, dropped: 16 },
};

/** struct rd_be_stats (8 bytes per CPU). */
export const BeStatsCodec = {
  size: 8,
  struct: 'rd_be_stats',
  offsets: { connects: 0 },
};

/** struct rd_stale_key (20 bytes): a backend whose connected UDP sockets are destroyed. */
export const StaleKeyCodec = {
  size: 20,
  struct: 'rd_stale_key',
  offsets: { addr: 0, port: 16, proto: 18 },
  encode(addr: string, port: number, proto: number, buf: Buffer, off = 0): void {
    writeAddr(buf, off, addr);
    buf.writeUInt16BE(port, off + 16);
    buf.writeUInt8(proto, off + 18);
    buf.writeUInt8(0, off + 19);
  },
};

/** struct rd_sk_key (32 bytes) and struct rd_sk_val (24 bytes): written by the programs only. */
export const SkKeyCodec = { size: 32, struct: 'rd_sk_key', offsets: { cookie: 0, addr: 8, port: 24 } };
export const SkValCodec = { size: 24, struct: 'rd_sk_val', offsets: { addr: 0, port: 16, rev_nat_id: 20 } };
export const AffValCodec = { size: 16, struct: 'rd_aff_val', offsets: { last_used_ns: 0, backend_id: 8 } };

/** Every codec, for the BTF layout test. */
export const ALL_CODECS = [SvcKeyCodec, SvcValCodec, BackendCodec, RevNatCodec, AffMatchCodec, AffKeyCodec, SrcRangeKeyCodec,
  ConfigCodec, KnobsCodec, SvcStatsCodec, BeStatsCodec, StaleKeyCodec, SkKeyCodec, SkValCodec, AffValCodec, CtKeyCodec, CtValCodec, AffExtKeyCodec, TraceCodec] as const;
