// One list/watch loop per kind (a "reflector", as client-go calls it): a paged list, then a watch
// that resumes from the last resourceVersion (bookmarks included), relists on 410 Gone, and
// retries everything else with jittered exponential backoff. Why this is not client-node's
// ListWatch is explained in kubernetes.ts.

import * as http from 'node:http';
import * as https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../observe/log.js';
import { decodeObject } from './decode.js';
import { objectKey, type ProxyObject, type SourceEvent } from './objects.js';

const LIST_PAGE_SIZE = 500;
/** A list response must make progress at least this often. */
const LIST_IDLE_MS = 60_000;
/** With bookmarks the API server writes about once a minute; silence this long means a dead peer. */
const WATCH_IDLE_MS = 150_000;
/** A watch that lived this long counts as a success even without events. */
const HEALTHY_WATCH_MS = 60_000;

export interface KindSpec {
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

export function describeError(e: unknown): string {
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
export class ApiClient {
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

export type Emit = (e: SourceEvent) => void;

/** List + watch of one kind, forever, until stop(). */
export class Reflector {
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

  /** The next list must be a consistent read (no resourceVersion): the last one expired. */
  private consistentList = false;

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
        // The watch cache may be behind what expired: read from etcd this time.
        this.consistentList = true;
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
      // As client-go: the first page at resourceVersion 0 (served from the API server's watch
      // cache, not etcd: a DaemonSet's rollout must not read every object from etcd), unless the
      // last resourceVersion expired (then a consistent read); later pages by continue token.
      const first: Record<string, string> = cont === '' ? (this.consistentList ? {} : { resourceVersion: '0' }) : { continue: cont };
      const page = await this.api.getJSON(this.spec.path, this.query({ limit: String(LIST_PAGE_SIZE), ...first }), ctl.signal);
      if (!isObj(page) || (page['items'] !== null && page['items'] !== undefined && !Array.isArray(page['items']))) {
        throw new Error(`list of ${this.spec.path} is not a ${this.spec.kind}List`);
      }
      // One at a time: spreading a 200,000-item page into push() overflows the call stack.
      for (const it of (page['items'] as unknown[] | null | undefined) ?? []) items.push(it);
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
    this.consistentList = false;
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
        if (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED' && type !== 'BOOKMARK') {
          // A 200 whose body is JSON but not watch events (a Status, a proxy's own answer): say
          // so and back off, rather than reconnecting at once, again and again.
          this.log.warn('watch stream is not watch events, reconnecting', { path: this.spec.path, type: typeof type === 'string' ? type : '(none)', line: line.slice(0, 200) });
          return finish('not a watch event');
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

