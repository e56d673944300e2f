// Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
// Balancer", NSDI 2016): the eBPF data plane looks a flow's hash up in a table of m slots, each
// naming a backend. It follows Cilium's pkg/maglev (the same prime table sizes, offset and skip
// per backend, weights as extra turns), but the key hash is MurmurHash3 x86_32 rather than
// Cilium's, so the tables are not interchangeable with a Cilium node's.
//
// Why a table rather than "hash mod n" or per-node random choice:
//   - The same service can be reached through any node (ECMP from a router, a client that moves,
//     a node that restarts and loses its conntrack entries). The table depends only on the
//     backends' keys and weights, the table size and the seed, so every node builds the same one
//     and a flow lands on the same backend whichever node it enters, with no state shared between
//     nodes.
//   - When a backend leaves, its slots are handed to the others and only a small number of other
//     slots change hands, so established flows of the surviving backends mostly keep their backend
//     even on a node that has no conntrack entry for them. "hash mod n" would move nearly all.
//   - Each backend gets very nearly m/n slots (times its weight share), so load is even.
//
// How it fails, and what it does not promise:
//   - Disruption is small, not zero: removing one of n backends moves all of its slots and, in
//     addition, some slots from one survivor to another (about 1.3% of the table for 1 of 100
//     backends at m = 16381). Flows on those slots break on nodes without a conntrack entry.
//   - Nodes agree only if their inputs agree. While an endpoint change is still propagating, two
//     nodes can hold different backend sets and so different tables; nodes with a different seed or
//     table size disagree everywhere. So does a Rudder version whose hash differs: the hash below
//     is pinned by a test for that reason, because a rolling upgrade runs both versions at once.
//   - Every backend holds floor(m/n) or ceil(m/n) slots, so an even load and a small disruption
//     need m much larger than n (the paper uses m > 100 n); with m close to n one backend can get
//     twice another's share, and with n > m some get none.
//   - A backend of weight w holds w times a weight-1 backend's share give or take w slots: the
//     last round stops wherever the table fills.
//   - Bad input (a table size that is not one of the accepted primes, a key given twice, a weight
//     that is not a positive integer, an id or seed that does not fit 32 bits) throws RangeError
//     instead of producing a skewed or node-dependent table.

import { fmix } from './digest.js';

/** One backend as Maglev sees it: `key` (e.g. "10.244.1.10:8080") decides its permutation, so tables are identical on every node; `id` is what the table holds (node-local backend id). `weight` optional, default 1 (integer >= 1). */
export interface MaglevBackend {
  key: string;
  id: number;
  weight?: number;
}

export const DEFAULT_MAGLEV_TABLE_SIZE = 16381;

/** Prime sizes accepted (Cilium's list: 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071). */
export const MAGLEV_TABLE_SIZES: readonly number[] = Object.freeze([251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071]);

export function isPrime(n: number): boolean {
  if (!Number.isSafeInteger(n) || n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) {
    if (n % d === 0) return false;
  }
  return true;
}

/** Throws RangeError naming the value when m is not one of MAGLEV_TABLE_SIZES. */
export function checkMaglevTableSize(m: number): void {
  // Only primes guarantee that every skip in 1..m-1 walks all m slots; the fixed list also keeps
  // nodes from drifting apart through a locally chosen size.
  if (!MAGLEV_TABLE_SIZES.includes(m)) {
    throw new RangeError(`Maglev table size ${String(m)} is not one of ${MAGLEV_TABLE_SIZES.join(', ')}`);
  }
}

const UINT32_MAX = 0xffffffff;
// The second hash must not be a function of the first, or offset and skip would be correlated and
// backends would walk the table in step; a different seed gives murmur3 an unrelated output.
const SKIP_SEED_XOR = 0x9e3779b9;

