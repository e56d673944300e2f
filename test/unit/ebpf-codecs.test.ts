// Every map codec against the compiled objects' BTF: the struct it names has the codec's size and
// each field sits at the codec's offset. A C struct changed without its codec (or the reverse)
// fails here, not as garbage in a map. Also round trips of the encoders.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { ALL_CODECS, BackendCodec, readAddr, RevNatCodec, SrcRangeKeyCodec, SvcKeyCodec, SvcValCodec, writeAddr } from '../../src/dataplane/ebpf/codecs.js';
import { SOCK_LB_OBJECT, SOCK_TERM_OBJECT, TC_OBJECT } from '../../src/dataplane/ebpf/programs.js';

interface BtfStruct { kind: string; name?: string; size?: number; members?: Array<{ name: string; bits_offset: number }> }

function structs(path: string): Map<string, BtfStruct> {
  const out = JSON.parse(execFileSync('bpftool', ['btf', 'dump', 'file', path, '-j'], { encoding: 'utf8', maxBuffer: 64 << 20 })) as { types: BtfStruct[] };
  return new Map(out.types.filter((t) => t.kind === 'STRUCT' && t.name !== undefined).map((t) => [t.name!, t]));
}

const built = existsSync(SOCK_LB_OBJECT) && existsSync(SOCK_TERM_OBJECT) && existsSync(TC_OBJECT);

test('every codec matches its C struct in the compiled objects\' BTF', { skip: !built && 'bpf/build is not compiled (scripts/setup.sh)' }, () => {
  const btf = new Map([...structs(SOCK_LB_OBJECT), ...structs(SOCK_TERM_OBJECT), ...structs(TC_OBJECT)]);
  for (const c of ALL_CODECS) {
    const s = btf.get(c.struct);
    assert.ok(s !== undefined, `struct ${c.struct} is not in the objects`);
    assert.equal(s.size, c.size, `sizeof(struct ${c.struct})`);
    for (const [field, off] of Object.entries(c.offsets)) {
      const m: { name: string; bits_offset: number } | undefined = s.members?.find((x) => x.name === field);
      assert.ok(m !== undefined, `struct ${c.struct} has no member ${field}`);
      assert.equal(m.bits_offset / 8, off, `offsetof(struct ${c.struct}, ${field})`);
    }
  }
});

test('addresses are 16 bytes, IPv4 as ::ffff:a.b.c.d, in network order', () => {
  const b = Buffer.alloc(16);
  writeAddr(b, 0, '10.96.0.1');
  assert.equal(b.toString('hex'), '00000000000000000000ffff0a600001');
  assert.equal(readAddr(b, 0), '10.96.0.1');
  writeAddr(b, 0, 'fd00::1');
  assert.equal(b.toString('hex'), 'fd000000000000000000000000000001');
  assert.equal(readAddr(b, 0), 'fd00::1');
  assert.throws(() => writeAddr(b, 0, '10.96.0.300'), /not an IP address/);
});

test('keys and values round-trip through their codecs with ports in network order', () => {
  const k = Buffer.alloc(SvcKeyCodec.size);
  SvcKeyCodec.encode({ addr: '10.96.0.10', port: 80, slot: 3, proto: 6, scope: 1 }, k);
  assert.equal(k.readUInt16BE(16), 80);
  assert.deepEqual(SvcKeyCodec.decode(k), { addr: '10.96.0.10', port: 80, slot: 3, proto: 6, scope: 1 });
  const v = Buffer.alloc(SvcValCodec.size);
  SvcValCodec.encode({ backendId: 7, count: 2, flags: 5, revNatId: 9, affinityTimeout: 10800 }, v);
  assert.deepEqual(SvcValCodec.decode(v), { backendId: 7, count: 2, flags: 5, revNatId: 9, affinityTimeout: 10800 });
  const b = Buffer.alloc(BackendCodec.size);
  BackendCodec.encode({ addr: 'fd00::5', port: 8443, proto: 17, flags: 0 }, b);
  assert.deepEqual(BackendCodec.decode(b), { addr: 'fd00::5', port: 8443, proto: 17, flags: 0 });
  const r = Buffer.alloc(RevNatCodec.size);
  RevNatCodec.encode({ addr: '198.18.1.10', port: 443 }, r);
  assert.deepEqual(RevNatCodec.decode(r), { addr: '198.18.1.10', port: 443 });
});

test('source-range keys count the id and the mapped IPv4 prefix in their prefix length', () => {
  const k = Buffer.alloc(SrcRangeKeyCodec.size);
  SrcRangeKeyCodec.encode(4, '198.18.0.0/24', k);
  assert.equal(k.readUInt32LE(0), 32 + 96 + 24);
  assert.deepEqual(SrcRangeKeyCodec.decode(k), { revNatId: 4, cidr: '198.18.0.0/24' });
  SrcRangeKeyCodec.encode(4, 'fd00:1::/64', k);
  assert.equal(k.readUInt32LE(0), 32 + 64);
  assert.deepEqual(SrcRangeKeyCodec.decode(k), { revNatId: 4, cidr: 'fd00:1::/64' });
});
