// Prometheus metrics under kube-proxy's names (so existing dashboards and alerts work), plus
// Rudder's own under rudder_*.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { DataPlaneCounters } from '../dataplane/dataplane.js';

// kube-proxy's buckets for sync durations (exponential from 1 ms) and programming latency.
const SYNC_BUCKETS = [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384];
const PROGRAMMING_BUCKETS = [0.25, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 45, 60, 90, 120, 180, 240, 300];

export class Metrics {
  readonly registry = new Registry();
  readonly syncDuration: Histogram;
  readonly syncFullDuration: Histogram;
  readonly syncPartialDuration: Histogram;
  readonly networkProgrammingDuration: Histogram;
  readonly lastSyncTimestamp: Gauge;
  readonly lastQueuedTimestamp: Gauge;
  readonly endpointChangesPending: Gauge;
  readonly endpointChangesTotal: Counter;
  readonly serviceChangesPending: Gauge;
  readonly serviceChangesTotal: Counter;
  readonly noLocalEndpoints: Gauge<'traffic_policy'>;
  readonly restoreFailures: Counter;
  readonly nftablesSyncFailures: Counter;
  readonly syncFailures: Counter<'dataplane'>;
  readonly servicePorts: Gauge;
  readonly endpoints: Gauge;
  readonly changes: Counter<'kind'>;
  readonly applyBytes: Counter<'dataplane'>;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const r = [this.registry];
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    this.syncDuration = new Histogram({ name: 'kubeproxy_sync_proxy_rules_duration_seconds', help: 'SyncProxyRules latency in seconds', buckets: SYNC_BUCKETS, registers: r });
    this.syncFullDuration = new Histogram({ name: 'kubeproxy_sync_full_proxy_rules_duration_seconds', help: 'SyncProxyRules latency in seconds for full resyncs', buckets: SYNC_BUCKETS, registers: r });
    this.syncPartialDuration = new Histogram({ name: 'kubeproxy_sync_partial_proxy_rules_duration_seconds', help: 'SyncProxyRules latency in seconds for partial resyncs', buckets: SYNC_BUCKETS, registers: r });
    this.networkProgrammingDuration = new Histogram({ name: 'kubeproxy_network_programming_duration_seconds', help: 'In Cluster Network Programming Latency in seconds (from an EndpointSlice change\'s last-change-trigger-time to the kernel being programmed)', buckets: PROGRAMMING_BUCKETS, registers: r });
    this.lastSyncTimestamp = new Gauge({ name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds', help: 'The last time proxy rules were successfully synced', registers: r });
    this.lastQueuedTimestamp = new Gauge({ name: 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds', help: 'The last time a sync of proxy rules was queued', registers: r });
    this.endpointChangesPending = new Gauge({ name: 'kubeproxy_sync_proxy_rules_endpoint_changes_pending', help: 'Pending proxy rules Endpoint changes', registers: r });
    this.endpointChangesTotal = new Counter({ name: 'kubeproxy_sync_proxy_rules_endpoint_changes_total', help: 'Cumulative proxy rules Endpoint changes', registers: r });
    this.serviceChangesPending = new Gauge({ name: 'kubeproxy_sync_proxy_rules_service_changes_pending', help: 'Pending proxy rules Service changes', registers: r });
    this.serviceChangesTotal = new Counter({ name: 'kubeproxy_sync_proxy_rules_service_changes_total', help: 'Cumulative proxy rules Service changes', registers: r });
    this.noLocalEndpoints = new Gauge({ name: 'kubeproxy_sync_proxy_rules_no_local_endpoints_total', help: 'Number of services with a Local traffic policy and no endpoints', labelNames: ['traffic_policy'], registers: r });
    this.restoreFailures = new Counter({ name: 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total', help: 'Cumulative proxy iptables restore failures', registers: r });
    this.nftablesSyncFailures = new Counter({ name: 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total', help: 'Cumulative proxy nftables sync failures', registers: r });
    this.syncFailures = new Counter({ name: 'rudder_sync_failures_total', help: 'Syncs whose kernel transaction failed, by data plane', labelNames: ['dataplane'], registers: r });
    this.servicePorts = new Gauge({ name: 'rudder_service_ports', help: 'Service ports in the service table', registers: r });
    this.endpoints = new Gauge({ name: 'rudder_endpoints', help: 'Endpoints reachable from this node, summed over service ports', registers: r });
    this.changes = new Counter({ name: 'rudder_table_changes_total', help: 'Service table changes applied, by kind', labelNames: ['kind'], registers: r });
    this.applyBytes = new Counter({ name: 'rudder_dataplane_transaction_bytes_total', help: 'Bytes handed to the kernel tool', labelNames: ['dataplane'], registers: r });
    this.noLocalEndpoints.set({ traffic_policy: 'internal' }, 0);
    this.noLocalEndpoints.set({ traffic_policy: 'external' }, 0);
  }

  /**
   * Exports the counters a data plane keeps in the kernel, read at every scrape: connections per
   * frontend and per backend, and refusals/drops per frontend. A failed read leaves them out of
   * that scrape (and is logged by the caller's onError).
   */
  exportDataPlaneCounters(read: () => Promise<DataPlaneCounters>, onError: (e: Error) => void): void {
    const r = [this.registry];
    let last: Promise<DataPlaneCounters | null> | null = null;
    // One kernel read serves the three metrics of a scrape.
    const once = (): Promise<DataPlaneCounters | null> => {
      last ??= read().catch((e: Error) => { onError(e); return null; }).finally(() => { setImmediate(() => { last = null; }); });
      return last;
    };
    const feLabels = ['service', 'kind', 'frontend', 'protocol'] as const;
    new Counter({
      name: 'rudder_ebpf_service_connections_total', help: 'Connections the eBPF programs sent to a backend, per frontend', labelNames: feLabels, registers: r,
      async collect() {
        this.reset();
        for (const f of (await once())?.frontends ?? []) this.inc({ service: f.service, kind: f.kind, frontend: f.frontend, protocol: f.protocol }, f.connections);
      },
    });
    new Counter({
      name: 'rudder_ebpf_service_rejected_total', help: 'Connections the eBPF programs refused (no endpoints) or failed (traffic policy Local without a local endpoint, source ranges), per frontend', labelNames: [...feLabels, 'reason'], registers: r,
      async collect() {
        this.reset();
        for (const f of (await once())?.frontends ?? []) {
          const labels = { service: f.service, kind: f.kind, frontend: f.frontend, protocol: f.protocol };
          if (f.refused > 0) this.inc({ ...labels, reason: 'refused' }, f.refused);
          if (f.dropped > 0) this.inc({ ...labels, reason: 'dropped' }, f.dropped);
        }
      },
    });
    new Counter({
      name: 'rudder_dataplane_drift_repairs_total', help: 'Times the kernel state was found to differ from what the data plane wrote (someone else changed it), and was repaired', registers: r,
      async collect() {
        this.reset();
        this.inc((await once())?.driftRepairs ?? 0);
      },
    });
    new Gauge({
      name: 'rudder_ebpf_conntrack_entries', help: 'Live entries of the eBPF per-packet connection tracking (two per flow), by TCP state (UDP counts as established), at the last sweep', labelNames: ['state'], registers: r,
      async collect() {
        this.reset();
        const ct = (await once())?.conntrack;
        if (ct !== undefined) for (const state of ['syn', 'established', 'closing'] as const) this.set({ state }, ct[state]);
      },
    });
    new Gauge({
      name: 'rudder_ebpf_conntrack_capacity', help: 'Entries the eBPF per-packet connection tracking holds at most (--bpf-ct-max); when full, the oldest flows are evicted', registers: r,
      async collect() {
        this.reset();
        const ct = (await once())?.conntrack;
        if (ct !== undefined) this.set(ct.capacity);
      },
    });
    new Counter({
      name: 'rudder_ebpf_conntrack_gc_deleted_total', help: 'Expired entries the agent removed from the eBPF per-packet connection tracking', registers: r,
      async collect() {
        this.reset();
        const ct = (await once())?.conntrack;
        if (ct !== undefined) this.inc(ct.deletedTotal);
      },
    });
    new Counter({
      name: 'rudder_ebpf_backend_connections_total', help: 'Connections the eBPF programs sent to a backend, per backend', labelNames: ['backend', 'protocol'], registers: r,
      async collect() {
        this.reset();
        for (const b of (await once())?.backends ?? []) this.inc({ backend: b.backend, protocol: b.protocol }, b.connections);
      },
    });
  }
}
