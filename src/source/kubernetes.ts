// The `kubernetes` source: lists and watches v1 Services, discovery.k8s.io/v1 EndpointSlices and
// this node's v1 Node, and emits the SourceEvents of objects.ts.
//
// What was verified in @kubernetes/client-node 1.4.0 (dist/cache.js, informer.js, watch.js), and
// why this file uses the library for KubeConfig and authentication but runs its own list/watch
// loop instead of ListWatch/makeInformer:
//  - ListWatch relists on a 410 only if the server also closes the stream: an ERROR event with
//    code 410 just clears its resourceVersion, and an HTTP 410 on the watch request does relist.
//    That part is fine.
//  - Any other failure (connection refused, a dropped socket, which node-fetch reports as an error
//    "Premature close", HTTP 5xx, a failed list) calls the `error` callbacks and stops for good:
//    no retry and no backoff. A caller has to restart it, and a clean end reconnects at once, so
//    a server that accepts and closes makes it spin. (Checked against a local server that destroys
//    the watch socket: one "Premature close" error callback, and no second watch request.)
//  - It never tells when a (re)list has completed, so the `synced` event with the full key set
//    cannot be derived from it. It does emit deletes for objects missing from a relist.
//  - It does not ask for bookmarks: allowWatchBookmarks is never sent, although a BOOKMARK event
//    does update its resourceVersion. It sends no timeoutSeconds and does not page lists.
//  - stop() during a list does not stop it: once the list resolves, doneHandler opens the watch
//    anyway. That connection stays open, so the process cannot exit.
//  - Watch.watch() only returns its AbortController once the response headers have arrived. A
//    request still connecting cannot be cancelled. Its 30 s timeout signal is overwritten on the
//    next line, so it is dead code. The body of a non-200 response (the Status saying why) is
//    dropped.
// So each kind gets a small reflector loop here: a paged list (rv="" after a 410), then
// watch?resourceVersion=&allowWatchBookmarks=true&timeoutSeconds=, resume from the last seen
// resourceVersion after any end of the stream, relist on 410 (HTTP status or ERROR event) and on
// ResourceVersionTooLarge. Retries use an exponential backoff (min doubling to max, ±10 %
// jitter) that resets once a watch delivers an event. Requests go through node:http/https with
// the agent, headers and credentials that KubeConfig.applyToHTTPSOptions builds: the same call
// the library's own Watch uses, so TLS, tokens, exec/OIDC plugins and proxy-url behave alike.
// Every request carries an AbortSignal, so stop() ends connections that are still connecting.

import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../observe/log.js';
import { decodeObject } from './decode.js';
import { objectKey, type ProxyObject, type Source, type SourceEvent } from './objects.js';

export interface KubernetesSourceOptions {
  /** Path of a kubeconfig file. Without it and without inCluster: $KUBECONFIG, else in-cluster if detected. */
  kubeconfig?: string;
  /** Use the pod's service account (KUBERNETES_SERVICE_HOST/PORT and its token and CA files). */
  inCluster?: boolean;
  /** This node's name: only its Node object is watched. */
  nodeName: string;
  logger: Logger;
  /** First retry delay after a failure; default 500 ms. */
  minBackoffMs?: number;
  /** Retry delay cap; default 30 s. */
  maxBackoffMs?: number;
}

export type KubernetesSourceErrorCode =
  | 'EKUBECONFIG' // the kubeconfig file cannot be read or is unusable
  | 'EINCLUSTER' // in-cluster configuration requested but the service account is not there
  | 'EOPTIONS' // the options contradict each other or lack something
  | 'ESTATE'; // start() called twice, or after stop()

