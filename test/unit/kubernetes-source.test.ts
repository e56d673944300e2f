// The kubernetes source against a local fake API server that speaks the real list/watch wire
// protocol (paged lists, chunked watch streams, resourceVersion resume, bookmarks, 410 as an
// ERROR event or as an HTTP status). Nothing in the client library is mocked.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { KubernetesSource, KubernetesSourceError } from '../../src/source/kubernetes.js';
import { memoryLogger } from '../../src/observe/log.js';
import type { SourceEvent } from '../../src/source/objects.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = Record<string, any>;

const SVC = '/api/v1/services';
const SLICES = '/apis/discovery.k8s.io/v1/endpointslices';
const NODES = '/api/v1/nodes';

interface Watcher {
  res: http.ServerResponse;
  bookmarks: boolean;
  labelSelector: string;
  fieldSelector: string;
}

interface Resource {
  kind: string;
  apiVersion: string;
  objects: Map<string, Obj>;
  events: Array<{ rv: number; type: string; object: Obj }>;
  compactedRv: number;
  watchers: Set<Watcher>;
  expireMode: 'event' | 'http';
  pageSize: number;
  failWatches: boolean;
  hangLists: boolean;
  /** Watches answer 200 with this JSON line (not a watch event) and end. */
  notEvents: string | null;
}

interface Recorded {
  path: string;
  query: URLSearchParams;
  watch: boolean;
}

function matchesLabels(obj: Obj, selector: string): boolean {
  const labels: Record<string, string> = obj['metadata']?.['labels'] ?? {};
  for (const term of selector.split(',').filter((t) => t !== '')) {
    let m: RegExpMatchArray | null;
    if (term.startsWith('!')) {
      if (term.slice(1) in labels) return false;
    } else if ((m = term.match(/^([^!=]+)!=(.*)$/))) {
      if (labels[m[1]!] === m[2]) return false;
    } else if ((m = term.match(/^([^!=]+)==?(.*)$/))) {
      if (labels[m[1]!] !== m[2]) return false;
    } else if (!(term in labels)) {
      return false;
    }
  }
  return true;
}

function matchesFields(obj: Obj, selector: string): boolean {
  for (const term of selector.split(',').filter((t) => t !== '')) {
    const [field, value] = term.split('=');
    const actual = field === 'metadata.name' ? obj['metadata']['name'] : field === 'metadata.namespace' ? obj['metadata']['namespace'] : undefined;
    if (actual !== value) return false;
  }
  return true;
}

/** A tiny API server: one global resourceVersion counter, an event log per resource. */
class FakeApiServer {
  readonly server = http.createServer((req, res) => this.handle(req, res));
  readonly requests: Recorded[] = [];
  private readonly hung = new Set<http.ServerResponse>();
  rv = 100;
  readonly resources: Record<string, Resource> = {
    [SVC]: this.resource('Service', 'v1'),
    [SLICES]: this.resource('EndpointSlice', 'discovery.k8s.io/v1'),
    [NODES]: this.resource('Node', 'v1'),
  };

  private resource(kind: string, apiVersion: string): Resource {
    return { kind, apiVersion, objects: new Map(), events: [], compactedRv: 0, watchers: new Set(), expireMode: 'event', pageSize: 500, failWatches: false, hangLists: false, notEvents: null };
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return (this.server.address() as { port: number }).port;
  }

