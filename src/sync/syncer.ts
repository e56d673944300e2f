// One sync: take the tracker's pending changes, rebuild the touched services (everything on the
// first sync and when the node's configuration changes), diff, and hand the changes to the data
// plane as one transaction. A full sync (periodic, or after a failed transaction, which leaves the
// kernel as it was) makes the data plane reprogram or verify everything from the table; as in
// kube-proxy, the table itself is kept up to date change by change and is not rebuilt for it.

import { build, rebuildServices } from '../model/build.js';
import { applyRebuilt, diffServices, diffSharing, mergeChanges } from '../model/diff.js';
import type { Change, ProxyConfig, ServicePort } from '../model/types.js';
import { beforeAfter, usesLocalEndpoints } from '../model/types.js';
import type { DataPlane } from '../dataplane/dataplane.js';
import type { Logger } from '../observe/log.js';
import type { Metrics } from '../observe/metrics.js';
import type { ProxyHealth } from '../observe/health.js';
import type { Node } from '../source/objects.js';
import type { PendingChanges, Tracker } from './tracker.js';

export interface SyncerOptions {
  tracker: Tracker;
  dataplane: DataPlane;
  /** Makes the proxy config from this node's Node object (flags win). */
  config: (node: Node | null) => ProxyConfig;
  logger: Logger;
  metrics?: Metrics;
  health?: ProxyHealth;
  /** A full sync at least this often (ms), as kube-proxy's periodic resync. */
  fullSyncIntervalMs: number;
  now?: () => number;
  /** Called with the changes of every sync that landed (service health check servers follow them). */
  onApplied?: (changes: readonly Change[]) => Promise<void>;
}

export interface SyncReport {
  full: boolean;
  changes: number;
  durationMs: number;
}

