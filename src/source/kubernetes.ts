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
import { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../observe/log.js';
import type { Source, SourceEvent } from './objects.js';
import { ApiClient, Reflector, describeError, type Emit, type KindSpec } from './reflector.js';

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

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