  /** Resolves when every connection is gone; rejects if some stay open (a leak in the client). */
  async close(ms = 2000): Promise<void> {
    for (const r of this.hung) r.destroy();
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        this.server.closeAllConnections();
        reject(new Error('server connections still open after the source stopped'));
      }, ms);
      this.server.close(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  requestsFor(p: string, watch: boolean): Recorded[] {
    return this.requests.filter((r) => r.path === p && r.watch === watch);
  }

  watching(p: string): number {
    return this.resources[p]!.watchers.size;
  }

  /** Creates or replaces an object, as the API server would: new resourceVersion, event to watchers. */
  put(p: string, obj: Obj, opts: { silent?: boolean } = {}): number {
    const r = this.resources[p]!;
    const o = structuredClone(obj);
    o['metadata']['resourceVersion'] = String(++this.rv);
    const id = `${o['metadata']['namespace'] ?? ''}/${o['metadata']['name']}`;
    const type = r.objects.has(id) ? 'MODIFIED' : 'ADDED';
    r.objects.set(id, o);
    if (!opts.silent) this.record(r, type, o);
    return this.rv;
  }

  /** Deletes an object; `silent` loses the event, as if it had been compacted away while disconnected. */
  remove(p: string, namespace: string, name: string, opts: { silent?: boolean } = {}): number {
    const r = this.resources[p]!;
    const id = `${namespace}/${name}`;
    const o = structuredClone(r.objects.get(id));
    assert.ok(o, `no ${id} to delete`);
    r.objects.delete(id);
    o['metadata']['resourceVersion'] = String(++this.rv);
    if (!opts.silent) this.record(r, 'DELETED', o);
    return this.rv;
  }

  bookmark(p: string): number {
    const r = this.resources[p]!;
    const rv = ++this.rv;
    for (const w of r.watchers) {
      if (w.bookmarks) this.send(w, 'BOOKMARK', { kind: r.kind, apiVersion: r.apiVersion, metadata: { resourceVersion: String(rv) } });
    }
    return rv;
  }

  /** Forgets history: watches from an older resourceVersion get 410. */
  compact(p: string): void {
    this.resources[p]!.compactedRv = this.rv;
  }

  /** Kills the TCP connections of the open watches (no clean end of the chunked stream). */
  dropWatches(p: string): void {
    for (const w of this.resources[p]!.watchers) w.res.socket?.destroy();
    this.resources[p]!.watchers.clear();
  }

  /** Ends the open watches cleanly, as the API server does at timeoutSeconds. */
  endWatches(p: string): void {
    for (const w of this.resources[p]!.watchers) w.res.end();
    this.resources[p]!.watchers.clear();
  }

  private record(r: Resource, type: string, object: Obj): void {
    r.events.push({ rv: this.rv, type, object });
    for (const w of r.watchers) {
      if (matchesLabels(object, w.labelSelector) && matchesFields(object, w.fieldSelector)) this.send(w, type, object);
    }
  }

  private send(w: Watcher, type: string, object: Obj): void {
    w.res.write(JSON.stringify({ type, object }) + '\n');
  }

  private status(res: http.ServerResponse, code: number, reason: string, message: string): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code }));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const q = url.searchParams;
    const watch = q.get('watch') === 'true';
    this.requests.push({ path: url.pathname, query: q, watch });
    const r = this.resources[url.pathname];
    if (!r) return this.status(res, 404, 'NotFound', `no resource ${url.pathname}`);
    const labelSelector = q.get('labelSelector') ?? '';
    const fieldSelector = q.get('fieldSelector') ?? '';
    const visible = (o: Obj): boolean => matchesLabels(o, labelSelector) && matchesFields(o, fieldSelector);

    if (!watch) {
      if (r.hangLists) {
        this.hung.add(res);
        return;
      }
      const all = [...r.objects.values()].filter(visible);
      const offset = Number(q.get('continue') ?? '0');
      const limit = Math.min(Number(q.get('limit') ?? '100000'), r.pageSize);
      const page = all.slice(offset, offset + limit);
      const more = offset + limit < all.length;
      // List items carry no kind/apiVersion, like the real API server's.
      const items = page.map((o) => {
        const { kind: _k, apiVersion: _a, ...rest } = o;
        return rest;
      });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: `${r.kind}List`, apiVersion: r.apiVersion, metadata: { resourceVersion: String(this.rv), ...(more ? { continue: String(offset + limit) } : {}) }, items }));
      return;
    }

    if (r.failWatches) return this.status(res, 500, 'InternalError', 'etcd is having a bad day');
    if (r.notEvents !== null) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(r.notEvents + '\n');
      return;
    }
    const from = Number(q.get('resourceVersion') ?? '0');
    if (from < r.compactedRv) {
      const message = `too old resource version: ${from} (${r.compactedRv})`;
      if (r.expireMode === 'http') return this.status(res, 410, 'Gone', message);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason: 'Expired', code: 410 } }) + '\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = { res, bookmarks: q.get('allowWatchBookmarks') === 'true', labelSelector, fieldSelector };
    for (const ev of r.events) if (ev.rv > from && visible(ev.object)) this.send(w, ev.type, ev.object);
    r.watchers.add(w);
    res.on('close', () => r.watchers.delete(w));
  }
}

