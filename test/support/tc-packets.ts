// Packets for running the per-packet (tc) programs with BPF_PROG_TEST_RUN, and what to check on
// the way out: Ethernet + IPv4/IPv6 + TCP/UDP frames built byte by byte, parsed back, and their
// checksums recomputed here from scratch (one's-complement sums over the header, or over the
// pseudo-header and the whole segment), so a test never takes the kernel's helpers' word for it.
// Also rd_ct read back as typed entries.

import { bpfMap } from '../../src/dataplane/ebpf/libbpf.js';
import { CtKeyCodec, CtValCodec, readAddr, writeAddr } from '../../src/dataplane/ebpf/codecs.js';

/** tc verdicts (linux/pkt_cls.h). */
export const TC_ACT = { OK: 0, SHOT: 2, REDIRECT: 7 } as const;

/** TCP header flags. */
export const TCP = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

export const PROTO = { TCP: 6, UDP: 17, ICMP: 1 } as const;

const ETH_HLEN = 14;
const SRC_MAC = Buffer.from('02000000aa01', 'hex');
const DST_MAC = Buffer.from('02000000bb02', 'hex');

export interface Flow {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  proto: 'tcp' | 'udp';
  /** TCP flags (default SYN). */
  flags?: number;
  payload?: Buffer | string;
  ttl?: number;
  /** IPv4 UDP sent without a checksum (field 0). */
  noUdpChecksum?: boolean;
}

/** An address as it goes on the wire: 4 bytes for IPv4, 16 for IPv6. */
export function addrBytes(ip: string): Buffer {
  const b = Buffer.alloc(16);
  writeAddr(b, 0, ip);
  return ip.includes(':') ? b : b.subarray(12);
}

function addrText(b: Buffer): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  return readAddr(b, 0);
}

