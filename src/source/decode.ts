// Decodes raw Kubernetes objects (parsed JSON/YAML) into the trimmed objects of objects.ts.
// Every rejection names the field, as a JSON path from the object's root, so the log line or
// the error message tells the user exactly what to fix.

import { normalizeCIDR, normalizeIP, ipFamily, specialAddress } from '../model/ip.js';
import type {
  Endpoint,
  EndpointSlice,
  EndpointSlicePort,
  IPFamily,
  LbAlgorithm,
  Node,
  Protocol,
  ProxyObject,
  Service,
  ServicePortSpec,
  ServiceType,
  TrafficPolicy,
} from './objects.js';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const ZONE_LABEL = 'topology.kubernetes.io/zone';
const DEFAULT_AFFINITY_SECONDS = 10800;
const MAX_AFFINITY_SECONDS = 86400;

/** A field of an object whose value is not acceptable. */
export class DecodeError extends Error {
  readonly code = 'EDECODE';
  constructor(
    /** "Service shop/web", or "document" when the object cannot even be named. */
    readonly object: string,
    /** JSON path of the offending field, e.g. "spec.ports[1].port". */
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${object}: ${field}: ${problem}`);
    this.name = 'DecodeError';
  }
}

export type DecodeResult =
  | { status: 'ok'; object: ProxyObject }
  /** A valid object the proxy does not handle (headless, ExternalName, FQDN slices, other kinds). */
  | { status: 'ignored'; kind: string; key: string | null; reason: string }
  | { status: 'invalid'; kind: string; key: string | null; error: DecodeError };

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reads fields with their path, throwing DecodeError on the first bad one. */
class Reader {
  constructor(readonly what: string) {}

  fail(field: string, problem: string): never {
    throw new DecodeError(this.what, field, problem);
  }

  obj(v: unknown, field: string, optional = true): Obj {
    if (v === undefined || v === null) {
      if (optional) return {};
      this.fail(field, 'is required');
    }
    if (!isObj(v)) this.fail(field, `must be an object, got ${describe(v)}`);
    return v;
  }

  arr(v: unknown, field: string): unknown[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) this.fail(field, `must be a list, got ${describe(v)}`);
    return v;
  }

  str(v: unknown, field: string, dflt?: string): string {
    if (v === undefined || v === null) {
      if (dflt !== undefined) return dflt;
      this.fail(field, 'is required');
    }
    if (typeof v !== 'string') this.fail(field, `must be a string, got ${describe(v)}`);
    return v;
  }

  bool(v: unknown, field: string, dflt: boolean): boolean {
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.fail(field, `must be true or false, got ${describe(v)}`);
    return v;
  }

  int(v: unknown, field: string, min: number, max: number, dflt?: number): number {
    if (v === undefined || v === null) {
      if (dflt !== undefined) return dflt;
      this.fail(field, 'is required');
    }
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail(field, `must be an integer, got ${describe(v)}`);
    if (v < min || v > max) this.fail(field, `${v} is out of range ${min}-${max}`);
    return v;
  }

  ip(v: unknown, field: string): string {
    const s = this.str(v, field);
    // The API server's parser takes no surrounding space either.
    const n = s === s.trim() ? normalizeIP(s) : null;
    if (n === null) this.fail(field, `${JSON.stringify(s)} is not a valid IP address`);
    return n;
  }

  /** An address a service can be reached at: not unspecified, loopback, link-local, multicast or broadcast. */
  serviceIP(v: unknown, field: string): string {
    const n = this.ip(v, field);
    const what = specialAddress(n);
    if (what !== null) this.fail(field, `${n} is ${what}, not usable as a service address`);
    return n;
  }

  cidr(v: unknown, field: string): string {
    const s = this.str(v, field);
    const n = normalizeCIDR(s);
    if (n === null) this.fail(field, `${JSON.stringify(s)} is not a valid CIDR`);
    return n;
  }

  protocol(v: unknown, field: string): Protocol {
    const s = this.str(v, field, 'TCP');
    if (s !== 'TCP' && s !== 'UDP' && s !== 'SCTP') this.fail(field, `unknown protocol ${JSON.stringify(s)} (TCP, UDP or SCTP)`);
    return s;
  }

  oneOf<T extends string>(v: unknown, field: string, allowed: readonly T[], dflt: T): T {
    const s = this.str(v, field, dflt);
    if (!(allowed as readonly string[]).includes(s)) {
      this.fail(field, `${JSON.stringify(s)} is not one of ${allowed.join(', ')}`);
    }
    return s as T;
  }

  labels(v: unknown, field: string): Record<string, string> {
    const o = this.obj(v, field);
    const out: Record<string, string> = {};
    for (const [k, val] of Object.entries(o)) out[k] = this.str(val, `${field}[${k}]`);
    return out;
  }
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** DNS-1123 subdomain: EndpointSlice and Node names. */
const SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
/** DNS-1123 label (at most 63): namespaces, Service names, Service port names. */
const LABEL_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** IANA_SVC_NAME (at most 15): named target ports. */
const IANA_SVC_NAME_RE = /^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$/;

/** The per-service override of the eBPF data plane's backend selection. */
export const LB_ALGORITHM_ANNOTATION = 'service.rudder.io/lb-algorithm';

/** An unknown value means the node's default, as an unset annotation does (a typo never drops a service). */
function lbAlgorithm(v: string | undefined): LbAlgorithm {
  return v === 'random' || v === 'maglev' ? v : '';
}

interface Meta {
  name: string;
  namespace: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

function readMeta(raw: Obj, kind: string, namespaced: boolean): Meta {
  const pre = new Reader(kind);
  const md = pre.obj(raw['metadata'], 'metadata', false);
  const name = pre.str(md['name'], 'metadata.name');
  // Service names are DNS labels in the API (and so end up short enough for rule comments).
  const nameRE = kind === 'Service' ? LABEL_RE : SUBDOMAIN_RE;
  if (!nameRE.test(name)) pre.fail('metadata.name', `${JSON.stringify(name)} is not a valid ${kind} name`);
  const namespace = namespaced ? pre.str(md['namespace'], 'metadata.namespace', 'default') : '';
  if (namespaced && !LABEL_RE.test(namespace)) pre.fail('metadata.namespace', `${JSON.stringify(namespace)} is not a valid namespace`);
  const r = new Reader(namespaced ? `${kind} ${namespace}/${name}` : `${kind} ${name}`);
  return {
    name,
    namespace,
    labels: r.labels(md['labels'], 'metadata.labels'),
    annotations: r.labels(md['annotations'], 'metadata.annotations'),
  };
}

/**
 * Decodes one raw object. Never throws: a bad object comes back as `invalid` with the field
 * named, an object the proxy has no use for as `ignored`.
 */
/** kind/namespace/name of an object the proxy does not read, for log lines (null without a name). */
function looseKey(raw: Obj, kind: string): string | null {
  const meta = isObj(raw['metadata']) ? raw['metadata'] : {};
  const name = meta['name'];
  const ns = meta['namespace'];
  if (typeof name !== 'string' || name === '') return null;
  return typeof ns === 'string' && ns !== '' ? `${kind}/${ns}/${name}` : `${kind}/${name}`;
}

export function decodeObject(raw: unknown): DecodeResult {
  if (!isObj(raw)) {
    return { status: 'invalid', kind: '?', key: null, error: new DecodeError('document', '(root)', `must be an object, got ${describe(raw)}`) };
  }
  const kind = typeof raw['kind'] === 'string' ? raw['kind'] : '';
  const apiVersion = typeof raw['apiVersion'] === 'string' ? raw['apiVersion'] : '';
  let key: string | null = null;
  try {
    switch (kind) {
      case 'Service': {
        if (apiVersion !== 'v1') return { status: 'ignored', kind, key: looseKey(raw, kind), reason: `apiVersion ${apiVersion} is not v1` };
        const meta = readMeta(raw, kind, true);
        key = `Service/${meta.namespace}/${meta.name}`;
        return decodeService(raw, meta);
      }
      case 'EndpointSlice': {
        if (apiVersion !== 'discovery.k8s.io/v1') return { status: 'ignored', kind, key: looseKey(raw, kind), reason: `apiVersion ${apiVersion} is not discovery.k8s.io/v1` };
        const meta = readMeta(raw, kind, true);
        key = `EndpointSlice/${meta.namespace}/${meta.name}`;
        return decodeSlice(raw, meta);
      }
      case 'Node': {
        if (apiVersion !== 'v1') return { status: 'ignored', kind, key: looseKey(raw, kind), reason: `apiVersion ${apiVersion} is not v1` };
        const meta = readMeta(raw, kind, false);
        key = `Node/${meta.name}`;
        return { status: 'ok', object: decodeNode(raw, meta) };
      }
      case '':
        throw new DecodeError('document', 'kind', 'is required');
      default:
        return { status: 'ignored', kind, key: looseKey(raw, kind), reason: `kind ${kind} is not used by the proxy` };
    }
  } catch (e) {
    if (e instanceof DecodeError) return { status: 'invalid', kind: kind || '?', key, error: e };
    throw e;
  }
}

function decodeService(raw: Obj, meta: Meta): DecodeResult {
  const key = `Service/${meta.namespace}/${meta.name}`;
  const r = new Reader(`Service ${meta.namespace}/${meta.name}`);
  const spec = r.obj(raw['spec'], 'spec', false);
  const status = r.obj(raw['status'], 'status');
  const typ = r.oneOf(spec['type'], 'spec.type', ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'] as const, 'ClusterIP');
  if (typ === 'ExternalName') return { status: 'ignored', kind: 'Service', key, reason: 'type ExternalName is resolved by DNS, not proxied' };
  if (meta.labels['service.kubernetes.io/headless'] !== undefined) {
    return { status: 'ignored', kind: 'Service', key, reason: 'labelled service.kubernetes.io/headless' };
  }

  const clusterIP = r.str(spec['clusterIP'], 'spec.clusterIP', '');
  if (clusterIP === 'None') return { status: 'ignored', kind: 'Service', key, reason: 'headless (clusterIP None)' };
  const rawIPs = r.arr(spec['clusterIPs'], 'spec.clusterIPs');
  let clusterIPs: string[];
  if (rawIPs.length > 0) {
    clusterIPs = rawIPs.map((v, i) => r.serviceIP(v, `spec.clusterIPs[${i}]`));
    if (clusterIP !== '' && normalizeIP(clusterIP) !== clusterIPs[0]) {
      r.fail('spec.clusterIP', `${JSON.stringify(clusterIP)} differs from spec.clusterIPs[0] ${JSON.stringify(clusterIPs[0])}`);
    }
    if (clusterIPs.length > 2 || (clusterIPs.length === 2 && ipFamily(clusterIPs[0]!) === ipFamily(clusterIPs[1]!))) {
      r.fail('spec.clusterIPs', 'must hold at most one address per IP family');
    }
  } else if (clusterIP !== '') {
    clusterIPs = [r.serviceIP(clusterIP, 'spec.clusterIP')];
  } else {
    return { status: 'ignored', kind: 'Service', key, reason: 'no cluster IP allocated' };
  }

  const rawPorts = r.arr(spec['ports'], 'spec.ports');
  if (rawPorts.length === 0) r.fail('spec.ports', 'must list at least one port');
  const ports: ServicePortSpec[] = [];
  const names = new Set<string>();
  const numbers = new Set<string>();
  rawPorts.forEach((p, i) => {
    const f = `spec.ports[${i}]`;
    const po = r.obj(p, f, false);
    const name = r.str(po['name'], `${f}.name`, '');
    if (name !== '' && !LABEL_RE.test(name)) r.fail(`${f}.name`, `${JSON.stringify(name)} is not a valid port name`);
    if (names.has(name)) r.fail(`${f}.name`, `duplicate port name ${JSON.stringify(name)}`);
    names.add(name);
    if (rawPorts.length > 1 && name === '') r.fail(`${f}.name`, 'is required when the service has more than one port');
    const protocol = r.protocol(po['protocol'], `${f}.protocol`);
    const port = r.int(po['port'], `${f}.port`, 1, 65535);
    if (numbers.has(`${port}/${protocol}`)) r.fail(`${f}.port`, `duplicate port ${port}/${protocol}`);
    numbers.add(`${port}/${protocol}`);
    const nodePort = typ === 'ClusterIP' ? 0 : r.int(po['nodePort'], `${f}.nodePort`, 0, 65535, 0);
    let targetPort: number | string = port;
    const tp = po['targetPort'];
    if (typeof tp === 'string' && !/^\d+$/.test(tp)) {
      if (!IANA_SVC_NAME_RE.test(tp)) r.fail(`${f}.targetPort`, `${JSON.stringify(tp)} is not a valid port name`);
      targetPort = tp;
    } else if (tp !== undefined && tp !== null) {
      targetPort = r.int(typeof tp === 'string' ? Number(tp) : tp, `${f}.targetPort`, 1, 65535);
    }
    ports.push({ name, protocol, port, nodePort, targetPort });
  });

  const externalIPs = r.arr(spec['externalIPs'], 'spec.externalIPs').map((v, i) => r.serviceIP(v, `spec.externalIPs[${i}]`));

  // Only the field: the legacy service.beta.kubernetes.io/load-balancer-source-ranges annotation
  // is read by cloud load balancers, never by kube-proxy.
  const sourceRanges = r.arr(spec['loadBalancerSourceRanges'], 'spec.loadBalancerSourceRanges')
    .map((v, i) => r.cidr(v, `spec.loadBalancerSourceRanges[${i}]`));

  const lb = r.obj(status['loadBalancer'], 'status.loadBalancer');
  const loadBalancerIPs: string[] = [];
  r.arr(lb['ingress'], 'status.loadBalancer.ingress').forEach((ing, i) => {
    const f = `status.loadBalancer.ingress[${i}]`;
    const io = r.obj(ing, f, false);
    if (io['ip'] === undefined || io['ip'] === '') return; // hostname-only ingress
    const ip = r.ip(io['ip'], `${f}.ip`);
    // ipMode Proxy: the load balancer delivers to the node, so the VIP must not be short-circuited.
    const mode = r.oneOf(io['ipMode'], `${f}.ipMode`, ['VIP', 'Proxy'] as const, 'VIP');
    if (mode === 'VIP') loadBalancerIPs.push(ip);
  });

  const affinity = r.oneOf(spec['sessionAffinity'], 'spec.sessionAffinity', ['None', 'ClientIP'] as const, 'None');
  let affinityTimeoutSeconds = 0;
  if (affinity === 'ClientIP') {
    const cfg = r.obj(r.obj(spec['sessionAffinityConfig'], 'spec.sessionAffinityConfig')['clientIP'], 'spec.sessionAffinityConfig.clientIP');
    affinityTimeoutSeconds = r.int(cfg['timeoutSeconds'], 'spec.sessionAffinityConfig.clientIP.timeoutSeconds', 1, MAX_AFFINITY_SECONDS, DEFAULT_AFFINITY_SECONDS);
  }
  const policies = ['Cluster', 'Local'] as const;
  // "Global" is the pre-1.0 spelling of Cluster that old objects may still carry.
  const etpRaw = spec['externalTrafficPolicy'] === 'Global' ? 'Cluster' : spec['externalTrafficPolicy'];
  const externalTrafficPolicy: TrafficPolicy = typ === 'ClusterIP' && externalIPs.length === 0
    ? 'Cluster'
    : r.oneOf(etpRaw, 'spec.externalTrafficPolicy', policies, 'Cluster');
  const internalTrafficPolicy: TrafficPolicy = r.oneOf(spec['internalTrafficPolicy'], 'spec.internalTrafficPolicy', policies, 'Cluster');
  const healthCheckNodePort = r.int(spec['healthCheckNodePort'], 'spec.healthCheckNodePort', 0, 65535, 0);

  const svc: Service = {
    kind: 'Service',
    namespace: meta.namespace,
    name: meta.name,
    type: typ as ServiceType,
    clusterIPs,
    ports,
    externalIPs,
    loadBalancerIPs,
    loadBalancerSourceRanges: sourceRanges,
    affinityTimeoutSeconds,
    externalTrafficPolicy,
    internalTrafficPolicy,
    healthCheckNodePort,
    proxyName: meta.labels[SERVICE_PROXY_NAME_LABEL] ?? '',
    trafficDistribution: r.str(spec['trafficDistribution'], 'spec.trafficDistribution', ''),
    lbAlgorithm: lbAlgorithm(meta.annotations[LB_ALGORITHM_ANNOTATION]),
  };
  return { status: 'ok', object: svc };
}

export const LAST_CHANGE_TRIGGER_TIME = 'endpoints.kubernetes.io/last-change-trigger-time';

function decodeSlice(raw: Obj, meta: Meta): DecodeResult {
  const key = `EndpointSlice/${meta.namespace}/${meta.name}`;
  const r = new Reader(`EndpointSlice ${meta.namespace}/${meta.name}`);
  const serviceName = meta.labels[SERVICE_NAME_LABEL] ?? '';
  if (serviceName === '') r.fail(`metadata.labels[${SERVICE_NAME_LABEL}]`, 'is required: the slice names no service');
  const addressType = r.oneOf(raw['addressType'], 'addressType', ['IPv4', 'IPv6', 'FQDN'] as const, 'IPv4');
  if (addressType === 'FQDN') return { status: 'ignored', kind: 'EndpointSlice', key, reason: 'addressType FQDN is not proxied' };
  const family: IPFamily = addressType === 'IPv4' ? 4 : 6;

  const ports: EndpointSlicePort[] = [];
  r.arr(raw['ports'], 'ports').forEach((p, i) => {
    const f = `ports[${i}]`;
    const po = r.obj(p, f, false);
    // A nil port means "all ports" for selector-less slices; kube-proxy ignores it.
    if (po['port'] === undefined || po['port'] === null) return;
    ports.push({
      name: r.str(po['name'], `${f}.name`, ''),
      protocol: r.protocol(po['protocol'], `${f}.protocol`),
      port: r.int(po['port'], `${f}.port`, 1, 65535),
    });
  });

  const endpoints: Endpoint[] = [];
  r.arr(raw['endpoints'], 'endpoints').forEach((e, i) => {
    const f = `endpoints[${i}]`;
    const eo = r.obj(e, f, false);
    const addrs = r.arr(eo['addresses'], `${f}.addresses`);
    if (addrs.length === 0) r.fail(`${f}.addresses`, 'must hold at least one address');
    const address = r.ip(addrs[0], `${f}.addresses[0]`);
    if (ipFamily(address) !== family) r.fail(`${f}.addresses[0]`, `${address} is not an ${addressType} address`);
    const cond = r.obj(eo['conditions'], `${f}.conditions`);
    const hints = r.obj(eo['hints'], `${f}.hints`);
    const hintNames = (field: string): string[] =>
      r.arr(hints[field], `${f}.hints.${field}`).map((h, j) => r.str(r.obj(h, `${f}.hints.${field}[${j}]`, false)['name'], `${f}.hints.${field}[${j}].name`));
    endpoints.push({
      address,
      ready: r.bool(cond['ready'], `${f}.conditions.ready`, true),
      serving: r.bool(cond['serving'], `${f}.conditions.serving`, true),
      terminating: r.bool(cond['terminating'], `${f}.conditions.terminating`, false),
      nodeName: r.str(eo['nodeName'], `${f}.nodeName`, ''),
      zone: r.str(eo['zone'], `${f}.zone`, ''),
      zoneHints: hintNames('forZones'),
      nodeHints: hintNames('forNodes'),
    });
  });

  const slice: EndpointSlice = { kind: 'EndpointSlice', namespace: meta.namespace, name: meta.name, serviceName, family, ports, endpoints };
  // When the endpoints controller saw the change that made this version (kube-proxy's start of
  // network programming latency). Unreadable: no time, as kube-proxy ignores it.
  const trigger = Date.parse(meta.annotations[LAST_CHANGE_TRIGGER_TIME] ?? '');
  if (Number.isFinite(trigger)) slice.lastChangeTriggerTime = trigger;
  return { status: 'ok', object: slice };
}

function decodeNode(raw: Obj, meta: Meta): Node {
  const r = new Reader(`Node ${meta.name}`);
  const status = r.obj(raw['status'], 'status');
  const internal: string[] = [];
  const external: string[] = [];
  r.arr(status['addresses'], 'status.addresses').forEach((a, i) => {
    const f = `status.addresses[${i}]`;
    const ao = r.obj(a, f, false);
    const type = r.str(ao['type'], `${f}.type`);
    if (type === 'InternalIP') internal.push(r.ip(ao['address'], `${f}.address`));
    else if (type === 'ExternalIP') external.push(r.ip(ao['address'], `${f}.address`));
  });
  return {
    kind: 'Node',
    name: meta.name,
    zone: meta.labels[ZONE_LABEL] ?? '',
    addresses: [...internal, ...external],
    labels: meta.labels,
  };
}