function service(name: string, over: Obj = {}, labels: Record<string, string> = {}): Obj {
  return {
    kind: 'Service',
    apiVersion: 'v1',
    metadata: { name, namespace: 'default', labels },
    spec: { type: 'ClusterIP', clusterIP: '10.96.0.10', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }], ...over },
  };
}

function slice(name: string, svc: string, ip = '10.1.0.5'): Obj {
  return {
    kind: 'EndpointSlice',
    apiVersion: 'discovery.k8s.io/v1',
    metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': svc } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: [ip], conditions: { ready: true }, nodeName: 'node-a' }],
  };
}

function node(name: string, ip: string): Obj {
  return {
    kind: 'Node',
    apiVersion: 'v1',
    metadata: { name, labels: { 'topology.kubernetes.io/zone': 'z1' } },
    status: { addresses: [{ type: 'InternalIP', address: ip }] },
  };
}

async function waitFor(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function writeKubeconfig(dir: string, port: number): string {
  const file = path.join(dir, 'kubeconfig');
  fs.writeFileSync(file, [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: fake',
    '  cluster:',
    `    server: http://127.0.0.1:${port}`,
    '    insecure-skip-tls-verify: true',
    'users:',
    '- name: nobody',
    '  user: {}',
    'contexts:',
    '- name: fake',
    '  context: {cluster: fake, user: nobody}',
    'current-context: fake',
    '',
  ].join('\n'));
  return file;
}

function handleCounts(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1;
  return counts;
}

/** Seeds the fake API server with the objects of case 1, starts a source against it. */
async function setup(seed: (api: FakeApiServer) => void = seedDefault, backoff = { minBackoffMs: 20, maxBackoffMs: 200 }) {
  const before = handleCounts();
  const api = new FakeApiServer();
  seed(api);
  const port = await api.listen();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rudder-k8s-'));
  const logger = memoryLogger();
  const source = new KubernetesSource({ kubeconfig: writeKubeconfig(dir, port), nodeName: 'node-a', logger, ...backoff });
  const events: SourceEvent[] = [];
  await source.start((e) => events.push(e));
  const keysOf = (type: SourceEvent['type'], kind?: string): string[] =>
    events.flatMap((e) => {
      if (e.type !== type) return [];
      if (e.type === 'upsert') return kind === undefined || e.object.kind === kind ? [keyOfUpsert(e)] : [];
      if (e.type === 'delete') return kind === undefined || e.kind === kind ? [e.key] : [];
      return [];
    });
  const synced = (kind: string): Extract<SourceEvent, { type: 'synced' }>[] =>
    events.filter((e): e is Extract<SourceEvent, { type: 'synced' }> => e.type === 'synced' && e.kind === kind);
  const teardown = async (): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    const stopped = await Promise.race([
      source.stop().then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 2000))),
    ]);
    clearTimeout(timer);
    // Fails (after forcing them closed) if the source left connections open.
    const closeError = await api.close().then(() => null, (e: unknown) => e);
    fs.rmSync(dir, { recursive: true, force: true });
    assert.ok(stopped, 'stop() did not resolve within 2 s');
    assert.equal(closeError, null);
    // Everything the source opened is gone: no sockets, no timers beyond what was there before.
    // libuv reports a closed handle until its close callback has run, so allow a moment.
    const leaks = (): string[] => {
      const after = handleCounts();
      return ['TCPSocketWrap', 'TCPServerWrap', 'Timeout']
        .filter((kind) => (after[kind] ?? 0) > (before[kind] ?? 0))
        .map((kind) => `${kind}: before ${before[kind] ?? 0}, after ${after[kind] ?? 0}`);
    };
    await waitFor(() => leaks().length === 0, 'handles to close', 500).catch(() => assert.deepEqual(leaks(), [], 'handles left open'));
  };
  const initialSync = async (): Promise<void> => {
    await waitFor(() => ['Service', 'EndpointSlice', 'Node'].every((k) => synced(k).length > 0), 'initial sync of every kind');
  };
  return { api, source, events, logger, keysOf, synced, teardown, initialSync };
}