/** The one's-complement sum of 16-bit big-endian words over `parts`, folded to 16 bits (only the last part may have odd length). */
export function onesSum(...parts: Buffer[]): number {
  let s = 0;
  for (const p of parts) {
    for (let i = 0; i + 1 < p.length; i += 2) s += (p[i]! << 8) | p[i + 1]!;
    if (p.length % 2 === 1) s += p[p.length - 1]! << 8;
    s = (s & 0xffff) + (s >>> 16);
  }
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

function pseudoHeader(family: 4 | 6, src: Buffer, dst: Buffer, proto: number, len: number): Buffer {
  if (family === 4) {
    const h = Buffer.alloc(12);
    src.copy(h, 0);
    dst.copy(h, 4);
    h[9] = proto;
    h.writeUInt16BE(len, 10);
    return h;
  }
  const h = Buffer.alloc(40);
  src.copy(h, 0);
  dst.copy(h, 16);
  h.writeUInt32BE(len, 32);
  h[39] = proto;
  return h;
}

/** One Ethernet frame carrying the flow's packet, every checksum correct. */
export function packet(f: Flow): Buffer {
  const v4 = !f.src.includes(':');
  const proto = f.proto === 'tcp' ? PROTO.TCP : PROTO.UDP;
  const payload = typeof f.payload === 'string' ? Buffer.from(f.payload) : (f.payload ?? Buffer.alloc(0));
  const l4len = (f.proto === 'tcp' ? 20 : 8) + payload.length;
  const l4 = Buffer.alloc(l4len);
  l4.writeUInt16BE(f.sport, 0);
  l4.writeUInt16BE(f.dport, 2);
  if (f.proto === 'tcp') {
    l4.writeUInt32BE(1000, 4); // seq
    l4.writeUInt32BE((f.flags ?? TCP.SYN) & TCP.ACK ? 2000 : 0, 8);
    l4[12] = 5 << 4;
    l4[13] = f.flags ?? TCP.SYN;
    l4.writeUInt16BE(64240, 14);
    payload.copy(l4, 20);
  } else {
    l4.writeUInt16BE(l4len, 4);
    payload.copy(l4, 8);
  }
  const src = addrBytes(f.src);
  const dst = addrBytes(f.dst);
  const csumOff = f.proto === 'tcp' ? 16 : 6;
  if (!(f.proto === 'udp' && f.noUdpChecksum)) {
    let c = ~onesSum(pseudoHeader(v4 ? 4 : 6, src, dst, proto, l4len), l4) & 0xffff;
    if (f.proto === 'udp' && c === 0) c = 0xffff;
    l4.writeUInt16BE(c, csumOff);
  }
  const eth = Buffer.alloc(ETH_HLEN);
  DST_MAC.copy(eth, 0);
  SRC_MAC.copy(eth, 6);
  eth.writeUInt16BE(v4 ? 0x0800 : 0x86dd, 12);
  let ip: Buffer;
  if (v4) {
    ip = Buffer.alloc(20);
    ip[0] = 0x45;
    ip.writeUInt16BE(20 + l4len, 2);
    ip.writeUInt16BE(0x1234, 4);
    ip.writeUInt16BE(0x4000, 6); // DF
    ip[8] = f.ttl ?? 64;
    ip[9] = proto;
    src.copy(ip, 12);
    dst.copy(ip, 16);
    ip.writeUInt16BE(~onesSum(ip) & 0xffff, 10);
  } else {
    ip = Buffer.alloc(40);
    ip.writeUInt32BE(0x60000000, 0);
    ip.writeUInt16BE(l4len, 4);
    ip[6] = proto;
    ip[7] = f.ttl ?? 64;
    src.copy(ip, 8);
    dst.copy(ip, 24);
  }
  return Buffer.concat([eth, ip, l4]);
}

/** A frame as parsed back, with its checksums verified from scratch. */
export interface Parsed {
  family: 4 | 6;
  src: string;
  dst: string;
  proto: number;
  sport: number;
  dport: number;
  /** TCP flags (0 for UDP). */
  flags: number;
  ttl: number;
  payload: Buffer;
  srcMac: string;
  dstMac: string;
  /** IPv4 header sum folds to 0xffff (always true for IPv6, which has none). */
  ipChecksumOk: boolean;
  /** The pseudo-header plus the whole segment folds to 0xffff (IPv4 UDP without a checksum: true). */
  l4ChecksumOk: boolean;
  /** The L4 checksum field as found. */
  l4Checksum: number;
  /** The value the field should hold, recomputed over the packet as it is. */
  l4ChecksumWant: number;
}

/** A frame's IP layer: IPv4 without options or IPv6 without extension headers. Throws on anything else. */
function ipLayer(frame: Buffer): { family: 4 | 6; ip: Buffer; src: Buffer; dst: Buffer; proto: number; ttl: number; payload: Buffer; ipChecksumOk: boolean; srcMac: string; dstMac: string } {
  const type = frame.readUInt16BE(12);
  const macs = { srcMac: frame.subarray(6, 12).toString('hex'), dstMac: frame.subarray(0, 6).toString('hex') };
  if (type === 0x0800) {
    const ip = frame.subarray(ETH_HLEN, ETH_HLEN + 20);
    if (ip[0] !== 0x45) throw new Error(`not a plain IPv4 header: ${ip.toString('hex')}`);
    return {
      family: 4, ip, src: ip.subarray(12, 16), dst: ip.subarray(16, 20), proto: ip[9]!, ttl: ip[8]!,
      payload: frame.subarray(ETH_HLEN + 20, ETH_HLEN + ip.readUInt16BE(2)), ipChecksumOk: onesSum(ip) === 0xffff, ...macs,
    };
  }
  if (type === 0x86dd) {
    const ip = frame.subarray(ETH_HLEN, ETH_HLEN + 40);
    return {
      family: 6, ip, src: ip.subarray(8, 24), dst: ip.subarray(24, 40), proto: ip[6]!, ttl: ip[7]!,
      payload: frame.subarray(ETH_HLEN + 40, ETH_HLEN + 40 + ip.readUInt16BE(4)), ipChecksumOk: true, ...macs,
    };
  }
  throw new Error(`not IP: ethertype ${type.toString(16)}`);
}

/** Parses a frame `packet()` could have built (IPv4 without options, IPv6 without extension headers). Throws on anything else. */
export function parse(frame: Buffer): Parsed {
  const { family, src, dst, proto, ttl, payload: l4, ipChecksumOk, srcMac, dstMac } = ipLayer(frame);
  const tcp = proto === PROTO.TCP;
  const csumOff = tcp ? 16 : 6;
  const l4Checksum = l4.readUInt16BE(csumOff);
  const zeroed = Buffer.from(l4);
  zeroed.writeUInt16BE(0, csumOff);
  const ph = pseudoHeader(family, src, dst, proto, l4.length);
  let want = ~onesSum(ph, zeroed) & 0xffff;
  if (!tcp && want === 0) want = 0xffff;
  const noCsum = !tcp && family === 4 && l4Checksum === 0;
  return {
    family, src: addrText(src), dst: addrText(dst), proto,
    sport: l4.readUInt16BE(0), dport: l4.readUInt16BE(2), flags: tcp ? l4[13]! : 0, ttl,
    payload: Buffer.from(l4.subarray(tcp ? 20 : 8)), srcMac, dstMac,
    ipChecksumOk, l4ChecksumOk: noCsum || onesSum(ph, l4) === 0xffff, l4Checksum, l4ChecksumWant: want,
  };
}

/** An ICMP or ICMPv6 error as parsed back, checksums verified from scratch. */
export interface ParsedIcmp {
  family: 4 | 6;
  src: string;
  dst: string;
  ttl: number;
  type: number;
  code: number;
  /** The part of the offending packet the error quotes (from its IP header on). */
  quoted: Buffer;
  srcMac: string;
  dstMac: string;
  ipChecksumOk: boolean;
  /** ICMP: over the message; ICMPv6: over the IPv6 pseudo-header and the message. */
  icmpChecksumOk: boolean;
}

/** Parses an ICMP (IPv4, no options) or ICMPv6 (no extension headers) frame. Throws on anything else. */
export function parseIcmp(frame: Buffer): ParsedIcmp {
  const { family, ip, src, dst, proto, ttl, payload: msg, ipChecksumOk, srcMac, dstMac } = ipLayer(frame);
  const want = family === 4 ? PROTO.ICMP : 58;
  if (proto !== want) throw new Error(`not ICMP${family === 6 ? 'v6' : ''}: protocol ${proto} in ${ip.toString('hex')}`);
  const sum = family === 4 ? onesSum(msg) : onesSum(pseudoHeader(6, src, dst, 58, msg.length), msg);
  return {
    family, src: addrText(src), dst: addrText(dst), ttl, type: msg[0]!, code: msg[1]!,
    quoted: Buffer.from(msg.subarray(8)), srcMac, dstMac, ipChecksumOk, icmpChecksumOk: sum === 0xffff,
  };
}

/** The MAC addresses packet() puts on every frame (source, destination). */
export const MACS = { src: SRC_MAC.toString('hex'), dst: DST_MAC.toString('hex') } as const;

/** One rd_ct entry, decoded (struct rd_ct_key / rd_ct_val in bpf/lib/ct.h). */
export interface CtEntry {
  dir: 'fwd' | 'reply';
  src: string;
  sport: number;
  dst: string;
  dport: number;
  proto: number;
  natSrc: string;
  natSport: number;
  natDst: string;
  natDport: number;
  revNatId: number;
  lastSeenNs: bigint;
  backendId: number;
  /** RD_CTS_*: 0 SYN, 1 established, 2 closing. */
  state: number;
  /** RD_CT_F_*: 1 SNAT. */
  flags: number;
}

export const CT_STATE = { SYN: 0, EST: 1, CLOSING: 2 } as const;
export const CT_F_SNAT = 1;

/** Every entry of rd_ct. Throws DataPlaneError EREAD. */
export function dumpCt(fd: number): CtEntry[] {
  const K = CtKeyCodec.offsets;
  const V = CtValCodec.offsets;
  const keys = mapKeys(fd, CtKeyCodec.size, 'rd_ct');
  const out: CtEntry[] = [];
  const v = Buffer.alloc(CtValCodec.size);
  for (const k of keys) {
    if (!bpfMap.lookup(fd, k, v, 'rd_ct')) continue;
    out.push({
      dir: k[K.dir] === 0 ? 'fwd' : 'reply',
      src: readAddr(k, K.saddr), sport: k.readUInt16BE(K.sport), dst: readAddr(k, K.daddr), dport: k.readUInt16BE(K.dport), proto: k[K.proto]!,
      natSrc: readAddr(v, V.nat_saddr), natSport: v.readUInt16BE(V.nat_sport), natDst: readAddr(v, V.nat_daddr), natDport: v.readUInt16BE(V.nat_dport),
      revNatId: v.readUInt32LE(V.rev_nat_id), lastSeenNs: v.readBigUInt64LE(V.last_seen_ns), backendId: v.readUInt32LE(V.backend_id),
      state: v[V.state]!, flags: v[V.flags]!,
    });
  }
  return out;
}

/** The rd_ct key of an entry read with dumpCt. */
export function ctKey(e: CtEntry): Buffer {
  const K = CtKeyCodec.offsets;
  const k = Buffer.alloc(CtKeyCodec.size);
  writeAddr(k, K.saddr, e.src);
  writeAddr(k, K.daddr, e.dst);
  k.writeUInt16BE(e.sport, K.sport);
  k.writeUInt16BE(e.dport, K.dport);
  k[K.proto] = e.proto;
  k[K.dir] = e.dir === 'fwd' ? 0 : 1;
  return k;
}

/** Every key of a hash map of `keySize`-byte keys. Throws DataPlaneError EREAD. */
export function mapKeys(fd: number, keySize: number, what: string): Buffer[] {
  const keys: Buffer[] = [];
  let prev: Buffer | null = null;
  for (;;) {
    const next = Buffer.alloc(keySize);
    if (!bpfMap.nextKey(fd, prev, next, what)) break;
    keys.push(next);
    prev = next;
  }
  return keys;
}

/** Empties a hash map of `keySize`-byte keys (rd_ct, rd_aff_ext). Throws DataPlaneError EREAD / EAPPLY. */
export function clearMap(fd: number, keySize: number, what: string): void {
  for (const k of mapKeys(fd, keySize, what)) bpfMap.delete(fd, k, what);
}