/** A configuration error: the message names the file (or option) to fix. */
export class KubernetesSourceError extends Error {
  constructor(
    readonly code: KubernetesSourceErrorCode,
    /** The file at fault, or null when an option is. */
    readonly file: string | null,
    message: string,
  ) {
    super(message);
    this.name = 'KubernetesSourceError';
  }
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
const LIST_PAGE_SIZE = 500;
/** A list response must make progress at least this often. */
const LIST_IDLE_MS = 60_000;
/** With bookmarks the API server writes about once a minute; silence this long means a dead peer. */
const WATCH_IDLE_MS = 150_000;
/** A watch that lived this long counts as a success even without events. */
const HEALTHY_WATCH_MS = 60_000;

interface KindSpec {
  kind: ProxyObject['kind'];
  apiVersion: string;
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function metadataOf(raw: unknown): Obj {
  return isObj(raw) && isObj(raw['metadata']) ? raw['metadata'] : {};
}

function resourceVersionOf(raw: unknown): string {
  const rv = metadataOf(raw)['resourceVersion'];
  return typeof rv === 'string' ? rv : '';
}

/** The objectKey of a raw object that may not decode, or null when it carries no name. */
function rawKey(kind: ProxyObject['kind'], raw: unknown): string | null {
  const md = metadataOf(raw);
  const name = md['name'];
  if (typeof name !== 'string' || name === '') return null;
  if (kind === 'Node') return `Node/${name}`;
  const ns = typeof md['namespace'] === 'string' && md['namespace'] !== '' ? md['namespace'] : 'default';
  return `${kind}/${ns}/${name}`;
}

function describeError(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A non-2xx answer; `status` is the HTTP code, `reason` the Status reason when one came back. */
class ApiError extends Error {
  constructor(readonly status: number, readonly reason: string, message: string) {
    super(message);
  }
}

/** Reads a Status body for its message; never throws. */
async function readStatus(res: http.IncomingMessage): Promise<ApiError> {
  let text = '';
  try {
    for await (const chunk of res) text += String(chunk);
  } catch {
    // The message is a courtesy; the status code is what matters.
  }
  let reason = '';
  let message = text.slice(0, 300);
  try {
    const st: unknown = JSON.parse(text);
    if (isObj(st)) {
      if (typeof st['reason'] === 'string') reason = st['reason'];
      if (typeof st['message'] === 'string') message = st['message'];
    }
  } catch {
    // Not a Status (a proxy's HTML page, say): keep the raw text.
  }
  return new ApiError(res.statusCode ?? 0, reason, `HTTP ${res.statusCode} ${reason} ${message}`.trim());
}

/** GET requests to the API server, authenticated the way KubeConfig says. */
class ApiClient {
  constructor(private readonly kc: KubeConfig, private readonly server: string) {}

  /** Resolves with the response once its headers arrive; rejects on connection errors and aborts. */
  async open(path: string, query: URLSearchParams, signal: AbortSignal, idleMs: number): Promise<http.IncomingMessage> {
    const opts: https.RequestOptions = {};
    await this.kc.applyToHTTPSOptions(opts);
    signal.throwIfAborted();
    const url = new URL(`${this.server}${path}?${query.toString()}`);
    const mod = url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.request(url, {
        method: 'GET',
        agent: opts.agent,
        auth: opts.auth,
        headers: { ...(opts.headers as http.OutgoingHttpHeaders | undefined), accept: 'application/json' },
        signal,
      }, resolve);
      req.on('error', reject);
      req.on('socket', (s) => s.setKeepAlive(true, 30_000));
      req.setTimeout(idleMs, () => req.destroy(new Error(`no data from the API server for ${idleMs / 1000} s`)));
      req.end();
    });
  }

  /** Fetches one JSON document; throws ApiError on a non-200 answer. */
  async getJSON(path: string, query: URLSearchParams, signal: AbortSignal): Promise<unknown> {
    const res = await this.open(path, query, signal, LIST_IDLE_MS);
    if (res.statusCode !== 200) throw await readStatus(res);
    res.setEncoding('utf8');
    let text = '';
    for await (const chunk of res) text += String(chunk);
    return JSON.parse(text);
  }
}

class Backoff {
  private nextMs: number;
  constructor(private readonly minMs: number, private readonly maxMs: number) {
    this.nextMs = minMs;
  }
  take(): number {
    const d = this.nextMs;
    this.nextMs = Math.min(this.maxMs, this.nextMs * 2);
    return Math.round(d * (0.9 + Math.random() * 0.2));
  }
  reset(): void {
    this.nextMs = this.minMs;
  }
}

type Emit = (e: SourceEvent) => void;

/** List + watch of one kind, forever, until stop(). */
class Reflector {
  private rv = '';
  /** Keys upserted and not deleted since, with the resourceVersion of that upsert. */
  private readonly known = new Map<string, string>();
  /** Invalid objects already warned about, by key, with the resourceVersion warned about. */
  private readonly warned = new Map<string, string>();
  private controller: AbortController | null = null;
  private sleeper: { timer: NodeJS.Timeout; wake: () => void } | null = null;
  private stopped = false;
  private readonly backoff: Backoff;
  private readonly log: Logger;
  done: Promise<void> = Promise.resolve();

  constructor(private readonly spec: KindSpec, private readonly api: ApiClient, private readonly emit: Emit, logger: Logger, minMs: number, maxMs: number) {
    this.backoff = new Backoff(minMs, maxMs);
    this.log = logger.child({ kind: spec.kind });
  }

  start(): void {
    this.done = this.loop();
  }