function keyOfUpsert(e: Extract<SourceEvent, { type: 'upsert' }>): string {
  const o = e.object;
  return o.kind === 'Node' ? `Node/${o.name}` : `${o.kind}/${o.namespace}/${o.name}`;
}

function seedDefault(api: FakeApiServer): void {
  api.put(SVC, service('web'));
  api.put(SVC, service('db', { clusterIP: '10.96.0.11', clusterIPs: ['10.96.0.11'], ports: [{ name: 'pg', port: 5432, protocol: 'TCP' }] }));
  api.put(SVC, service('hl', {}, { 'service.kubernetes.io/headless': '' }));
  api.put(SVC, service('none', { clusterIP: 'None', clusterIPs: ['None'] }));
  api.put(SVC, service('ext', { type: 'ExternalName', externalName: 'example.com', clusterIP: '', clusterIPs: [] }));
  api.put(SVC, service('bad', { clusterIP: '10.96.0.12', clusterIPs: ['10.96.0.12'], ports: [{ name: 'http', port: 70000, protocol: 'TCP' }] }));
  api.put(SVC, service('proxied-elsewhere', { clusterIP: '10.96.0.13', clusterIPs: ['10.96.0.13'] }, { 'service.kubernetes.io/service-proxy-name': 'other' }));
  api.put(SLICES, slice('web-1', 'web'));
  api.put(NODES, node('node-a', '192.168.0.10'));
  api.put(NODES, node('node-b', '192.168.0.11'));
  // Small pages, so the list follows `continue` tokens.
  api.resources[SVC]!.pageSize = 2;
}

const invalidWarnings = (lines: string[], name: string): string[] =>
  lines.filter((l) => l.includes('WARN') && l.includes('skipping invalid object') && l.includes(`object=Service/default/${name}`));

