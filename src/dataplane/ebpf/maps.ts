// The socket load balancer's maps as typed operations. Writes are collected per map into
// preallocated key/value buffers and written with one batch syscall per map (one syscall per
// element where the kernel has no batch update for the map type); reads dump a map into typed
// entries. Map writes are not one transaction, so callers order them: backends, then slots, then
// masters; the reverse on delete (see the EbpfDataPlane header).

import { elementHash } from './digest.js';
import { bpfMap } from './libbpf.js';
import {
  AffMatchCodec, BackendCodec, ConfigCodec, RevNatCodec, SrcRangeKeyCodec, SvcKeyCodec, SvcValCodec,
  type Backend, type RevNat, type SvcKey, type SvcVal,
} from './codecs.js';

/** The map names as the object defines them (bpf/lib/maps.h). */
export const MAP_NAMES = ['rd_services', 'rd_backends', 'rd_rev_nat', 'rd_rev_sk', 'rd_affinity', 'rd_aff_match', 'rd_src_ranges', 'rd_maglev', 'rd_config_map', 'rd_svc_stats', 'rd_be_stats'] as const;
export type MapName = (typeof MAP_NAMES)[number];

/**
 * The map operations this module needs: libbpf's in the agent, a fake in unit tests
 * (test/support/bpf-maps.ts), so the state logic is tested without a kernel beside the real thing.
 */
export type MapIO = Pick<typeof bpfMap, 'update' | 'lookup' | 'delete' | 'nextKey' | 'updateBatch' | 'deleteBatch' | 'lookupBatch'>;

/** Pending element writes of one map: keys and values packed back to back. */
export class Batch {
  private keys: Buffer;
  private values: Buffer;
  count = 0;

  constructor(readonly map: string, private readonly fd: number, readonly keySize: number, readonly valueSize: number, initial = 64, private readonly io: MapIO = bpfMap) {
    this.keys = Buffer.alloc(keySize * initial);
    this.values = Buffer.alloc(valueSize * initial);
  }

  /** Reserves one element: encode its key into `keys` at the index times keySize, its value likewise. */
  reserve(): number {
    if ((this.count + 1) * this.keySize > this.keys.length) {
      this.keys = grow(this.keys);
      this.values = grow(this.values);
    }
    return this.count++;
  }

  get keyBuf(): Buffer {
    return this.keys;
  }

  get valueBuf(): Buffer {
    return this.values;
  }

  /** Adds one element through encoder callbacks (for the rare writes; hot paths use reserve()). */
  add(encodeKey: (buf: Buffer, off: number) => void, encodeValue: (buf: Buffer, off: number) => void): void {
    const i = this.reserve();
    encodeKey(this.keys, i * this.keySize);
    encodeValue(this.values, i * this.valueSize);
  }

  /** Writes everything added. Throws DataPlaneError EAPPLY (elements before the failing one may be written). */
  flush(): number {
    const n = this.count;
    if (n === 0) return 0;
    this.count = 0;
    if (this.io.updateBatch(this.fd, this.keys, this.values, n, this.map)) return n;
    for (let i = 0; i < n; i++) {
      this.io.update(this.fd, this.keys.subarray(i * this.keySize, (i + 1) * this.keySize), this.values.subarray(i * this.valueSize, (i + 1) * this.valueSize), this.map);
    }
    return n;
  }
}

function grow(b: Buffer): Buffer {
  const n = Buffer.alloc(b.length * 2);
  b.copy(n);
  return n;
}

/** Pending deletions of one map, batched (absent keys are fine). */
export class Deletions {
  private keys: Buffer;
  count = 0;

  constructor(readonly map: string, private readonly fd: number, readonly keySize: number, private readonly io: MapIO = bpfMap) {
    this.keys = Buffer.alloc(keySize * 16);
  }

  add(encodeKey: (buf: Buffer, off: number) => void): void {
    encodeKey(this.keyBuf, this.reserve() * this.keySize);
  }

  /** Reserves one key: encode it into `keyBuf` at the index times keySize. */
  reserve(): number {
    if ((this.count + 1) * this.keySize > this.keys.length) this.keys = grow(this.keys);
    return this.count++;
  }

  get keyBuf(): Buffer {
    return this.keys;
  }

  flush(): number {
    const n = this.count;
    this.count = 0;
    if (n > 0) this.io.deleteBatch(this.fd, this.keys, this.keySize, n, this.map);
    return n;
  }
}

