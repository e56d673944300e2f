// The admin endpoints: /healthz and /livez on the healthz address, /metrics and the read-back
// endpoints (/services, /table) on the metrics address. Both bind to localhost by default.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ProxyHealth } from './health.js';
import type { Metrics } from './metrics.js';
import { listenOn } from './listen.js';

export class BindAddressError extends Error {
  readonly code = 'EBINDADDR';
}

/** Parses "host:port", "[v6]:port" or ":port" (all interfaces, both families: host ""). */
export function parseBindAddress(s: string, flag: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new BindAddressError(`${flag}: ${JSON.stringify(s)} is not host:port`);
  const host = m[1] ?? m[2] ?? '';
  return { host, port };
}

type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void> | void;

function serve(host: string, port: number, routes: Record<string, Handler>): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const h = routes[path];
    if (req.method !== 'GET' || h === undefined) {
      res.writeHead(h === undefined ? 404 : 405, { 'content-type': 'text/plain' }).end(h === undefined ? 'not found\n' : 'method not allowed\n');
      return;
    }
    Promise.resolve().then(() => h(req, res)).catch((e: Error) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`${e.message}\n`);
    });
  });
  return listenOn(server, port, host).then(() => server);
}

export interface AdminOptions {
  healthz: string;
  metrics: string;
  nodeName: string;
  health: ProxyHealth;
  registry: Metrics['registry'];
  /** What the kernel has, read back from the data plane. */
  programmed: () => Promise<unknown>;
  /** The desired service table. */
  table: () => unknown;
  /** Answers /trace?src=&dst=&port=&proto= against the live table; throws TypeError for bad input. */
  trace?: (query: URLSearchParams) => unknown;
}

function traceRoute(trace: (q: URLSearchParams) => unknown): Handler {
  return (req, res) => {
    const q = new URL(req.url ?? '/', 'http://localhost').searchParams;
    let body: unknown;
    try {
      body = trace(q);
    } catch (e) {
      if (!(e instanceof TypeError)) throw e;
      res.writeHead(400, { 'content-type': 'text/plain' }).end(`${e.message}\n`);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body, null, 1) + '\n');
  };
}

export interface AdminServers {
  healthzPort: number | null;
  metricsPort: number | null;
  close(): Promise<void>;
}

/** Starts the servers; an empty address disables one. Rejects if an address cannot be bound. */
export async function startAdmin(o: AdminOptions): Promise<AdminServers> {
  const servers: Server[] = [];
  const healthRoute: Handler = (_req, res) => {
    const ok = o.health.state().healthy;
    res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json', 'x-content-type-options': 'nosniff' }).end(o.health.body(o.nodeName));
  };
  // One read-back at a time, shared by every request that arrives while it runs: concurrent
  // scrapes of a large table cost one copy of it, not one each (which ran the process out of heap).
  const json = (f: () => unknown): Handler => {
    let inFlight: Promise<string> | null = null;
    return async (_req, res) => {
      inFlight ??= Promise.resolve().then(f).then((v) => JSON.stringify(v, null, 1) + '\n').finally(() => { inFlight = null; });
      const body = await inFlight;
      res.writeHead(200, { 'content-type': 'application/json' }).end(body);
    };
  };
  let healthzPort: number | null = null;
  let metricsPort: number | null = null;
  try {
    if (o.healthz !== '') {
      const { host, port } = parseBindAddress(o.healthz, '--healthz-bind-address');
      const s = await serve(host, port, { '/healthz': healthRoute, '/livez': healthRoute });
      servers.push(s);
      healthzPort = (s.address() as AddressInfo).port;
    }
    if (o.metrics !== '') {
      const { host, port } = parseBindAddress(o.metrics, '--metrics-bind-address');
      const s = await serve(host, port, {
        '/metrics': async (_req, res) => {
          res.writeHead(200, { 'content-type': o.registry.contentType }).end(await o.registry.metrics());
        },
        '/services': json(o.programmed),
        '/table': json(o.table),
        ...(o.trace === undefined ? {} : { '/trace': traceRoute(o.trace) }),
        '/healthz': healthRoute,
      });
      servers.push(s);
      metricsPort = (s.address() as AddressInfo).port;
    }
  } catch (e) {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    throw e;
  }
  return {
    healthzPort,
    metricsPort,
    close: () => Promise.all(servers.map((s) => new Promise<void>((r) => { s.closeAllConnections(); s.close(() => r()); }))).then(() => undefined),
  };
}