test('initial list: upserts and synced per kind, headless/ExternalName skipped, invalid warned', async () => {
  const t = await setup();
  try {
    await t.initialSync();
    assert.deepEqual(t.keysOf('upsert', 'Service').sort(), ['Service/default/db', 'Service/default/proxied-elsewhere', 'Service/default/web']);
    assert.deepEqual(t.synced('Service').map((s) => [...s.keys].sort()), [['Service/default/db', 'Service/default/proxied-elsewhere', 'Service/default/web']]);
    assert.deepEqual(t.keysOf('upsert', 'EndpointSlice'), ['EndpointSlice/default/web-1']);
    assert.deepEqual(t.synced('EndpointSlice').map((s) => s.keys), [['EndpointSlice/default/web-1']]);
    assert.deepEqual(t.keysOf('upsert', 'Node'), ['Node/node-a']);
    assert.deepEqual(t.synced('Node').map((s) => s.keys), [['Node/node-a']]);
    assert.deepEqual(t.keysOf('delete'), []);
    // Each kind's synced comes after its upserts.
    for (const kind of ['Service', 'EndpointSlice', 'Node']) {
      const syncedAt = t.events.findIndex((e) => e.type === 'synced' && e.kind === kind);
      const lastUpsert = t.events.reduce((last, e, i) => (e.type === 'upsert' && e.object.kind === kind ? i : last), -1);
      assert.ok(lastUpsert < syncedAt, `${kind}: synced before its upserts`);
    }
    // The decoded objects are the trimmed shapes.
    const web = t.events.find((e) => e.type === 'upsert' && e.object.kind === 'Service' && e.object.name === 'web');
    assert.ok(web?.type === 'upsert' && web.object.kind === 'Service');
    assert.deepEqual(web.object.ports, [{ name: 'http', protocol: 'TCP', port: 80, nodePort: 0, targetPort: 8080 }]);
    const proxied = t.events.find((e) => e.type === 'upsert' && e.object.kind === 'Service' && e.object.name === 'proxied-elsewhere');
    assert.ok(proxied?.type === 'upsert' && proxied.object.kind === 'Service' && proxied.object.proxyName === 'other');

    const warns = invalidWarnings(t.logger.lines, 'bad');
    assert.equal(warns.length, 1, t.logger.lines.join('\n'));
    assert.match(warns[0]!, /field=spec\.ports\[0\]\.port/);
    assert.match(warns[0]!, /70000/);
    assert.equal(t.logger.lines.filter((l) => l.includes('WARN')).length, 1, t.logger.lines.join('\n'));

    // The requests: selectors as kube-proxy sends them, paged lists, then watches from the list's version.
    const svcLists = t.api.requestsFor(SVC, false);
    assert.equal(svcLists.length, 3, 'services listed in pages of 2 (6 objects once the headless one is filtered out)');
    for (const r of svcLists) assert.equal(r.query.get('labelSelector'), '!service.kubernetes.io/headless');
    assert.deepEqual(svcLists.map((r) => r.query.get('continue')), [null, '2', '4']);
    assert.equal(t.api.requestsFor(NODES, false)[0]!.query.get('fieldSelector'), 'metadata.name=node-a');
    assert.equal(t.api.requestsFor(SLICES, false)[0]!.query.get('labelSelector'), null);
    await waitFor(() => [SVC, SLICES, NODES].every((p) => t.api.watching(p) === 1), 'a watch per kind');
    for (const p of [SVC, SLICES, NODES]) {
      const w = t.api.requestsFor(p, true);
      assert.equal(w.length, 1);
      assert.equal(w[0]!.query.get('resourceVersion'), String(t.api.rv));
      assert.equal(w[0]!.query.get('allowWatchBookmarks'), 'true');
      assert.ok(Number(w[0]!.query.get('timeoutSeconds')) >= 300);
    }
    assert.equal(t.api.requestsFor(SVC, true)[0]!.query.get('labelSelector'), '!service.kubernetes.io/headless');
    assert.equal(t.api.requestsFor(NODES, true)[0]!.query.get('fieldSelector'), 'metadata.name=node-a');
  } finally {
    await t.teardown();
  }
});

test('watch: ADDED/MODIFIED/DELETED become upsert/upsert/delete; a BOOKMARK moves the next watch\'s resourceVersion', async () => {
  const t = await setup();
  try {
    await t.initialSync();
    await waitFor(() => t.api.watching(SVC) === 1, 'services watch');
    const n = t.events.length;
    t.api.put(SVC, service('api', { clusterIP: '10.96.0.20', clusterIPs: ['10.96.0.20'] }));
    await waitFor(() => t.events.length === n + 1, 'upsert for ADDED');
    t.api.put(SVC, service('api', { clusterIP: '10.96.0.20', clusterIPs: ['10.96.0.20'], ports: [{ name: 'http', port: 8081, protocol: 'TCP' }] }));
    await waitFor(() => t.events.length === n + 2, 'upsert for MODIFIED');
    t.api.remove(SVC, 'default', 'api');
    await waitFor(() => t.events.length === n + 3, 'delete for DELETED');
    const [added, modified, deleted] = t.events.slice(n);
    assert.ok(added?.type === 'upsert' && added.object.kind === 'Service' && added.object.name === 'api');
    assert.ok(modified?.type === 'upsert' && modified.object.kind === 'Service');
    assert.equal(modified.object.ports[0]!.port, 8081);
    assert.deepEqual(deleted, { type: 'delete', kind: 'Service', key: 'Service/default/api' });

    // Node and slice watches deliver too.
    t.api.put(NODES, node('node-a', '192.168.0.99'));
    t.api.put(NODES, node('node-b', '192.168.0.98'));
    t.api.put(SLICES, slice('web-1', 'web', '10.1.0.6'));
    await waitFor(() => t.events.length === n + 5, 'node and slice upserts');
    const node2 = t.events[n + 3];
    assert.ok(node2?.type === 'upsert' && node2.object.kind === 'Node' && node2.object.name === 'node-a');
    assert.deepEqual(node2.object.addresses, ['192.168.0.99']);

    const bookmarkRv = t.api.bookmark(SVC);
    t.api.endWatches(SVC);
    await waitFor(() => t.api.requestsFor(SVC, true).length === 2 && t.api.watching(SVC) === 1, 'services watch resumed');
    assert.equal(t.api.requestsFor(SVC, true)[1]!.query.get('resourceVersion'), String(bookmarkRv));
    assert.equal(t.api.requestsFor(SVC, false).length, 3, 'no relist');
    assert.equal(t.events.length, n + 5, 'a bookmark emits nothing');
  } finally {
    await t.teardown();
  }
});