  stop(): Promise<void> {
    this.stopped = true;
    this.controller?.abort();
    if (this.sleeper) {
      clearTimeout(this.sleeper.timer);
      this.sleeper.wake();
    }
    return this.done;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      if (this.rv === '') {
        try {
          await this.list();
        } catch (e) {
          if (this.stopped) break;
          const delay = this.backoff.take();
          this.log.warn('list failed, retrying', { path: this.spec.path, error: describeError(e), retryMs: delay });
          await this.sleep(delay);
          continue;
        }
      }
      const expired = await this.watch();
      if (this.stopped) break;
      if (expired) {
        this.log.info('resourceVersion expired, relisting', { resourceVersion: this.rv });
        this.rv = '';
      }
      await this.sleep(this.backoff.take());
    }
  }

  /** A controller for the next request, already aborted if stop() came first. */
  private newController(): AbortController {
    const ctl = (this.controller = new AbortController());
    if (this.stopped) ctl.abort();
    return ctl;
  }

  private sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        this.sleeper = null;
        resolve();
      };
      this.sleeper = { timer: setTimeout(wake, ms), wake };
    });
  }

  private query(extra: Record<string, string>): URLSearchParams {
    const q = new URLSearchParams();
    if (this.spec.labelSelector) q.set('labelSelector', this.spec.labelSelector);
    if (this.spec.fieldSelector) q.set('fieldSelector', this.spec.fieldSelector);
    for (const [k, v] of Object.entries(extra)) q.set(k, v);
    return q;
  }

  /** Lists every page, then reconciles: upserts, deletes for what vanished, one `synced`. Throws on any failure. */
  private async list(): Promise<void> {
    const ctl = this.newController();
    const items: unknown[] = [];
    let cont = '';
    let rv = '';
    do {
      const page = await this.api.getJSON(this.spec.path, this.query({ limit: String(LIST_PAGE_SIZE), ...(cont ? { continue: cont } : {}) }), ctl.signal);
      if (!isObj(page) || (page['items'] !== null && page['items'] !== undefined && !Array.isArray(page['items']))) {
        throw new Error(`list of ${this.spec.path} is not a ${this.spec.kind}List`);
      }
      items.push(...((page['items'] as unknown[] | null | undefined) ?? []));
      const md = metadataOf(page);
      cont = typeof md['continue'] === 'string' ? md['continue'] : '';
      rv = typeof md['resourceVersion'] === 'string' ? md['resourceVersion'] : '';
    } while (cont !== '');
    if (this.stopped) return;

    const present = new Set<string>();
    for (const raw of items) {
      const key = this.consider(raw);
      if (key !== null) present.add(key);
    }
    for (const key of [...this.known.keys()]) if (!present.has(key)) this.forget(key);
    if (this.warned.size > 0) {
      const listed = new Set(items.map((raw) => rawKey(this.spec.kind, raw)));
      for (const key of [...this.warned.keys()]) if (!listed.has(key)) this.warned.delete(key);
    }
    this.emit({ type: 'synced', kind: this.spec.kind, keys: [...present] });
    this.rv = rv;
    this.log.debug('listed', { objects: items.length, valid: present.size, resourceVersion: rv });
  }

  /**
   * Decodes one object from a list or an ADDED/MODIFIED event and emits what changed. Returns its
   * key when it is valid and proxied, null when it must be treated as absent.
   */
  private consider(raw: unknown): string | null {
    // List items carry no kind/apiVersion; watch events do.
    const full = isObj(raw) ? { kind: this.spec.kind, apiVersion: this.spec.apiVersion, ...raw } : raw;
    const rv = resourceVersionOf(raw);
    const res = decodeObject(full);
    if (res.status === 'ok') {
      const key = objectKey(res.object);
      this.warned.delete(key);
      if (rv === '' || this.known.get(key) !== rv) {
        this.known.set(key, rv);
        this.emit({ type: 'upsert', object: res.object });
      }
      return key;
    }
    const key = res.key ?? rawKey(this.spec.kind, raw);
    if (res.status === 'invalid') {
      const name = key ?? res.error.object;
      if (rv === '' || this.warned.get(name) !== rv) {
        this.warned.set(name, rv);
        this.log.warn('skipping invalid object', { object: name, field: res.error.field, problem: res.error.problem });
      }
    } else {
      this.log.debug('ignoring object', { object: key, reason: res.reason });
    }
    if (key !== null) this.forget(key);
    return null;
  }

  private forget(key: string): void {
    if (this.known.delete(key)) this.emit({ type: 'delete', kind: this.spec.kind, key });
  }

  /** One watch connection, from this.rv. Resolves true when the resourceVersion expired. Never throws. */
  private async watch(): Promise<boolean> {
    const ctl = this.newController();
    const started = Date.now();
    // Like client-go: let the server end the watch after 5-10 minutes, spreading reconnections.
    const timeoutSeconds = 300 + Math.floor(Math.random() * 300);
    const q = this.query({ watch: 'true', resourceVersion: this.rv, allowWatchBookmarks: 'true', timeoutSeconds: String(timeoutSeconds) });
    let res: http.IncomingMessage;
    try {
      res = await this.api.open(this.spec.path, q, ctl.signal, WATCH_IDLE_MS);
    } catch (e) {
      if (!this.stopped) this.log.warn('watch failed to connect', { path: this.spec.path, error: describeError(e) });
      return false;
    }
    if (res.statusCode !== 200) {
      const err = await readStatus(res);
      ctl.abort();
      if (err.status === 410) return true;
      if (!this.stopped) this.log.warn('watch refused', { path: this.spec.path, error: err.message });
      return false;
    }

    return new Promise<boolean>((resolve) => {
      let expired = false;
      let events = 0;
      let finished = false;
      let buf = '';
      const finish = (why: string): void => {
        if (finished) return;
        finished = true;
        ctl.abort();
        if (events > 0 || Date.now() - started >= HEALTHY_WATCH_MS) this.backoff.reset();
        if (!this.stopped) this.log.debug('watch ended', { why, events, resourceVersion: this.rv });
        resolve(expired);
      };
      const onLine = (line: string): void => {
        let ev: unknown;
        try {
          ev = JSON.parse(line);
        } catch {
          this.log.warn('watch stream is not JSON, reconnecting', { path: this.spec.path, line: line.slice(0, 200) });
          return finish('bad line');
        }
        const type = isObj(ev) ? ev['type'] : undefined;
        const obj = isObj(ev) ? ev['object'] : undefined;
        if (type === 'ERROR') {
          const st = isObj(obj) ? obj : {};
          const causes = isObj(st['details']) && Array.isArray(st['details']['causes']) ? st['details']['causes'] : [];
          if (st['code'] === 410 || st['reason'] === 'Expired' || st['reason'] === 'Gone'
            || causes.some((c) => isObj(c) && c['reason'] === 'ResourceVersionTooLarge')) {
            expired = true;
          } else {
            this.log.warn('watch error event', { path: this.spec.path, code: st['code'], reason: st['reason'], message: st['message'] });
          }
          return finish('error event');
        }
        events++;
        if (type === 'ADDED' || type === 'MODIFIED') {
          this.consider(obj);
        } else if (type === 'DELETED') {
          const key = rawKey(this.spec.kind, obj);
          if (key !== null) {
            this.warned.delete(key);
            this.forget(key);
          }
        } else if (type !== 'BOOKMARK') {
          this.log.debug('unknown watch event type', { type });
        }
        const rv = resourceVersionOf(obj);
        if (rv !== '') this.rv = rv;
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let start = 0;
        let nl: number;
        while (!finished && (nl = buf.indexOf('\n', start)) >= 0) {
          const line = buf.slice(start, nl).trim();
          start = nl + 1;
          if (line !== '') onLine(line);
        }
        buf = buf.slice(start);
      });
      res.on('end', () => finish('closed by server'));
      res.on('error', (e) => finish(describeError(e)));
      res.on('close', () => finish('connection closed'));
    });
  }
}