const DUMP_CHUNK = 4096;

/**
 * Every element of a map as raw bytes: keys and values packed back to back, `count` elements.
 * For maps read often and decoded selectively (rd_services). Throws DataPlaneError EREAD.
 */
export function dumpRaw(fd: number, map: string, keySize: number, valueSize: number, io: MapIO = bpfMap): { keys: Buffer; values: Buffer; count: number } {
  let keys: Buffer = Buffer.alloc(keySize * DUMP_CHUNK);
  let values: Buffer = Buffer.alloc(valueSize * DUMP_CHUNK);
  let count = 0;
  const append = (k: Buffer, v: Buffer, n: number): void => {
    while ((count + n) * keySize > keys.length) {
      keys = grow(keys);
      values = grow(values);
    }
    k.copy(keys, count * keySize, 0, n * keySize);
    v.copy(values, count * valueSize, 0, n * valueSize);
    count += n;
  };
  const ck = Buffer.alloc(keySize * DUMP_CHUNK);
  const cv = Buffer.alloc(valueSize * DUMP_CHUNK);
  if (!io.lookupBatch(fd, ck, cv, DUMP_CHUNK, Math.max(keySize, 8), (n) => append(ck, cv, n), map)) {
    let cur: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(keySize);
      if (!io.nextKey(fd, cur, next, map)) break;
      if (io.lookup(fd, next, cv, map)) append(next, cv, 1);
      cur = next;
    }
  }
  return { keys, values, count };
}

/**
 * Every key/value of a map, decoded: batched (thousands of elements per syscall) where the map
 * type allows, else one key at a time. Throws DataPlaneError EREAD.
 */
export function dump<K, V>(fd: number, map: string, keySize: number, valueSize: number, decodeKey: (b: Buffer) => K, decodeValue: (b: Buffer) => V, io: MapIO = bpfMap): Array<[K, V]> {
  const { keys, values, count } = dumpRaw(fd, map, keySize, valueSize, io);
  const out: Array<[K, V]> = [];
  for (let i = 0; i < count; i++) out.push([decodeKey(keys.subarray(i * keySize, (i + 1) * keySize)), decodeValue(values.subarray(i * valueSize, (i + 1) * valueSize))]);
  return out;
}

/** Map fds of a loaded object, by name. */
export type MapFds = Record<MapName, number>;

/** The batches of a sync, in the order they must reach the kernel; kept across syncs, so their buffers are allocated once. */
export class SyncWrites {
  readonly backends: Batch;
  readonly revNat: Batch;
  readonly affMatch: Batch;
  readonly srcRanges: Batch;
  readonly slots: Batch;
  readonly masters: Batch;
  readonly delSlots: Deletions;
  readonly delMasters: Deletions;
  readonly delAffMatch: Deletions;
  readonly delSrcRanges: Deletions;
  readonly delRevNat: Deletions;
  readonly delMaglev: Deletions;
  readonly delBackends: Deletions;
  /** Maglev tables are big values: written one by one, after the backends they name. */
  readonly maglev: Array<{ id: number; table: Uint32Array }> = [];

  constructor(private readonly fds: MapFds, private readonly io: MapIO = bpfMap) {
    this.backends = new Batch('rd_backends', fds.rd_backends, 4, BackendCodec.size, 64, io);
    this.revNat = new Batch('rd_rev_nat', fds.rd_rev_nat, 4, RevNatCodec.size, 64, io);
    this.affMatch = new Batch('rd_aff_match', fds.rd_aff_match, AffMatchCodec.size, 1, 64, io);
    this.srcRanges = new Batch('rd_src_ranges', fds.rd_src_ranges, SrcRangeKeyCodec.size, 1, 64, io);
    this.slots = new Batch('rd_services', fds.rd_services, SvcKeyCodec.size, SvcValCodec.size, 256, io);
    this.masters = new Batch('rd_services', fds.rd_services, SvcKeyCodec.size, SvcValCodec.size, 64, io);
    this.delSlots = new Deletions('rd_services', fds.rd_services, SvcKeyCodec.size, io);
    this.delMasters = new Deletions('rd_services', fds.rd_services, SvcKeyCodec.size, io);
    this.delAffMatch = new Deletions('rd_aff_match', fds.rd_aff_match, AffMatchCodec.size, io);
    this.delSrcRanges = new Deletions('rd_src_ranges', fds.rd_src_ranges, SrcRangeKeyCodec.size, io);
    this.delRevNat = new Deletions('rd_rev_nat', fds.rd_rev_nat, 4, io);
    this.delMaglev = new Deletions('rd_maglev', fds.rd_maglev, 4, io);
    this.delBackends = new Deletions('rd_backends', fds.rd_backends, 4, io);
  }

