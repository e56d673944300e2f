import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IdAllocator } from '../../src/dataplane/ebpf/ids.js';
import { DataPlaneError } from '../../src/dataplane/dataplane.js';

test('adopted ids are kept; new keys fill the lowest gaps, then grow', () => {
  const ids = new IdAllocator('backend', 100);
  // In hash order, as a map dump returns them.
  for (const [k, id] of [['c', 7], ['a', 2], ['b', 5]] as const) assert.ok(ids.adopt(k, id));
  assert.equal(ids.adopt('d', 5), false, 'an id held twice is refused');
  assert.deepEqual(['x', 'y', 'z', 'w', 'v', 'u'].map((k) => ids.acquire(k)), [1, 3, 4, 6, 8, 9]);
  assert.equal(ids.get('c'), 7);
});

test('a released id comes back only after settle()', () => {
  const ids = new IdAllocator('frontend', 100);
  ids.acquire('a');
  ids.acquire('b');
  ids.release('a');
  assert.equal(ids.acquire('c'), 3, 'not 1: its deletion is still queued');
  ids.settle();
  assert.equal(ids.acquire('d'), 1);
  // After an adoption too.
  ids.release('b');
  ids.adopt('e', 10);
  assert.equal(ids.acquire('f'), 4);
  ids.settle();
  assert.equal(ids.acquire('g'), 2);
});

test('running out of ids is a DataPlaneError naming the map to grow', () => {
  const ids = new IdAllocator('backend', 2);
  ids.acquire('a');
  ids.acquire('b');
  assert.throws(() => ids.acquire('c'), (e: unknown) => e instanceof DataPlaneError && /no free backend id: all 2/.test(e.message));
});
