// Address arithmetic on validated text. Pure, allocation-light; no dependency on node:net so the
// model stays free of I/O modules.

import type { IPFamily } from '../source/objects.js';

/** A parsed address: family and value (IPv4 as 32-bit, IPv6 as 128-bit bigint). */
export interface ParsedIP {
  family: IPFamily;
  value: bigint;
}

export interface ParsedCIDR {
  family: IPFamily;
  /** Network address with host bits cleared. */
  network: bigint;
  prefix: number;
}

const V4_PART = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

function parseV4(s: string): bigint | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let v = 0n;
  for (const p of parts) {
    if (!V4_PART.test(p)) return null;
    v = (v << 8n) | BigInt(Number(p));
  }
  return v;
}

function parseV6(s: string): bigint | null {
  if (s.length < 2 || s.length > 45 || s.includes('%')) return null;
  let tail4: bigint | null = null;
  let str = s;
  const lastColon = s.lastIndexOf(':');
  if (s.indexOf('.', lastColon) !== -1) {
    tail4 = parseV4(s.slice(lastColon + 1));
    if (tail4 === null) return null;
    str = s.slice(0, lastColon + 1) + '0:0';
  }
  const halves = str.split('::');
  if (halves.length > 2) return null;
  const parseGroups = (h: string): number[] | null => {
    if (h === '') return [];
    const out: number[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = parseGroups(halves[0]!);
  const tail = halves.length === 2 ? parseGroups(halves[1]!) : [];
  if (head === null || tail === null) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const groups = [...head, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  if (tail4 !== null) v = (v & ~0xffffffffn) | tail4;
  return v;
}

/** Parses an IPv4 or IPv6 address; null when the text is not one. IPv4 leading zeros are refused. */
export function parseIP(s: string): ParsedIP | null {
  if (s.includes(':')) {
    const v = parseV6(s);
    return v === null ? null : { family: 6, value: v };
  }
  const v = parseV4(s);
  return v === null ? null : { family: 4, value: v };
}

export function formatIP(ip: ParsedIP): string {
  if (ip.family === 4) {
    const v = Number(ip.value);
    return `${(v >>> 24) & 255}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip.value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (length >= 2) of zero groups, the first one on ties.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** The canonical text of an address, or null when it is not one. */
export function normalizeIP(s: string): string | null {
  const p = parseIP(s.trim());
  return p === null ? null : formatIP(p);
}

export function ipFamily(s: string): IPFamily | null {
  return parseIP(s)?.family ?? null;
}

/** Parses "a.b.c.d/n" (host bits are cleared, as Go's ParseCIDR does); a bare address is a /32 or /128. */
export function parseCIDR(s: string): ParsedCIDR | null {
  const slash = s.indexOf('/');
  const ip = parseIP(slash === -1 ? s : s.slice(0, slash));
  if (ip === null) return null;
  const bits = ip.family === 4 ? 32 : 128;
  let prefix = bits;
  if (slash !== -1) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return null;
    prefix = Number(p);
    if (prefix > bits) return null;
  }
  return { family: ip.family, network: ip.value & maskOf(bits, prefix), prefix };
}

function maskOf(bits: number, prefix: number): bigint {
  const all = (1n << BigInt(bits)) - 1n;
  return prefix === 0 ? 0n : (all >> BigInt(bits - prefix)) << BigInt(bits - prefix);
}

export function formatCIDR(c: ParsedCIDR): string {
  return `${formatIP({ family: c.family, value: c.network })}/${c.prefix}`;
}

export function normalizeCIDR(s: string): string | null {
  const c = parseCIDR(s.trim());
  return c === null ? null : formatCIDR(c);
}

export function cidrContains(c: ParsedCIDR, ip: ParsedIP): boolean {
  if (c.family !== ip.family) return false;
  const bits = c.family === 4 ? 32 : 128;
  return (ip.value & maskOf(bits, c.prefix)) === c.network;
}

/** True when `ip` (text) lies in any of the CIDRs (text). Unparseable input never matches. */
export function inAnyCIDR(ip: string, cidrs: readonly string[]): boolean {
  const p = parseIP(ip);
  if (p === null) return false;
  for (const c of cidrs) {
    const pc = parseCIDR(c);
    if (pc !== null && cidrContains(pc, p)) return true;
  }
  return false;
}

const SPECIAL: ReadonlyArray<[string, string]> = [
  ['0.0.0.0/8', 'an unspecified address'], ['::/128', 'an unspecified address'],
  ['127.0.0.0/8', 'a loopback address'], ['::1/128', 'a loopback address'],
  ['169.254.0.0/16', 'a link-local address'], ['fe80::/10', 'a link-local address'],
  ['224.0.0.0/4', 'a multicast address'], ['ff00::/8', 'a multicast address'],
  ['255.255.255.255/32', 'the broadcast address'],
];
const SPECIAL_CIDRS = SPECIAL.map(([c, what]) => [parseCIDR(c)!, what] as const);

/**
 * What makes an address unusable as a service address (a ClusterIP or an external IP), as the
 * API server's validation says: unspecified, loopback, link-local, multicast, broadcast; null for
 * any other valid address (and for a string that is not an address).
 */
export function specialAddress(s: string): string | null {
  const ip = parseIP(s);
  if (ip === null) return null;
  for (const [c, what] of SPECIAL_CIDRS) if (cidrContains(c, ip)) return what;
  return null;
}