function rotl32(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

/** MurmurHash3 x86_32: fixed, well-mixed and cheap, and identical in every JavaScript engine. */
function murmur3(bytes: Uint8Array, seed: number): number {
  const c1 = 0xcc9e2d51;
  const c2 = 0x1b873593;
  const len = bytes.length;
  const tail = len & ~3;
  let h = seed | 0;
  let k: number;
  for (let i = 0; i < tail; i += 4) {
    k = bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24);
    k = Math.imul(rotl32(Math.imul(k, c1), 15), c2);
    h ^= k;
    h = (Math.imul(rotl32(h, 13), 5) + 0xe6546b64) | 0;
  }
  const rest = len & 3;
  if (rest > 0) {
    k = bytes[tail]!;
    if (rest > 1) k |= bytes[tail + 1]! << 8;
    if (rest > 2) k |= bytes[tail + 2]! << 16;
    h ^= Math.imul(rotl32(Math.imul(k, c1), 15), c2);
  }
  return fmix(h, len);
}

function byKey(a: MaglevBackend, b: MaglevBackend): number {
  // Code-unit order, not localeCompare: the order must not depend on a node's locale or ICU data.
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

/** The lookup table: m slots, each a backend id. Empty backends -> Uint32Array of m zeros. Throws RangeError for a bad m, a duplicate key, or a bad weight (and for an id or seed outside 0..2^32-1). Deterministic: depends only on the set of (key, weight) pairs, m and the seed, not on input order or on ids. */
export function maglevTable(backends: readonly MaglevBackend[], m: number, seed = 0): Uint32Array {
  checkMaglevTableSize(m);
  if (!Number.isInteger(seed) || seed < 0 || seed > UINT32_MAX) {
    throw new RangeError(`Maglev seed ${String(seed)} is not an integer in 0-${UINT32_MAX}`);
  }
  const table = new Uint32Array(m);
  const n = backends.length;
  if (n === 0) return table;

  // Ties in the round-robin below are broken by position, so position must come from the keys
  // alone for every node to fill the table identically.
  const sorted = [...backends].sort(byKey);
  const ids = new Uint32Array(n);
  const weights = new Float64Array(n);
  const skips = new Uint32Array(n);
  // Each backend's next candidate slot: offset + next[i] * skip (mod m), kept as a running sum so
  // the walk costs one addition per step instead of a multiplication that overflows 32 bits.
  const cursor = new Uint32Array(n);
  const encoder = new TextEncoder();
  for (let i = 0; i < n; i++) {
    const b = sorted[i]!;
    if (i > 0 && sorted[i - 1]!.key === b.key) {
      throw new RangeError(`Maglev backend key ${JSON.stringify(b.key)} is given more than once`);
    }
    const w = b.weight ?? 1;
    if (!Number.isSafeInteger(w) || w < 1) {
      throw new RangeError(`Maglev backend ${JSON.stringify(b.key)}: weight ${String(w)} is not an integer >= 1`);
    }
    if (!Number.isInteger(b.id) || b.id < 0 || b.id > UINT32_MAX) {
      throw new RangeError(`Maglev backend ${JSON.stringify(b.key)}: id ${String(b.id)} does not fit in 32 bits`);
    }
    const bytes = encoder.encode(b.key);
    ids[i] = b.id;
    weights[i] = w;
    cursor[i] = murmur3(bytes, seed) % m;
    skips[i] = (murmur3(bytes, (seed ^ SKIP_SEED_XOR) >>> 0) % (m - 1)) + 1;
  }

  // The paper's population: backends take turns claiming the next free slot of their own
  // permutation until the table is full. A backend of weight w takes w turns per round, so its
  // share grows with w while the order of claims, and so the disruption bound, stays Maglev's.
  const taken = new Uint8Array(m);
  let filled = 0;
  for (;;) {
    for (let i = 0; i < n; i++) {
      const skip = skips[i]!;
      let c = cursor[i]!;
      for (let turn = weights[i]!; turn > 0; turn--) {
        // m is prime and 1 <= skip < m, so this walk visits every slot before repeating and finds
        // a free one while the table is not full.
        while (taken[c] === 1) {
          c += skip;
          if (c >= m) c -= m;
        }
        taken[c] = 1;
        table[c] = ids[i]!;
        c += skip;
        if (c >= m) c -= m;
        if (++filled === m) return table;
      }
      cursor[i] = c;
    }
  }
}