test('dropped watch connection: resumes from the last resourceVersion without relisting', async () => {
  const t = await setup();
  try {
    await t.initialSync();
    await waitFor(() => t.api.watching(SVC) === 1, 'services watch');
    const lastRv = t.api.put(SVC, service('late1', { clusterIP: '10.96.0.30', clusterIPs: ['10.96.0.30'] }));
    await waitFor(() => t.keysOf('upsert').includes('Service/default/late1'), 'late1 upsert');
    t.api.dropWatches(SVC);
    // Changed while the source may be disconnected: replayed from the resumed watch.
    t.api.put(SVC, service('late2', { clusterIP: '10.96.0.31', clusterIPs: ['10.96.0.31'] }));
    t.api.remove(SVC, 'default', 'db');
    await waitFor(() => t.keysOf('upsert').includes('Service/default/late2') && t.keysOf('delete').includes('Service/default/db'), 'late2 upsert and db delete');
    const watches = t.api.requestsFor(SVC, true);
    assert.equal(watches.length, 2);
    assert.equal(watches[1]!.query.get('resourceVersion'), String(lastRv));
    assert.equal(t.api.requestsFor(SVC, false).length, 3, 'no relist');
    assert.equal(t.synced('Service').length, 1, 'no second synced');
  } finally {
    await t.teardown();
  }
});

