// kube-proxy's service health checks: for every service with externalTrafficPolicy Local and a
// healthCheckNodePort, an HTTP server on that port tells load balancers whether this node has
// local endpoints (200 with the count) or not (503), so they only send traffic to nodes that can
// serve it without forwarding. Driven by the sync loop's changes: O(changes) per sync.

import { createServer, type Server } from 'node:http';
import { beforeAfter, type Change, type ServicePort } from '../model/types.js';
import type { Logger } from './log.js';
import { listenOn } from './listen.js';

interface PortState {
  namespace: string;
  name: string;
  /** Local ready endpoints per service port of the service (a service may have several ports). */
  local: Map<string, Set<string>>;
  servers: Server[];
}

function localReady(sp: ServicePort): Set<string> {
  const out = new Set<string>();
  for (const ep of sp.endpoints) if (ep.isLocal && ep.ready) out.add(ep.ip);
  return out;
}

export interface ServiceHealthOptions {
  /** Addresses to listen on; empty: every address. */
  addresses: () => string[];
  /** Whether the proxy itself is healthy: an unhealthy proxy reports 503 everywhere, as kube-proxy. */
  proxyHealthy: () => boolean;
  logger: Logger;
}

export class ServiceHealthServers {
  private readonly ports = new Map<number, PortState>();

  constructor(private readonly o: ServiceHealthOptions) {}

  /** Applies one sync's changes. Never throws: a port that cannot be bound is logged. */
  async update(changes: readonly Change[]): Promise<void> {
    const touched = new Set<number>();
    for (const c of changes) {
      const { prev, next } = beforeAfter(c);
      if (prev !== undefined && prev.healthCheckNodePort > 0) {
        this.ports.get(prev.healthCheckNodePort)?.local.delete(prev.id);
        touched.add(prev.healthCheckNodePort);
      }
      if (next !== undefined && next.healthCheckNodePort > 0 && next.externalPolicyLocal) {
        const port = next.healthCheckNodePort;
        let st = this.ports.get(port);
        if (st === undefined) this.ports.set(port, (st = { namespace: next.namespace, name: next.name, local: new Map(), servers: [] }));
        st.local.set(next.id, localReady(next));
        touched.add(port);
      }
    }
    for (const port of touched) {
      const st = this.ports.get(port);
      if (st === undefined) continue;
      if (st.local.size === 0) {
        this.ports.delete(port);
        await Promise.all(st.servers.map((s) => new Promise<void>((r) => { s.closeAllConnections(); s.close(() => r()); })));
      } else if (st.servers.length === 0) {
        await this.listen(port, st);
      }
    }
  }

  /** The count a load balancer sees: distinct local ready endpoint addresses of the service. */
  localEndpoints(port: number): number {
    const st = this.ports.get(port);
    if (st === undefined) return 0;
    const all = new Set<string>();
    for (const s of st.local.values()) for (const ip of s) all.add(ip);
    return all.size;
  }

  private async listen(port: number, st: PortState): Promise<void> {
    const handler = (_req: unknown, res: import('node:http').ServerResponse): void => {
      const n = this.localEndpoints(port);
      const healthy = this.o.proxyHealthy();
      res.writeHead(n > 0 && healthy ? 200 : 503, {
        'content-type': 'application/json',
        'x-content-type-options': 'nosniff',
        'x-load-balancing-endpoint-weight': String(n),
      }).end(JSON.stringify({ service: { namespace: st.namespace, name: st.name }, localEndpoints: n, serviceProxyHealthy: healthy }));
    };
    const addrs = this.o.addresses();
    // Without NodePort addresses: every address of both families, as kube-proxy's ":port".
    for (const host of addrs.length > 0 ? addrs : ['']) {
      const server = createServer(handler);
      try {
        await listenOn(server, port, host);
        st.servers.push(server);
      } catch (e) {
        this.o.logger.error('cannot serve a health check node port', { port, host, service: `${st.namespace}/${st.name}`, error: e as Error });
      }
    }
  }

  async close(): Promise<void> {
    const all = [...this.ports.values()].flatMap((st) => st.servers);
    this.ports.clear();
    await Promise.all(all.map((s) => new Promise<void>((r) => { s.closeAllConnections(); s.close(() => r()); })));
  }
}
