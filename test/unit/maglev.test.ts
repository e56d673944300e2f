import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULT_MAGLEV_TABLE_SIZE,
  MAGLEV_TABLE_SIZES,
  checkMaglevTableSize,
  isPrime,
  maglevTable,
  type MaglevBackend,
} from '../../src/dataplane/ebpf/maglev.js';

const M = DEFAULT_MAGLEV_TABLE_SIZE;

function backends(n: number, idBase = 1): MaglevBackend[] {
  return Array.from({ length: n }, (_, i) => ({ key: `10.244.${(i >> 8) & 255}.${i & 255}:8080`, id: idBase + i }));
}

function counts(table: Uint32Array): Map<number, number> {
  const c = new Map<number, number>();
  for (const id of table) c.set(id, (c.get(id) ?? 0) + 1);
  return c;
}

/** The table as backend keys, so tables built with different ids can be compared. */
function byKey(table: Uint32Array, bs: readonly MaglevBackend[]): string[] {
  const keyOf = new Map(bs.map((b) => [b.id, b.key]));
  return Array.from(table, (id) => keyOf.get(id) ?? `?${id}`);
}

/** Deterministic Fisher-Yates, so a failure reproduces. */
function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const out = [...xs];
  let s = seed >>> 0;
  for (let i = out.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

interface Disruption {
  /** Slots the removed backend held that now hold a survivor. */
  reassigned: number;
  removedSlots: number;
  /** Slots that went from one surviving backend to another: flows broken for no reason of their own. */
  survivorMoves: number;
}

function removeOne(all: readonly MaglevBackend[], index: number, m: number): Disruption {
  const before = maglevTable(all, m);
  const gone = all[index]!;
  const rest = all.filter((_, i) => i !== index);
  const after = maglevTable(rest, m);
  const survivors = new Set(rest.map((b) => b.id));
  let reassigned = 0;
  let removedSlots = 0;
  let survivorMoves = 0;
  for (let j = 0; j < m; j++) {
    if (before[j] === gone.id) {
      removedSlots++;
      if (survivors.has(after[j]!)) reassigned++;
    } else if (before[j] !== after[j]) {
      survivorMoves++;
    }
  }
  return { reassigned, removedSlots, survivorMoves };
}

test('the accepted table sizes are Cilium\'s primes, and anything else is a RangeError naming the value', () => {
  assert.deepEqual(MAGLEV_TABLE_SIZES, [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071]);
  assert.ok(MAGLEV_TABLE_SIZES.includes(DEFAULT_MAGLEV_TABLE_SIZE));
  for (const m of MAGLEV_TABLE_SIZES) {
    assert.ok(isPrime(m), `${m} is prime`);
    assert.doesNotThrow(() => checkMaglevTableSize(m));
  }
  assert.deepEqual([0, 1, 2, 3, 4, 9, 25, 97, 1000, 65537, 65535, -7, 2.5, Number.NaN].map(isPrime), [false, false, true, true, false, false, false, true, false, true, false, false, false, false]);
  for (const m of [1000, 0, 16383, 65537, -251, 251.5, Number.NaN]) {
    assert.throws(() => checkMaglevTableSize(m), (e: unknown) => e instanceof RangeError && e.message.includes(String(m)), `size ${m}`);
    assert.throws(() => maglevTable(backends(3), m), RangeError, `table of size ${m}`);
  }
});

test('every slot holds one of the given ids and each backend holds floor or ceil of m/n slots', () => {
  for (const [n, m] of [[100, M], [7, 251], [1000, 65521], [1, 509]] as const) {
    const bs = backends(n, 500);
    const table = maglevTable(bs, m);
    assert.equal(table.length, m);
    const c = counts(table);
    assert.deepEqual([...c.keys()].sort((a, b) => a - b), bs.map((b) => b.id), `n=${n} m=${m}: every backend, nothing else`);
    // Each turn claims exactly one slot and turns go round-robin, so when the table fills every
    // backend has had the same number of turns, give or take one.
    for (const [id, k] of c) {
      assert.ok(k === Math.floor(m / n) || k === Math.ceil(m / n), `n=${n} m=${m}: id ${id} holds ${k} slots, m/n = ${m / n}`);
    }
  }
});

test('more backends than slots still fills the table, one slot each at most', () => {
  const bs = backends(300);
  const c = counts(maglevTable(bs, 251));
  assert.equal(c.size, 251);
  for (const k of c.values()) assert.equal(k, 1);
});

test('the table depends on the keys, not on input order or on the ids', () => {
  const bs = backends(100);
  const ref = byKey(maglevTable(bs, M), bs);
  for (const seed of [1, 2, 3]) {
    assert.deepEqual(byKey(maglevTable(shuffled(bs, seed), M), bs), ref, `shuffle ${seed}`);
  }
  // Another node numbers the same backends differently (and in a different order).
  const renumbered = shuffled(bs, 9).map((b, i) => ({ key: b.key, id: 10_000 + 7 * i }));
  assert.deepEqual(byKey(maglevTable(renumbered, M), renumbered), ref);
});

test('the seed changes the table, and the same seed gives the same table', () => {
  const bs = backends(20);
  const a = maglevTable(bs, 1021, 42);
  assert.deepEqual(maglevTable(shuffled(bs, 5), 1021, 42), a);
  assert.deepEqual(maglevTable(bs, 1021), maglevTable(bs, 1021, 0));
  const b = maglevTable(bs, 1021, 43);
  let differ = 0;
  for (let j = 0; j < 1021; j++) if (a[j] !== b[j]) differ++;
  assert.ok(differ > 1021 * 0.8, `only ${differ} of 1021 slots differ between seeds 42 and 43`);
  for (const s of [-1, 1.5, 2 ** 32, Number.NaN]) assert.throws(() => maglevTable(bs, 251, s), RangeError, `seed ${s}`);
});

// A hash change would make nodes running two Rudder versions (a rolling upgrade) build different
// tables and send the same flow to different backends; change these strings only on purpose.
test('the table for a fixed input is pinned', () => {
  const bs = ['10.244.1.10:8080', '10.244.1.11:8080', '10.244.2.10:8080', '[fd00::1]:8080', 'ü-key'].map((key, i) => ({ key, id: i + 1 }));
  assert.equal(Array.from(maglevTable(bs, 251).subarray(0, 40)).join(''), '1343132235542414324135231153411344135421');
  assert.equal(Array.from(maglevTable(bs, 251, 7).subarray(0, 40)).join(''), '3453341342542445115443343353312545545145');
});

test('removing 1 of 100 backends moves all of its slots and about 1.5% of the others at most', () => {
  const all = backends(100);
  let worst = 0;
  for (const index of [0, 1, 37, 50, 98, 99]) {
    const d = removeOne(all, index, M);
    assert.equal(d.reassigned, d.removedSlots, `removed #${index}: all its slots go to survivors`);
    assert.ok(d.removedSlots >= Math.floor(M / 100));
    worst = Math.max(worst, d.survivorMoves);
  }
  // Measured: 184-240 survivor-to-survivor moves (1.1-1.5% of m, mean 1.3%) over all 100
  // choices of the removed backend. Hashing mod n would move ~99%; a broken permutation (a
  // constant skip, say) moves several times Maglev's figure.
  assert.ok(worst <= 0.02 * M, `${worst} slots (${((100 * worst) / M).toFixed(2)}% of m) moved between surviving backends`);
});

test('adding a backend to 99 takes about m/100 slots and disturbs the rest as little as a removal', () => {
  const all = backends(100);
  const before = maglevTable(all.slice(0, 99), M);
  const after = maglevTable(all, M);
  const added = all[99]!.id;
  let taken = 0;
  let survivorMoves = 0;
  for (let j = 0; j < M; j++) {
    if (after[j] === added) taken++;
    else if (before[j] !== after[j]) survivorMoves++;
  }
  assert.ok(taken === Math.floor(M / 100) || taken === Math.ceil(M / 100), `new backend holds ${taken}`);
  assert.ok(survivorMoves <= 0.02 * M, `${survivorMoves} slots moved between existing backends`);
});

test('a backend of weight 2 gets twice the slots, weight 3 three times', () => {
  const bs = backends(100);
  bs[5]!.weight = 2;
  bs[50]!.weight = 3;
  const c = counts(maglevTable(bs, M));
  const perWeight = M / 103;
  const one = c.get(bs[0]!.id)!;
  assert.ok(Math.abs(one - perWeight) <= 1, `weight 1: ${one}, expected ${perWeight}`);
  assert.ok(Math.abs(c.get(bs[5]!.id)! - 2 * perWeight) <= 2, `weight 2: ${c.get(bs[5]!.id)}, expected ${2 * perWeight}`);
  assert.ok(Math.abs(c.get(bs[50]!.id)! - 3 * perWeight) <= 3, `weight 3: ${c.get(bs[50]!.id)}, expected ${3 * perWeight}`);
  // weight 1 written out is the default.
  const explicit = backends(100).map((b) => ({ ...b, weight: 1 }));
  assert.deepEqual(maglevTable(explicit, M), maglevTable(backends(100), M));
  // The weight is part of the input every node must agree on: it changes the table.
  assert.notDeepEqual(maglevTable(bs, M), maglevTable(backends(100), M));
});

test('duplicate keys, bad weights and ids that do not fit 32 bits are RangeErrors; no backends give zeros', () => {
  const dup = [...backends(3), { key: '10.244.0.1:8080', id: 99 }];
  assert.throws(() => maglevTable(dup, 251), (e: unknown) => e instanceof RangeError && e.message.includes('"10.244.0.1:8080"'));
  for (const weight of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => maglevTable([{ key: 'a', id: 1, weight }], 251), (e: unknown) => e instanceof RangeError && e.message.includes(String(weight)), `weight ${weight}`);
  }
  for (const id of [-1, 2 ** 32, 0.5]) {
    assert.throws(() => maglevTable([{ key: 'a', id }], 251), RangeError, `id ${id}`);
  }
  assert.deepEqual(maglevTable([{ key: 'a', id: 0xffffffff }], 251), new Uint32Array(251).fill(0xffffffff));
  const empty = maglevTable([], M);
  assert.equal(empty.length, M);
  assert.ok(empty.every((x) => x === 0));
  assert.throws(() => maglevTable([], 1000), RangeError);
});
