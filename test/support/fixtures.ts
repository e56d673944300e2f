// Builders for raw Kubernetes objects in tests, decoded through the real decoder.

import { decodeObject } from '../../src/source/decode.js';
import type { EndpointSlice, ProxyObject, Service } from '../../src/source/objects.js';
import { DEFAULT_PROXY_NAME, type ProxyConfig } from '../../src/model/types.js';
import { Tracker } from '../../src/sync/tracker.js';

export function decodeOk(raw: unknown): ProxyObject {
  const r = decodeObject(raw);
  if (r.status !== 'ok') throw new Error(`fixture did not decode: ${JSON.stringify(r)}`);
  return r.object;
}

export interface SvcOpts {
  ns?: string;
  type?: string;
  clusterIP?: string;
  ports?: Array<Record<string, unknown>>;
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  labels?: Record<string, string>;
}

export function rawService(name: string, o: SvcOpts = {}): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: o.ns ?? 'default', ...(o.labels ? { labels: o.labels } : {}) },
    spec: {
      type: o.type ?? 'ClusterIP',
      clusterIP: o.clusterIP ?? '10.96.0.10',
      ports: o.ports ?? [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
      ...o.spec,
    },
    ...(o.status ? { status: o.status } : {}),
  };
}

export function service(name: string, o: SvcOpts = {}): Service {
  return decodeOk(rawService(name, o)) as Service;
}

export interface EpOpts {
  ip: string;
  node?: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  zoneHints?: string[];
  nodeHints?: string[];
}

export function rawSlice(name: string, svcName: string, eps: EpOpts[], o: { ns?: string; ports?: Array<Record<string, unknown>>; addressType?: string } = {}): Record<string, unknown> {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: o.ns ?? 'default', labels: { 'kubernetes.io/service-name': svcName } },
    addressType: o.addressType ?? 'IPv4',
    ports: o.ports ?? [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: e.ready ?? true, serving: e.serving ?? e.ready ?? true, terminating: e.terminating ?? false },
      ...(e.node ? { nodeName: e.node } : {}),
      ...(e.zoneHints || e.nodeHints ? { hints: { ...(e.zoneHints ? { forZones: e.zoneHints.map((z) => ({ name: z })) } : {}), ...(e.nodeHints ? { forNodes: e.nodeHints.map((n) => ({ name: n })) } : {}) } } : {}),
    })),
  };
}

export function slice(name: string, svcName: string, eps: EpOpts[], o: Parameters<typeof rawSlice>[3] = {}): EndpointSlice {
  return decodeOk(rawSlice(name, svcName, eps, o)) as EndpointSlice;
}

export function config(o: Partial<ProxyConfig> = {}): ProxyConfig {
  return {
    nodeName: 'node-1',
    nodeIPs: ['198.18.0.2'],
    zone: 'zone-a',
    clusterCIDRs: ['10.244.0.0/16'],
    nodePortAddresses: [],
    masqueradeAll: false,
    proxyName: DEFAULT_PROXY_NAME,
    ...o,
  };
}

/** A tracker fed with objects, usable as a Snapshot. */
export function snapshotOf(objects: ProxyObject[], nodeName = 'node-1'): Tracker {
  const t = new Tracker(nodeName);
  for (const o of objects) t.handle({ type: 'upsert', object: o });
  return t;
}
