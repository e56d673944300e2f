// Stable numeric ids for frontends (the rev-NAT id the programs key affinity, counters and reverse
// translation by) and backends. An id stays with its key while the key exists, so an update never
// renumbers what the kernel already holds; the allocator is seeded from the pinned maps at start,
// so ids survive restarts. Freed ids are reused lowest first, which keeps per-CPU counter arrays
// dense.

import { DataPlaneError } from '../dataplane.js';

export class IdAllocator {
  private readonly byKey = new Map<string, number>();
  private readonly byId = new Map<number, string>();
  /** Freed ids below `next` (a binary min-heap), reused before `next` grows. */
  private readonly free: number[] = [];
  /** Set by adopt(): `free` is rebuilt from the gaps below `next` before the next use. */
  private gapsStale = false;
  /** Released ids waiting for settle(). */
  private readonly released: number[] = [];
  private next = 1;

  /** `max` is the largest id the maps can index (ids start at 1: 0 means "none" in the programs). */
  constructor(readonly what: string, private readonly max: number) {}

  get size(): number {
    return this.byKey.size;
  }

  get(key: string): number | undefined {
    return this.byKey.get(key);
  }

  /** Every (key, id) held. */
  entries(): IterableIterator<[string, number]> {
    return this.byKey.entries();
  }

  keyOf(id: number): string | undefined {
    return this.byId.get(id);
  }

  /** The key's id, allocated if it has none. Throws DataPlaneError EAPPLY when every id is taken. */
  acquire(key: string): number {
    const have = this.byKey.get(key);
    if (have !== undefined) return have;
    let id: number;
    const reused = this.popFree();
    if (reused !== undefined) {
      id = reused;
    } else {
      if (this.next > this.max) throw new DataPlaneError('EAPPLY', `no free ${this.what} id: all ${this.max} are in use (raise the map size)`);
      id = this.next++;
    }
    this.byKey.set(key, id);
    this.byId.set(id, key);
    return id;
  }

  /** Records an id found in the kernel. A key seen twice keeps its first id (the caller deletes the other). */
  adopt(key: string, id: number): boolean {
    if (this.byKey.has(key) || this.byId.has(id) || id < 1 || id > this.max) return false;
    this.byKey.set(key, id);
    this.byId.set(id, key);
    // Ids arrive in hash order: the free list is rebuilt once, not kept up to date per id.
    if (id >= this.next) this.next = id + 1;
    this.gapsStale = true;
    return true;
  }

  /**
   * Frees the key's id. The id is not handed out again before settle(): the deletion of what it
   * named is still queued, and a write under the same id in the same sync would be undone by it.
   */
  release(key: string): void {
    const id = this.byKey.get(key);
    if (id === undefined) return;
    this.byKey.delete(key);
    this.byId.delete(id);
    this.released.push(id);
  }

  /** Makes the ids released since the last call available again (once their deletions are written). */
  settle(): void {
    if (!this.gapsStale) for (const id of this.released) this.pushFree(id);
    this.released.length = 0;
  }

  /** After adoptions: every id below `next` that nobody holds or is waiting to release is free, ascending (a valid heap). */
  private rebuildGaps(): void {
    this.gapsStale = false;
    const pending = new Set(this.released);
    this.free.length = 0;
    for (let id = 1; id < this.next; id++) if (!this.byId.has(id) && !pending.has(id)) this.free.push(id);
  }

  clear(): void {
    this.byKey.clear();
    this.byId.clear();
    this.free.length = 0;
    this.gapsStale = false;
    this.released.length = 0;
    this.next = 1;
  }

  private pushFree(id: number): void {
    const h = this.free;
    h.push(id);
    for (let i = h.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (h[parent]! <= h[i]!) break;
      [h[parent], h[i]] = [h[i]!, h[parent]!];
      i = parent;
    }
  }

  private popFree(): number | undefined {
    if (this.gapsStale) this.rebuildGaps();
    const h = this.free;
    if (h.length > 0) {
      const top = h[0]!;
      const last = h.pop()!;
      if (h.length > 0) {
        h[0] = last;
        for (let i = 0; ; ) {
          const l = 2 * i + 1;
          const r = l + 1;
          let m = i;
          if (l < h.length && h[l]! < h[m]!) m = l;
          if (r < h.length && h[r]! < h[m]!) m = r;
          if (m === i) break;
          [h[m], h[i]] = [h[i]!, h[m]!];
          i = m;
        }
      }
      return top;
    }
    return undefined;
  }
}
