// In-memory BPF maps for unit tests of the eBPF plane's state logic: the same MapIO the agent
// drives libbpf through, with every write logged in order so tests can check that every
// intermediate state is valid (slots before their master, masters gone before their slots).

import { MAP_NAMES, type MapFds, type MapIO } from '../../src/dataplane/ebpf/maps.js';
import { BackendCodec, SvcKeyCodec, SvcValCodec, type Backend, type SvcKey, type SvcVal } from '../../src/dataplane/ebpf/codecs.js';

const SIZES: Record<string, [number, number]> = {
  rd_services: [24, 16], rd_backends: [4, 20], rd_rev_nat: [4, 20], rd_rev_sk: [32, 24], rd_affinity: [16, 16],
  rd_aff_match: [8, 1], rd_src_ranges: [24, 1], rd_maglev: [4, 4 * 251], rd_config_map: [4, 36], rd_svc_stats: [4, 24], rd_be_stats: [4, 8],
};

export interface Op { op: 'update' | 'delete'; map: string; key: Buffer }

export class FakeMaps implements MapIO {
  readonly fds: MapFds;
  private readonly names = new Map<number, string>();
  private readonly data = new Map<number, Map<string, Buffer>>();
  readonly log: Op[] = [];
  /** Fail the n-th write from now (1 = the next one) with EAPPLY-like errors. */
  failAfter = 0;

  constructor() {
    const fds: Partial<MapFds> = {};
    MAP_NAMES.forEach((n, i) => {
      fds[n] = 100 + i;
      this.names.set(100 + i, n);
      this.data.set(100 + i, new Map());
    });
    this.fds = fds as MapFds;
  }

  private m(fd: number): Map<string, Buffer> {
    const m = this.data.get(fd);
    if (m === undefined) throw new Error(`fake maps: no map with fd ${fd}`);
    return m;
  }

  private write(): void {
    if (this.failAfter > 0 && --this.failAfter === 0) throw new Error('fake maps: injected write failure');
  }

  update(fd: number, key: Buffer, value: Buffer): void {
    this.write();
    this.m(fd).set(key.toString('hex'), Buffer.from(value));
    this.log.push({ op: 'update', map: this.names.get(fd)!, key: Buffer.from(key) });
  }

  lookup(fd: number, key: Buffer, value: Buffer): boolean {
    const v = this.m(fd).get(key.toString('hex'));
    if (v === undefined) return false;
    v.copy(value);
    return true;
  }

  delete(fd: number, key: Buffer): boolean {
    this.write();
    this.log.push({ op: 'delete', map: this.names.get(fd)!, key: Buffer.from(key) });
    return this.m(fd).delete(key.toString('hex'));
  }

  nextKey(fd: number, key: Buffer | null, next: Buffer): boolean {
    const keys = [...this.m(fd).keys()];
    const i = key === null ? 0 : keys.indexOf(key.toString('hex')) + 1;
    if (i >= keys.length) return false;
    Buffer.from(keys[i]!, 'hex').copy(next);
    return true;
  }

  updateBatch(fd: number, keys: Buffer, values: Buffer, count: number): boolean {
    const [ks, vs] = SIZES[this.names.get(fd)!]!;
    for (let i = 0; i < count; i++) this.update(fd, keys.subarray(i * ks, (i + 1) * ks), values.subarray(i * vs, (i + 1) * vs));
    return true;
  }

  deleteBatch(fd: number, keys: Buffer, keySize: number, count: number): void {
    for (let i = 0; i < count; i++) this.delete(fd, keys.subarray(i * keySize, (i + 1) * keySize));
  }

  lookupBatch(): boolean {
    return false;
  }

  /** rd_services as typed entries. */
  services(): Array<[SvcKey, SvcVal]> {
    return [...this.m(this.fds.rd_services).entries()].map(([k, v]) => [SvcKeyCodec.decode(Buffer.from(k, 'hex')), SvcValCodec.decode(v)]);
  }

  backends(): Map<number, Backend> {
    return new Map([...this.m(this.fds.rd_backends).entries()].map(([k, v]) => [Buffer.from(k, 'hex').readUInt32LE(0), BackendCodec.decode(v)]));
  }

  size(name: (typeof MAP_NAMES)[number]): number {
    return this.m(this.fds[name]).size;
  }

  /** Rewrites bytes of one element's value behind the plane's back; false if the key is absent. */
  poke(name: (typeof MAP_NAMES)[number], key: Buffer, mutate: (value: Buffer) => void): boolean {
    const v = this.m(this.fds[name]).get(key.toString('hex'));
    if (v === undefined) return false;
    mutate(v);
    return true;
  }

  /** Every element of a map as "key=value" hex, sorted. */
  raw(name: (typeof MAP_NAMES)[number]): string[] {
    return [...this.m(this.fds[name]).entries()].map(([k, v]) => `${k}=${v.toString('hex')}`).sort();
  }

  /** Deletes one rd_services entry behind the plane's back (drift). */
  drop(key: SvcKey): boolean {
    const b = Buffer.alloc(SvcKeyCodec.size);
    SvcKeyCodec.encode(key, b);
    return this.m(this.fds.rd_services).delete(b.toString('hex'));
  }
}
