// IPv4 text <-> number helpers for the lab's own address plan. The lab only speaks IPv4, and keeps
// this tiny copy so it depends on nothing outside lab/ (model/ip.ts serves the proxy itself).

export interface Cidr4 {
  /** Network address, host bits cleared, as an unsigned 32-bit number. */
  network: number;
  prefix: number;
}

const PART = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** Parses dotted-quad text; null if it is not exactly one. */
export function parseIPv4(s: string): number | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let v = 0;
  for (const p of parts) {
    if (!PART.test(p)) return null;
    v = v * 256 + Number(p);
  }
  return v;
}

export function formatIPv4(v: number): string {
  return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
}

function mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Parses "a.b.c.d/n"; null if malformed or if host bits are set. */
export function parseCidr4(s: string): Cidr4 | null {
  const slash = s.indexOf('/');
  if (slash < 0) return null;
  const ip = parseIPv4(s.slice(0, slash));
  const p = s.slice(slash + 1);
  if (ip === null || !/^(3[0-2]|[12]?\d)$/.test(p)) return null;
  const prefix = Number(p);
  if (((ip & mask(prefix)) >>> 0) !== ip) return null;
  return { network: ip, prefix };
}

export function cidrContains(c: Cidr4, ip: number): boolean {
  return ((ip & mask(c.prefix)) >>> 0) === c.network;
}

/** True if inner lies entirely inside outer. */
export function cidrWithin(inner: Cidr4, outer: Cidr4): boolean {
  return inner.prefix >= outer.prefix && cidrContains(outer, inner.network);
}

export function cidrOverlaps(a: Cidr4, b: Cidr4): boolean {
  return cidrWithin(a, b) || cidrWithin(b, a);
}

/** The n-th address of a CIDR (0 = network address). */
export function nthAddress(c: Cidr4, n: number): string {
  return formatIPv4((c.network + n) >>> 0);
}

/** Last address of a CIDR (the broadcast address for prefixes below 31). */
export function lastAddress(c: Cidr4): number {
  return (c.network | (~mask(c.prefix) >>> 0)) >>> 0;
}
