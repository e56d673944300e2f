// An in-memory data plane for tests of the sync loop, and a wrapper that fails at random for
// fault tests. The fake applies changes exactly as a kernel transaction would: all or nothing.

import { allPorts, beforeAfter, externalEndpoints, frontends, internalEndpoints, type Change, type ServicePort, type ServiceTable } from '../model/types.js';
import { DataPlaneError, type ApplyOptions, type ApplyResult, type DataPlane, type DataPlaneName, type ProgrammedFrontend } from './dataplane.js';

/** What the fake "kernel" holds: each frontend with the backends it may use. */
export type FakeState = Map<string, ProgrammedFrontend>;

function frontendsOf(sp: ServicePort): Array<[string, ProgrammedFrontend]> {
  return frontends(sp).map((fe) => {
    const address = fe.kind === 'nodePort' ? `*:${fe.port}` : fe.ip.includes(':') ? `[${fe.ip}]:${fe.port}` : `${fe.ip}:${fe.port}`;
    const backends = [...(fe.kind === 'clusterIP' ? internalEndpoints(sp) : externalEndpoints(sp))];
    return [`${sp.id}|${fe.kind}|${address}`, { service: sp.id, kind: fe.kind, address, backends }];
  });
}

/** The state a correct data plane holds for `table`. */
export function expectedState(table: ServiceTable): FakeState {
  const m: FakeState = new Map();
  for (const sp of allPorts(table)) for (const [k, v] of frontendsOf(sp)) m.set(k, v);
  return m;
}

export class FakeDataPlane implements DataPlane {
  readonly name: DataPlaneName = 'iptables';
  state: FakeState = new Map();
  applies: Array<{ full: boolean; changes: number; addressesChanged?: boolean }> = [];
  initialized = false;

  async init(): Promise<void> {
    this.initialized = true;
  }

  async apply(changes: readonly Change[], table: ServiceTable, opts: ApplyOptions): Promise<ApplyResult> {
    // Build the next state aside and swap it in: a transaction either lands whole or not at all.
    const next: FakeState = opts.full ? expectedState(table) : new Map(this.state);
    if (!opts.full) {
      for (const c of changes) {
        const { prev, next: after } = beforeAfter(c);
        if (prev !== undefined) for (const [k] of frontendsOf(prev)) next.delete(k);
        if (after !== undefined) for (const [k, v] of frontendsOf(after)) next.set(k, v);
      }
    }
    this.state = next;
    this.applies.push({ full: opts.full, changes: changes.length, addressesChanged: opts.addressesChanged === true });
    return { written: changes.length, bytes: 0 };
  }

  async programmed(): Promise<ProgrammedFrontend[]> {
    return [...this.state.values()];
  }

  async cleanup(): Promise<void> {
    this.state = new Map();
  }
}

/** Fails a fraction of applies (deterministically, from a seed) before touching the inner plane. */
export class FaultyDataPlane implements DataPlane {
  readonly name: DataPlaneName;
  failures = 0;
  private seed: number;

  constructor(private readonly inner: DataPlane, public failRate: number, seed = 1) {
    this.name = inner.name;
    this.seed = seed;
  }

  private random(): number {
    // mulberry32
    this.seed = (this.seed + 0x6d2b79f5) | 0;
    let t = this.seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  init(): Promise<void> {
    return this.inner.init();
  }

  async apply(changes: readonly Change[], table: ServiceTable, opts: ApplyOptions): Promise<ApplyResult> {
    if (this.random() < this.failRate) {
      this.failures++;
      throw new DataPlaneError('EAPPLY', 'injected fault: transaction rejected');
    }
    return this.inner.apply(changes, table, opts);
  }

  programmed(): Promise<ProgrammedFrontend[]> {
    return this.inner.programmed();
  }

  cleanup(): Promise<void> {
    return this.inner.cleanup();
  }
}