function sameConfig(a: ProxyConfig, b: ProxyConfig): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export class Syncer {
  table = new Map<string, readonly ServicePort[]>();
  config: ProxyConfig;
  private needFull = true;
  /** The table must be built from the tracker's objects (first sync, configuration change). */
  private needRebuild = true;
  private lastFull = -Infinity;
  /** Changes of syncs whose transaction failed: the kernel has not seen them yet. */
  private unapplied: Change[] = [];
  private readonly now: () => number;
  syncs = 0;

  constructor(private readonly o: SyncerOptions) {
    this.now = o.now ?? Date.now;
    this.config = o.config(o.tracker.node);
  }

  /** Called by the runner. Throws when the data plane failed (the runner retries with backoff). */
  async sync(): Promise<SyncReport | null> {
    const { tracker, dataplane, logger, metrics } = this.o;
    if (!tracker.ready) {
      logger.debug('waiting for the initial list before the first sync');
      return null;
    }
    const start = this.now();
    const pending = tracker.take();
    const cfg = this.o.config(tracker.node);
    const configChanged = !sameConfig(cfg, this.config);
    // The node's local addresses (NodePorts without --nodeport-addresses) change with its
    // interfaces; the table does not depend on them, so that is not a reason to rebuild it.
    const addressesChanged = configChanged && sameConfig({ ...cfg, localAddresses: undefined }, { ...this.config, localAddresses: undefined });
    if (addressesChanged) logger.info('node addresses changed', { localAddresses: (cfg.localAddresses ?? []).join(',') });
    else if (configChanged) logger.info('node configuration changed, rebuilding everything', { nodeIPs: cfg.nodeIPs.join(','), zone: cfg.zone });
    const full = this.needFull || (configChanged && !addressesChanged) || start - this.lastFull >= this.o.fullSyncIntervalMs;

    let changes: Change[];
    if (this.needRebuild || (configChanged && !addressesChanged)) {
      const next = build(tracker, cfg);
      changes = diffSharing(this.table, next);
      this.table = next;
      this.needRebuild = false;
    } else {
      const rebuilt = rebuildServices(tracker, cfg, pending.services);
      changes = diffServices(this.table, rebuilt);
      applyRebuilt(this.table, rebuilt);
    }
    this.config = cfg;
    // The table now holds the desired state whatever the kernel says: a failure below forces a
    // full sync, which reprograms everything from it, and carries these changes over to it.
    if (this.unapplied.length > 0) changes = mergeChanges(this.unapplied, changes);
    this.needFull = true;
    try {
      const res = await dataplane.apply(changes, this.table, { full, addressesChanged });
      metrics?.applyBytes.inc({ dataplane: dataplane.name }, res.bytes);
    } catch (e) {
      // A failed sync took time too (kube-proxy records every SyncProxyRules).
      if (metrics !== undefined) {
        const secs = (this.now() - start) / 1000;
        metrics.syncDuration.observe(secs);
        (full ? metrics.syncFullDuration : metrics.syncPartialDuration).observe(secs);
      }
      // Keep the changes pending (for the latency metric and the health check) until a sync lands.
      tracker.restore(pending);
      this.unapplied = changes;
      metrics?.syncFailures.inc({ dataplane: dataplane.name });
      if (dataplane.name === 'iptables') metrics?.restoreFailures.inc();
      if (dataplane.name === 'nftables') metrics?.nftablesSyncFailures.inc();
      throw e;
    }
    this.needFull = false;
    this.unapplied = [];
    if (full) this.lastFull = start;
    this.syncs++;
    const end = this.now();
    if (metrics !== undefined) this.record(metrics, full, changes, pending, start, end);
    // Changes that arrived while the kernel was being programmed are still waiting.
    this.o.health?.updated(tracker.oldestPending());
    await this.o.onApplied?.(changes);
    logger.debug('synced', { full, changes: changes.length, ms: end - start });
    return { full, changes: changes.length, durationMs: end - start };
  }

  private record(m: Metrics, full: boolean, changes: Change[], pending: PendingChanges, start: number, end: number): void {
    const secs = (end - start) / 1000;
    m.syncDuration.observe(secs);
    (full ? m.syncFullDuration : m.syncPartialDuration).observe(secs);
    m.lastSyncTimestamp.set(end / 1000);
    // From the endpoints controller's trigger time (wall clock) to programmed, as kube-proxy.
    const wall = Date.now();
    for (const t of pending.triggerTimes) m.networkProgrammingDuration.observe(Math.max(0, wall - t) / 1000);
    m.serviceChangesTotal.inc(pending.serviceChanges);
    m.endpointChangesTotal.inc(pending.endpointChanges);
    const counts = this.o.tracker.pendingCounts;
    m.serviceChangesPending.set(counts.services);
    m.endpointChangesPending.set(counts.endpoints);
    // Table-wide gauges are kept by accounting for each change, not by scanning the table.
    for (const c of changes) {
      m.changes.inc({ kind: c.kind });
      const { prev, next } = beforeAfter(c);
      if (prev !== undefined) this.count(prev, -1);
      if (next !== undefined) this.count(next, 1);
    }
    m.servicePorts.set(this.totals.ports);
    m.endpoints.set(this.totals.endpoints);
    m.noLocalEndpoints.set({ traffic_policy: 'internal' }, this.totals.noLocalInternal);
    m.noLocalEndpoints.set({ traffic_policy: 'external' }, this.totals.noLocalExternal);
  }

  private readonly totals = { ports: 0, endpoints: 0, noLocalInternal: 0, noLocalExternal: 0 };

  private count(sp: ServicePort, sign: 1 | -1): void {
    this.totals.ports += sign;
    this.totals.endpoints += sign * sp.reachableEndpoints.length;
    if (usesLocalEndpoints(sp) && sp.hasEndpoints && sp.localEndpoints.length === 0) {
      if (sp.internalPolicyLocal) this.totals.noLocalInternal += sign;
      if (sp.externalPolicyLocal) this.totals.noLocalExternal += sign;
    }
  }
}
