// Manifests for the traffic benchmark: the lab's Nodes, N-1 filler ClusterIP services with 4
// endpoints each, and the target service last in rule order (its namespace sorts after the
// fillers'), so a data plane that walks one rule per service pays for every filler before it
// reaches the target. Written as one JSON `List` built from template strings: 10,000 services
// take a few milliseconds to generate.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Topology } from '../src/lab/topology.js';

/** The service every measured request goes to: ClusterIP + NodePort, eTP Cluster, one endpoint. */
export interface BenchTarget {
  namespace: string;
  name: string;
  clusterIP: string;
  port: number;
  nodePort: number;
  /** The one endpoint: the server pod's IP, its node and port. */
  endpointIP: string;
  endpointNode: string;
  targetPort: number;
}

/** Most services a manifest may hold (filler ClusterIPs come from 10.100.0.0-10.111.255.255). */
export const MAX_SERVICES = 100_000;

/** First address of the fillers' endpoints; inside the cluster CIDR, outside every node's pod CIDR. */
const FILLER_EP_BASE = (10 << 24) | (244 << 16) | (64 << 8);
/** Filler endpoint addresses cycle through 10.244.64.0-10.244.255.255 (never dialled). */
const FILLER_EP_COUNT = (256 - 64) * 256;

function ipv4(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

function fillerClusterIP(i: number): string {
  // 10.100.0.1 onwards, inside the lab's service CIDR 10.96.0.0/12 and clear of the target's 10.96.x.
  return ipv4(((10 << 24) | (100 << 16)) + i + 1);
}

const READY = '{"ready":true,"serving":true,"terminating":false}';

function serviceJSON(ns: string, name: string, clusterIP: string, port: number, targetPort: number, nodePort: number | null): string {
  const type = nodePort === null ? 'ClusterIP' : 'NodePort';
  const np = nodePort === null ? '' : `,"nodePort":${nodePort}`;
  return `{"apiVersion":"v1","kind":"Service","metadata":{"name":"${name}","namespace":"${ns}"},"spec":{"type":"${type}",`
    + `"clusterIP":"${clusterIP}","clusterIPs":["${clusterIP}"],"externalTrafficPolicy":"Cluster",`
    + `"ports":[{"name":"http","protocol":"TCP","port":${port},"targetPort":${targetPort}${np}}]}}`;
}

function sliceJSON(ns: string, service: string, targetPort: number, endpoints: Array<[string, string]>): string {
  const eps = endpoints.map(([ip, node]) => `{"addresses":["${ip}"],"nodeName":"${node}","conditions":${READY}}`).join(',');
  return `{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"${service}-bench","namespace":"${ns}",`
    + `"labels":{"kubernetes.io/service-name":"${service}"}},"addressType":"IPv4",`
    + `"ports":[{"name":"http","protocol":"TCP","port":${targetPort}}],"endpoints":[${eps}]}`;
}

function nodeJSON(name: string, ip: string, zone: string | undefined): string {
  const labels = zone === undefined ? '' : `,"labels":{"topology.kubernetes.io/zone":"${zone}"}`;
  return `{"apiVersion":"v1","kind":"Node","metadata":{"name":"${name}"${labels}},"status":{"addresses":[{"type":"InternalIP","address":"${ip}"}]}}`;
}

/**
 * The manifest text: `services` services in all (services-1 fillers, then the target).
 * Throws RangeError if `services` is not an integer from 1 to MAX_SERVICES.
 */
export function benchManifest(topology: Topology, services: number, target: BenchTarget): string {
  if (!Number.isInteger(services) || services < 1 || services > MAX_SERVICES) throw new RangeError(`services must be an integer from 1 to ${MAX_SERVICES}, not ${services}`);
  const nodes = topology.nodes.map((n) => n.name);
  const items: string[] = topology.nodes.map((n) => nodeJSON(n.name, n.ip, n.zone));
  for (let i = 0; i < services - 1; i++) {
    const name = `svc-${String(i).padStart(6, '0')}`;
    const eps: Array<[string, string]> = [];
    for (let k = 0; k < 4; k++) eps.push([ipv4(FILLER_EP_BASE + ((i * 4 + k) % FILLER_EP_COUNT)), nodes[(i + k) % nodes.length]!]);
    items.push(serviceJSON('bench', name, fillerClusterIP(i), 80, 8080, null), sliceJSON('bench', name, 8080, eps));
  }
  items.push(
    serviceJSON(target.namespace, target.name, target.clusterIP, target.port, target.targetPort, target.nodePort),
    sliceJSON(target.namespace, target.name, target.targetPort, [[target.endpointIP, target.endpointNode]]),
  );
  return `{"apiVersion":"v1","kind":"List","items":[\n${items.join(',\n')}\n]}\n`;
}

/** A private temporary directory for the manifests; `remove()` deletes it (never throws). */
export interface ManifestDir {
  dir: string;
  /** Writes the manifest for `services` services and returns its path. Throws on I/O errors. */
  write(topology: Topology, services: number, target: BenchTarget): string;
  remove(): void;
}

export function manifestDir(): ManifestDir {
  const dir = mkdtempSync(join(tmpdir(), 'rudder-bench-'));
  return {
    dir,
    write(topology, services, target) {
      const file = join(dir, `services-${services}.json`);
      writeFileSync(file, benchManifest(topology, services, target));
      return file;
    },
    remove() {
      try {
        rmSync(dir, { recursive: true, force: true, maxRetries: 2 });
      } catch {
        // Best effort: it runs in exit handlers, where a throw would skip the lab's own teardown.
      }
    },
  };
}