  /** Queues a backend; returns the hash of the element as written (digest.ts). */
  backend(id: number, b: Backend): number {
    const i = this.backends.reserve();
    this.backends.keyBuf.writeUInt32LE(id, i * 4);
    BackendCodec.encode(b, this.backends.valueBuf, i * BackendCodec.size);
    return elementHash(this.backends.keyBuf, i * 4, 4, this.backends.valueBuf, i * BackendCodec.size, BackendCodec.size);
  }

  revNatEntry(id: number, r: RevNat): void {
    const i = this.revNat.reserve();
    this.revNat.keyBuf.writeUInt32LE(id, i * 4);
    RevNatCodec.encode(r, this.revNat.valueBuf, i * RevNatCodec.size);
  }

  /** A backend slot of a frontend: slot `slot` of (addr, port, proto, scope) holds `backendId`. Returns the element's hash. */
  slot(addr: string, port: number, proto: number, scope: number, slot: number, backendId: number, revNatId: number): number {
    const i = this.slots.reserve();
    const ko = i * SvcKeyCodec.size;
    const vo = i * SvcValCodec.size;
    SvcKeyCodec.encodeFields(addr, port, slot, proto, scope, this.slots.keyBuf, ko);
    SvcValCodec.encodeFields(backendId, 0, 0, revNatId, 0, this.slots.valueBuf, vo);
    return elementHash(this.slots.keyBuf, ko, SvcKeyCodec.size, this.slots.valueBuf, vo, SvcValCodec.size);
  }

  /** Returns the element's hash. */
  master(key: SvcKey, val: SvcVal): number {
    const i = this.masters.reserve();
    const ko = i * SvcKeyCodec.size;
    const vo = i * SvcValCodec.size;
    SvcKeyCodec.encode(key, this.masters.keyBuf, ko);
    SvcValCodec.encode(val, this.masters.valueBuf, vo);
    return elementHash(this.masters.keyBuf, ko, SvcKeyCodec.size, this.masters.valueBuf, vo, SvcValCodec.size);
  }

  /** Deletes slots from..to (inclusive) of a frontend. */
  deleteSlots(addr: string, port: number, proto: number, scope: number, from: number, to: number): void {
    for (let slot = from; slot <= to; slot++) SvcKeyCodec.encodeFields(addr, port, slot, proto, scope, this.delSlots.keyBuf, this.delSlots.reserve() * SvcKeyCodec.size);
  }

  /** Forgets whatever is queued (after a failed flush): the buffers stay, for the next sync. */
  reset(): void {
    for (const b of [this.backends, this.revNat, this.affMatch, this.srcRanges, this.slots, this.masters]) b.count = 0;
    for (const d of [this.delSlots, this.delMasters, this.delAffMatch, this.delSrcRanges, this.delRevNat, this.delMaglev, this.delBackends]) d.count = 0;
    this.maglev.length = 0;
  }

  /** Writes everything in the safe order; returns the number of elements written or deleted. */
  flush(): number {
    let n = this.backends.flush() + this.revNat.flush() + this.affMatch.flush() + this.srcRanges.flush();
    for (const m of this.maglev) {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(m.id);
      this.io.update(this.fds.rd_maglev, key, Buffer.from(m.table.buffer, m.table.byteOffset, m.table.byteLength), 'rd_maglev');
      n++;
    }
    this.maglev.length = 0;
    n += this.slots.flush() + this.masters.flush();
    // A removed frontend's master goes first, so no lookup finds a count whose slots are gone.
    n += this.delMasters.flush() + this.delSlots.flush();
    n += this.delAffMatch.flush() + this.delSrcRanges.flush() + this.delRevNat.flush() + this.delMaglev.flush() + this.delBackends.flush();
    return n;
  }
}

export function writeConfig(fd: number, nodeIP4: string, nodeIP6: string, flags: number, io: MapIO = bpfMap): void {
  const key = Buffer.alloc(4);
  const val = Buffer.alloc(ConfigCodec.size);
  ConfigCodec.encode({ nodeIP4, nodeIP6, flags }, val);
  io.update(fd, key, val, 'rd_config_map');
}