test('expired resourceVersion (ERROR 410 event, HTTP 410): relists, and objects deleted meanwhile disappear', async () => {
  const t = await setup((api) => {
    seedDefault(api);
    api.put(SVC, service('gone', { clusterIP: '10.96.0.40', clusterIPs: ['10.96.0.40'] }));
    api.put(SLICES, slice('gone-1', 'gone'));
    api.resources[SLICES]!.expireMode = 'http';
  });
  try {
    await t.initialSync();
    await waitFor(() => t.api.watching(SVC) === 1 && t.api.watching(SLICES) === 1, 'watches');
    const n = t.events.length;
    const svcLists = t.api.requestsFor(SVC, false).length;
    // While the source is cut off: one service disappears, one changes, history is compacted.
    for (const p of [SVC, SLICES]) t.api.dropWatches(p);
    t.api.remove(SVC, 'default', 'gone', { silent: true });
    t.api.put(SVC, service('db', { clusterIP: '10.96.0.11', clusterIPs: ['10.96.0.11'], ports: [{ name: 'pg', port: 5433, protocol: 'TCP' }] }), { silent: true });
    t.api.remove(SLICES, 'default', 'gone-1', { silent: true });
    t.api.compact(SVC);
    t.api.compact(SLICES);

    await waitFor(() => t.synced('Service').length === 2 && t.synced('EndpointSlice').length === 2, 'relist after 410');
    const after = t.events.slice(n);
    assert.deepEqual(after.filter((e) => e.type === 'delete').map((e) => e.type === 'delete' && e.key).sort(), ['EndpointSlice/default/gone-1', 'Service/default/gone']);
    assert.ok(!t.synced('Service')[1]!.keys.includes('Service/default/gone'));
    assert.deepEqual([...t.synced('Service')[1]!.keys].sort(), ['Service/default/db', 'Service/default/proxied-elsewhere', 'Service/default/web']);
    assert.deepEqual(t.synced('EndpointSlice')[1]!.keys, ['EndpointSlice/default/web-1']);
    // Only what changed is upserted again: db with its new port, not web.
    const upserts = after.filter((e) => e.type === 'upsert');
    assert.equal(upserts.length, 1);
    assert.ok(upserts[0]!.type === 'upsert' && upserts[0]!.object.kind === 'Service' && upserts[0]!.object.name === 'db' && upserts[0]!.object.ports[0]!.port === 5433);
    assert.equal(t.api.requestsFor(SVC, false).length, svcLists + 3, 'services relisted (3 pages)');
    // The first list came from the watch cache (resourceVersion 0, as client-go), later pages by
    // continue token; the relist after the expiry is a consistent read (no resourceVersion).
    const lists = t.api.requestsFor(SVC, false);
    const pages = (rs: typeof lists): Array<[string | null, boolean]> => rs.map((r) => [r.query.get('resourceVersion'), r.query.has('continue')]);
    assert.deepEqual(pages(lists.slice(0, svcLists)), [['0', false], ...Array.from({ length: svcLists - 1 }, (): [null, boolean] => [null, true])]);
    assert.deepEqual(pages(lists.slice(svcLists)), [[null, false], [null, true], [null, true]]);
    assert.equal(t.api.requestsFor(SLICES, false).length, 2, 'slices relisted');
    // The invalid service is still invalid after the relist, but was already reported.
    assert.equal(invalidWarnings(t.logger.lines, 'bad').length, 1);
    // And the watch after the relist starts from the new list's resourceVersion.
    await waitFor(() => t.api.watching(SVC) === 1 && t.api.watching(SLICES) === 1, 'watches after relist');
    const svcWatches = t.api.requestsFor(SVC, true);
    assert.equal(svcWatches.at(-1)!.query.get('resourceVersion'), String(t.api.rv));
    assert.equal(t.api.requestsFor(SVC, false).length, svcLists + 3, 'exactly one relist');
  } finally {
    await t.teardown();
  }
});

test('a watch that answers 200 with JSON that is not watch events is reported and backed off, not retried in a tight loop', async () => {
  const t = await setup();
  try {
    await t.initialSync();
    await waitFor(() => t.api.watching(SVC) === 1, 'watch');
    t.api.resources[SVC]!.notEvents = JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Success' });
    const before = t.api.requestsFor(SVC, true).length;
    t.api.endWatches(SVC);
    await new Promise((r) => setTimeout(r, 600));
    const retries = t.api.requestsFor(SVC, true).length - before;
    // Backoff 20, 40, 80, 160, 200 ms: about 5 tries in 600 ms (a retry at once would be dozens).
    assert.ok(retries >= 2 && retries <= 8, `watch retries in 600 ms: ${retries}`);
    assert.ok(t.logger.lines.some((l) => l.includes('WARN') && l.includes('watch stream is not watch events') && l.includes('type=(none)')), t.logger.lines.join('\n'));
    t.api.resources[SVC]!.notEvents = null;
    await waitFor(() => t.api.watching(SVC) === 1, 'watch again once the server answers with events');
  } finally {
    await t.teardown();
  }
});

