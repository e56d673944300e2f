// Digests of map contents (src/dataplane/ebpf/digest.ts): what the periodic verification of the
// eBPF maps rests on.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Digest, dumpDigest, elementHash, sumHashes } from '../../src/dataplane/ebpf/digest.js';

function dumpOf(elements: Array<[string, string]>): { keys: Buffer; values: Buffer; count: number } {
  return { keys: Buffer.from(elements.map(([k]) => k).join(''), 'hex'), values: Buffer.from(elements.map(([, v]) => v).join(''), 'hex'), count: elements.length };
}

const A: Array<[string, string]> = [['00000001', 'aa000000'], ['00000002', 'bb000000'], ['00000003', 'cc000000']];

test('a dump\'s digest does not depend on the order of its elements, and equals the sum of its elements\' hashes', () => {
  const fwd = dumpDigest(dumpOf(A), 4, 4);
  const rev = dumpDigest(dumpOf([...A].reverse()), 4, 4);
  assert.ok(fwd.equals(rev));
  const byHand = new Digest();
  let group = 0;
  for (const [k, v] of A) group = sumHashes(group, elementHash(Buffer.from(k, 'hex'), 0, 4, Buffer.from(v, 'hex'), 0, 4));
  byHand.add(group, A.length);
  assert.ok(byHand.equals(fwd), `${byHand} vs ${fwd}`);
});

test('one changed bit, a swapped key and value, a missing or an extra element all change the digest', () => {
  const base = dumpDigest(dumpOf(A), 4, 4);
  const variants: Array<Array<[string, string]>> = [
    [['00000001', 'aa000001'], A[1]!, A[2]!],
    [['00000001', 'bb000000'], ['00000002', 'aa000000'], A[2]!],
    [A[0]!, A[1]!],
    [...A, ['00000004', '00000000']],
    // The same multiset of bytes, split between key and value differently.
    [['aa000000', '00000001'], A[1]!, A[2]!],
  ];
  for (const v of variants) assert.ok(!dumpDigest(dumpOf(v), 4, 4).equals(base), JSON.stringify(v));
});

test('elements whose key byte names another owner are left out; 1-byte values count', () => {
  const mine = dumpDigest(dumpOf(A), 4, 4);
  const withOther = dumpDigest(dumpOf([...A, ['000000ff', 'dd000000']]), 4, 4, 3, 0xff);
  assert.ok(withOther.equals(mine));
  const one = (v: string) => dumpDigest({ keys: Buffer.from('00000001', 'hex'), values: Buffer.from(v, 'hex'), count: 1 }, 4, 1);
  assert.ok(!one('01').equals(one('02')));
});
