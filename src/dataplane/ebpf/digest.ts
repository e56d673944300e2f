// Order-independent digests of map contents: the cheap way to ask "do the maps still hold exactly
// what this agent wrote?" without decoding them. Each element (key bytes, then value bytes) hashes
// to 53 bits (two murmur3 lanes with different seeds, 32 + 21 bits); a map's digest is the element
// count and the lane-wise sums of its elements' hashes, so it does not depend on the order a dump
// returns them in, and the expected digest is a sum over per-entry hashes cached by the writer.
// A difference proves drift; equality means none with overwhelming probability (the detailed,
// decoding comparison in state.ts runs whenever a digest differs, to say what changed).

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;
const TWO32 = 0x1_0000_0000;
const HI_MOD = 0x20_0000; // 2^21: the high lane keeps 21 bits, so a digest fits a double exactly

function mix(h: number, k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, C2);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** murmur3's 32-bit finalizer (with the length mixed in); maglev.ts hashes with it too. */
export function fmix(h: number, len: number): number {
  h ^= len;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

// The two lanes of the element being hashed (module state: no allocation per element).
let laneA = 0;
let laneB = 0;

function feed(b: Buffer, o: number, n: number): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const k = b[o + i]! | (b[o + i + 1]! << 8) | (b[o + i + 2]! << 16) | (b[o + i + 3]! << 24);
    laneA = mix(laneA, k);
    laneB = mix(laneB, k);
  }
  // A tail (the 1-byte values) as one zero-extended word: every map's sizes are fixed, so this is unambiguous.
  if (i < n) {
    let k = 0;
    for (let j = 0; i + j < n; j++) k |= b[o + i + j]! << (8 * j);
    laneA = mix(laneA, k);
    laneB = mix(laneB, k);
  }
}

/** One element's hash: key bytes then value bytes, as a 53-bit integer. */
export function elementHash(key: Buffer, koff: number, klen: number, val: Buffer, voff: number, vlen: number): number {
  laneA = 0x9747b28c;
  laneB = 0x5bd1e995;
  feed(key, koff, klen);
  feed(val, voff, vlen);
  return (fmix(laneB, klen + vlen) % HI_MOD) * TWO32 + fmix(laneA, klen + vlen);
}

/** Two hashes' (or sums') lane-wise sum, in the same 53-bit form: a group of elements as one number. */
export function sumHashes(a: number, b: number): number {
  const alo = a >>> 0;
  const blo = b >>> 0;
  return ((((a - alo) / TWO32 + (b - blo) / TWO32) % HI_MOD) * TWO32) + ((alo + blo) >>> 0);
}

/** A multiset of element hashes: count and lane-wise sums. */
export class Digest {
  count = 0;
  private lo = 0;
  private hi = 0;

  /** Adds one element's hash, or (with `count`) the sum of `count` elements' hashes from sumHashes(). */
  add(h: number, count = 1): void {
    const lo = h >>> 0;
    this.count += count;
    this.lo = (this.lo + lo) >>> 0;
    this.hi = (this.hi + (h - lo) / TWO32) % HI_MOD;
  }

  equals(o: Digest): boolean {
    return this.count === o.count && this.lo === o.lo && this.hi === o.hi;
  }

  toString(): string {
    return `${this.count} elements, ${this.hi.toString(16)}:${this.lo.toString(16).padStart(8, '0')}`;
  }
}

/**
 * The digest of a raw dump (keys and values back to back), leaving out the elements whose key
 * byte `skipAt` holds `skipValue` (e.g. entries another path owns).
 */
export function dumpDigest(d: { keys: Buffer; values: Buffer; count: number }, keySize: number, valueSize: number, skipAt = -1, skipValue = 0): Digest {
  const out = new Digest();
  for (let i = 0; i < d.count; i++) {
    const ko = i * keySize;
    if (skipAt >= 0 && d.keys[ko + skipAt] === skipValue) continue;
    out.add(elementHash(d.keys, ko, keySize, d.values, i * valueSize, valueSize));
  }
  return out;
}