test('MODIFIED into an invalid or ExternalName service deletes it; valid again upserts it', async () => {
  const t = await setup();
  try {
    await t.initialSync();
    await waitFor(() => t.api.watching(SVC) === 1, 'services watch');
    const n = t.events.length;
    t.api.put(SVC, service('web', { ports: [{ name: 'http', port: 70000, protocol: 'TCP' }] }));
    await waitFor(() => t.events.length === n + 1, 'delete of web');
    assert.deepEqual(t.events[n], { type: 'delete', kind: 'Service', key: 'Service/default/web' });
    const warns = invalidWarnings(t.logger.lines, 'web');
    assert.equal(warns.length, 1);
    assert.match(warns[0]!, /field=spec\.ports\[0\]\.port/);

    t.api.put(SVC, service('db', { type: 'ExternalName', externalName: 'db.example.com', clusterIP: '', clusterIPs: [] }));
    await waitFor(() => t.events.length === n + 2, 'delete of db');
    assert.deepEqual(t.events[n + 1], { type: 'delete', kind: 'Service', key: 'Service/default/db' });

    // Deleting an object that was already treated as absent emits nothing more.
    t.api.remove(SVC, 'default', 'db');
    t.api.put(SVC, service('web'));
    await waitFor(() => t.events.length === n + 3, 'upsert of web');
    const again = t.events[n + 2];
    assert.ok(again?.type === 'upsert' && again.object.kind === 'Service' && again.object.name === 'web');
    assert.equal(invalidWarnings(t.logger.lines, 'web').length, 1);
  } finally {
    await t.teardown();
  }
});

test('stop() closes watches, a list still waiting for its answer and backoff timers', async () => {
  const t = await setup((api) => {
    seedDefault(api);
    api.resources[NODES]!.hangLists = true; // the node list never answers
    api.resources[SLICES]!.failWatches = true; // slice watches fail: the source sits in a long backoff
  }, { minBackoffMs: 5000, maxBackoffMs: 5000 });
  await waitFor(() => t.synced('Service').length === 1 && t.synced('EndpointSlice').length === 1, 'services and slices listed');
  await waitFor(() => t.api.requestsFor(SLICES, true).length === 1 && t.api.requestsFor(NODES, false).length === 1 && t.api.watching(SVC) === 1, 'failed slice watch, hanging node list');
  await waitFor(() => t.logger.lines.some((l) => l.includes('watch refused') && l.includes('InternalError')), 'the refused watch logged');
  const n = t.events.length;
  const began = Date.now();
  // teardown asserts that the server sees no connection left and no timer or socket survives.
  await t.teardown();
  assert.ok(Date.now() - began < 1000, `stop() waited ${Date.now() - began} ms instead of cancelling the backoff`);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(t.events.length, n, 'no events after stop()');
  assert.equal(t.synced('Node').length, 0);
});

test('configuration errors are KubernetesSourceError naming the file', () => {
  const logger = memoryLogger();
  const missing = path.join(os.tmpdir(), 'rudder-no-such-dir', 'kubeconfig');
  assert.throws(() => new KubernetesSource({ kubeconfig: missing, nodeName: 'n', logger }), (e: unknown) => {
    assert.ok(e instanceof KubernetesSourceError);
    assert.equal(e.code, 'EKUBECONFIG');
    assert.equal(e.file, missing);
    assert.ok(e.message.includes(missing), e.message);
    return true;
  });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rudder-k8s-'));
  try {
    const file = writeKubeconfig(dir, 1);
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('    insecure-skip-tls-verify: true\n', ''));
    assert.throws(() => new KubernetesSource({ kubeconfig: file, nodeName: 'n', logger }), (e: unknown) =>
      e instanceof KubernetesSourceError && e.code === 'EKUBECONFIG' && e.message.includes(file) && /insecure-skip-tls-verify/.test(e.message));
    const broken = path.join(dir, 'broken');
    fs.writeFileSync(broken, 'clusters: [{cluster: {}}]\n');
    assert.throws(() => new KubernetesSource({ kubeconfig: broken, nodeName: 'n', logger }), (e: unknown) =>
      e instanceof KubernetesSourceError && e.code === 'EKUBECONFIG' && e.message.includes(broken));
    assert.throws(() => new KubernetesSource({ kubeconfig: writeKubeconfig(dir, 1), nodeName: '', logger }), (e: unknown) =>
      e instanceof KubernetesSourceError && e.code === 'EOPTIONS');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