function readable(file: string): string | null {
  try {
    fs.accessSync(file, fs.constants.R_OK);
    return null;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? describeError(e);
  }
}

/** Loads and checks the configuration; throws KubernetesSourceError naming the file at fault. */
function loadConfig(opts: KubernetesSourceOptions): { kc: KubeConfig; server: string } {
  if (!opts.nodeName) throw new KubernetesSourceError('EOPTIONS', null, 'nodeName is required: the source watches this node\'s Node object');
  if (opts.kubeconfig && opts.inCluster) throw new KubernetesSourceError('EOPTIONS', opts.kubeconfig, 'give either a kubeconfig file or in-cluster configuration, not both');
  const envFile = (process.env['KUBECONFIG'] ?? '').split(':').find((f) => f !== '');
  const file = opts.kubeconfig ?? (opts.inCluster ? undefined : envFile);
  const kc = new KubeConfig();
  let origin: string;
  if (file !== undefined) {
    origin = file;
    const problem = readable(file);
    if (problem !== null) throw new KubernetesSourceError('EKUBECONFIG', file, `kubeconfig ${file}: cannot read: ${problem}`);
    try {
      kc.loadFromFile(file);
    } catch (e) {
      throw new KubernetesSourceError('EKUBECONFIG', file, `kubeconfig ${file}: ${describeError(e)}`);
    }
  } else if (opts.inCluster || process.env['KUBERNETES_SERVICE_HOST']) {
    origin = 'in-cluster configuration';
    if (!process.env['KUBERNETES_SERVICE_HOST'] || !process.env['KUBERNETES_SERVICE_PORT']) {
      throw new KubernetesSourceError('EINCLUSTER', null, 'in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not running in a pod?)');
    }
    for (const f of [`${SA_DIR}/token`, `${SA_DIR}/ca.crt`]) {
      const problem = readable(f);
      if (problem !== null) throw new KubernetesSourceError('EINCLUSTER', f, `in-cluster configuration: cannot read ${f}: ${problem}`);
    }
    kc.loadFromCluster();
  } else {
    throw new KubernetesSourceError('EOPTIONS', null, 'no kubeconfig given, $KUBECONFIG unset and not running in a cluster');
  }

  const cluster = kc.getCurrentCluster();
  if (cluster === null) throw new KubernetesSourceError('EKUBECONFIG', file ?? null, `${origin}: current-context ${JSON.stringify(kc.getCurrentContext())} names no cluster`);
  let url: URL;
  try {
    url = new URL(cluster.server);
  } catch {
    throw new KubernetesSourceError('EKUBECONFIG', file ?? null, `${origin}: cluster ${cluster.name}: server ${JSON.stringify(cluster.server)} is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new KubernetesSourceError('EKUBECONFIG', file ?? null, `${origin}: cluster ${cluster.name}: server ${cluster.server} is neither http nor https`);
  }
  if (url.protocol === 'http:' && !cluster.skipTLSVerify && !cluster.proxyUrl) {
    // The client library refuses plain HTTP unless told it is deliberate.
    throw new KubernetesSourceError('EKUBECONFIG', file ?? null, `${origin}: cluster ${cluster.name}: plain http server needs insecure-skip-tls-verify: true`);
  }
  const user = kc.getCurrentUser();
  for (const f of [cluster.caFile, user?.certFile, user?.keyFile]) {
    const problem = f ? readable(f) : null;
    if (f && problem !== null) throw new KubernetesSourceError('EKUBECONFIG', f, `${origin}: cannot read ${f}: ${problem}`);
  }
  return { kc, server: cluster.server.replace(/\/+$/, '') };
}

/**
 * Watches the API server. The constructor throws KubernetesSourceError for configuration errors;
 * start() resolves once the watchers are launched (initial sync shows up as `synced` events) and
 * throws KubernetesSourceError (ESTATE) if called twice. API errors never surface as exceptions:
 * they are logged and retried with backoff.
 */
export class KubernetesSource implements Source {
  private readonly api: ApiClient;
  private readonly specs: KindSpec[];
  private reflectors: Reflector[] = [];
  private state: 'new' | 'started' | 'stopped' = 'new';

  constructor(private readonly opts: KubernetesSourceOptions) {
    const { kc, server } = loadConfig(opts);
    this.api = new ApiClient(kc, server);
    this.specs = [
      // Headless services are filtered server-side as kube-proxy does; the service-proxy-name
      // label is left to the model, which needs to see it to report skipped services.
      { kind: 'Service', apiVersion: 'v1', path: '/api/v1/services', labelSelector: '!service.kubernetes.io/headless' },
      { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', path: '/apis/discovery.k8s.io/v1/endpointslices' },
      { kind: 'Node', apiVersion: 'v1', path: '/api/v1/nodes', fieldSelector: `metadata.name=${opts.nodeName}` },
    ];
  }

  async start(onEvent: (e: SourceEvent) => void): Promise<void> {
    if (this.state !== 'new') throw new KubernetesSourceError('ESTATE', null, `kubernetes source already ${this.state}`);
    this.state = 'started';
    const log = this.opts.logger.child({ source: 'kubernetes' });
    const emit: Emit = (e) => {
      if (this.state !== 'started') return;
      try {
        onEvent(e);
      } catch (err) {
        log.error('event handler failed', { event: e.type, error: describeError(err) });
      }
    };
    const min = this.opts.minBackoffMs ?? 500;
    const max = Math.max(min, this.opts.maxBackoffMs ?? 30_000);
    this.reflectors = this.specs.map((s) => new Reflector(s, this.api, emit, log, min, max));
    for (const r of this.reflectors) r.start();
  }

  /** Closes every connection and timer; resolves when all loops have exited. Never throws. */
  async stop(): Promise<void> {
    this.state = 'stopped';
    await Promise.all(this.reflectors.map((r) => r.stop()));
  }
}
