// The trimmed, validated API objects the proxy works from. Every source (files, kubernetes)
// decodes raw Kubernetes objects into these shapes with decode.ts, so the model never sees a
// raw object and never has to re-validate one.

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type IPFamily = 4 | 6;

export interface ObjectRef {
  namespace: string;
  name: string;
}

export interface ServicePortSpec {
  /** "" when the service has a single unnamed port. */
  name: string;
  protocol: Protocol;
  port: number;
  /** 0 when no node port is allocated. */
  nodePort: number;
  /** Number, or a named container port resolved through the EndpointSlice. */
  targetPort: number | string;
}

export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer';
export type TrafficPolicy = 'Cluster' | 'Local';

export interface Service extends ObjectRef {
  kind: 'Service';
  type: ServiceType;
  /** Normalised textual addresses, primary family first. */
  clusterIPs: string[];
  ports: ServicePortSpec[];
  externalIPs: string[];
  /** status.loadBalancer.ingress[].ip with ipMode VIP (or unset). */
  loadBalancerIPs: string[];
  /** Normalised CIDRs from spec.loadBalancerSourceRanges (or the legacy annotation). */
  loadBalancerSourceRanges: string[];
  /** Seconds; 0 when session affinity is None. */
  affinityTimeoutSeconds: number;
  externalTrafficPolicy: TrafficPolicy;
  internalTrafficPolicy: TrafficPolicy;
  healthCheckNodePort: number;
  /** Value of service.kubernetes.io/service-proxy-name, or "" when the label is absent. */
  proxyName: string;
  /** spec.trafficDistribution, "" when unset. */
  trafficDistribution: string;
  /** Backend selection from the service.rudder.io/lb-algorithm annotation; "" for the node's default. */
  lbAlgorithm: LbAlgorithm;
}

/** How the eBPF data plane picks a backend; "" leaves it to --lb-algorithm. */
export type LbAlgorithm = '' | 'random' | 'maglev';

export interface EndpointSlicePort {
  name: string;
  protocol: Protocol;
  port: number;
}

export interface Endpoint {
  /** The first address only, as kube-proxy does. */
  address: string;
  /** nil ready counts as ready, nil serving as serving, nil terminating as not terminating. */
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  nodeName: string;
  zone: string;
  /** hints.forZones[].name; empty when the endpoint carries no zone hints. */
  zoneHints: string[];
  /** hints.forNodes[].name; empty when the endpoint carries no node hints. */
  nodeHints: string[];
}

export interface EndpointSlice extends ObjectRef {
  kind: 'EndpointSlice';
  /** Value of kubernetes.io/service-name. */
  serviceName: string;
  family: IPFamily;
  ports: EndpointSlicePort[];
  endpoints: Endpoint[];
  /** endpoints.kubernetes.io/last-change-trigger-time (ms since the epoch), when set and readable. */
  lastChangeTriggerTime?: number;
}

export interface Node {
  kind: 'Node';
  name: string;
  /** topology.kubernetes.io/zone, "" when unset. */
  zone: string;
  /** InternalIP addresses first, then ExternalIP, normalised. */
  addresses: string[];
  labels: Record<string, string>;
}

export type ProxyObject = Service | EndpointSlice | Node;

/** The key every source, the tracker and the logs use for an object. */
export function objectKey(o: ProxyObject): string {
  return o.kind === 'Node' ? `Node/${o.name}` : `${o.kind}/${o.namespace}/${o.name}`;
}

export function serviceKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** What a source emits. Both sources produce exactly these. */
export type SourceEvent =
  | { type: 'upsert'; object: ProxyObject }
  | { type: 'delete'; kind: ProxyObject['kind']; key: string }
  /**
   * The source has (re)listed everything: objects of the listed kinds not named in `keys` are
   * gone. Sent after the initial list and after every relist, so a consumer that missed deletes
   * while disconnected converges.
   */
  | { type: 'synced'; kind: ProxyObject['kind']; keys: string[] };

export interface Source {
  /** Starts listing/watching; events are delivered through the callback. */
  start(onEvent: (e: SourceEvent) => void): Promise<void>;
  stop(): Promise<void>;
}
