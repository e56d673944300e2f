// `rudder agent`: keeps the kernel of the network namespace it runs in in step with the
// service table. On SIGTERM it stops and leaves the rules in place, as kube-proxy does.

import { hostname } from 'node:os';
import { cleanupOtherDataPlanes, createDataPlane, DATAPLANES } from '../dataplane/index.js';
import type { DataPlaneName } from '../dataplane/dataplane.js';
import { ProxyHealth } from '../observe/health.js';
import { createLogger, type Level, type Logger } from '../observe/log.js';
import { Metrics } from '../observe/metrics.js';
import { parseBindAddress, startAdmin } from '../observe/server.js';
import { FileSource } from '../source/files.js';
import { KubernetesSource } from '../source/kubernetes.js';
import { readDevicesHolding, readLocalAddresses, watchLocalAddresses } from '../source/local-addresses.js';
import type { Source } from '../source/objects.js';
import { BoundedFrequencyRunner } from '../sync/runner.js';
import { Syncer } from '../sync/syncer.js';
import { nodePortAddresses, trace } from '../model/trace.js';
import { ServiceHealthServers } from '../observe/service-health.js';
import { kernelDifferences, localBackendsOf, packetQuery, type KernelAnswer } from './trace.js';
import { classifySource } from '../model/frontends.js';
import { Tracker } from '../sync/tracker.js';
import { ConfigError, durationRangeProblem, loadAgentConfig, MIN_SYNC_PERIOD_RANGE, parseDuration, SYNC_PERIOD_RANGE, type AgentFileConfig } from './agent-config.js';
import { UsageError, flagAll, flagBool, flagOne, type FlagSpecs, type Parsed } from './args.js';
import { PROXY_FLAGS, configFlags, proxyConfig, type ConfigFlags } from './config.js';
import { EBPF_FLAGS, ebpfOptions } from './ebpf-flags.js';
import type { EbpfDataPlaneOptions } from '../dataplane/ebpf/index.js';

export const AGENT_FLAGS: FlagSpecs = {
  dataplane: { value: 'iptables|nftables|ebpf', help: 'the kernel data plane to program (default iptables)' },
  config: { value: 'FILE', help: 'a KubeProxyConfiguration file; flags win over it' },
  kubeconfig: { value: 'PATH', help: 'watch the Kubernetes API with this kubeconfig' },
  'in-cluster': { boolean: true, help: 'watch the Kubernetes API with the pod\'s service account' },
  ...PROXY_FLAGS,
  'healthz-bind-address': { value: 'HOST:PORT', help: 'serve /healthz and /livez here, "" to disable (default 127.0.0.1:10256)' },
  'metrics-bind-address': { value: 'HOST:PORT', help: 'serve /metrics and /services here, "" to disable (default 127.0.0.1:10249)' },
  'sync-period': { value: 'DURATION', help: 'sync at least this often, even without changes (default 30s; a full rewrite happens hourly)' },
  'min-sync-period': { value: 'DURATION', help: 'at most one sync per this interval; bursts coalesce (default 1s)' },
  'log-level': { value: 'debug|info|warn|error', help: 'log verbosity (default info, or $RUDDER_LOG_LEVEL)' },
  'log-format': { value: 'text|json', help: 'log line format (default text, or $RUDDER_LOG_FORMAT)' },
  ...EBPF_FLAGS,
};

/**
 * How often a sync rewrites everything from the table (repairing rules someone else removed),
 * as kube-proxy's fullSyncPeriod. Syncs in between (at least every --sync-period) are partial.
 */
const FULL_SYNC_INTERVAL_MS = 3_600_000;

export interface AgentSettings {
  dataplane: DataPlaneName;
  flags: ConfigFlags;
  manifests: string[];
  kubeconfig: string | undefined;
  inCluster: boolean;
  healthz: string;
  metrics: string;
  syncPeriodMs: number;
  minSyncPeriodMs: number;
  logLevel: Level | undefined;
  logJSON: boolean | undefined;
  ebpf: Omit<EbpfDataPlaneOptions, 'config' | 'logger'>;
}

const LEVELS: readonly Level[] = ['debug', 'info', 'warn', 'error'];

function duration(p: Parsed, flag: string, fromFile: number | undefined, dflt: number, range: { min: number; max: number }): number {
  const v = flagOne(p, flag);
  if (v === undefined) return fromFile ?? dflt;
  const ms = parseDuration(v);
  if (ms === null) throw new UsageError(`--${flag}: ${JSON.stringify(v)} is not a duration like 30s or 500ms`);
  const problem = durationRangeProblem(ms, range);
  if (problem !== null) throw new UsageError(`--${flag}: ${JSON.stringify(v)} ${problem}`);
  return ms;
}

function oneOf<T extends string>(p: Parsed, flag: string, allowed: readonly T[]): T | undefined {
  const v = flagOne(p, flag);
  if (v !== undefined && !(allowed as readonly string[]).includes(v)) throw new UsageError(`--${flag}: ${JSON.stringify(v)} is not one of ${allowed.join(', ')}`);
  return v as T | undefined;
}

/** A bind address, checked before anything is started: a bad flag is a usage error, a bad file field a config error. */
function bindAddress(p: Parsed, flag: string, cfgFile: string | undefined, field: string, fromFile: string | undefined, dflt: string): string {
  const v = flagOne(p, flag);
  const value = v ?? fromFile ?? dflt;
  if (value === '') return value;
  try {
    parseBindAddress(value, `--${flag}`);
  } catch (e) {
    if (v === undefined && cfgFile !== undefined) throw new ConfigError(cfgFile, field, `${JSON.stringify(value)} is not host:port`);
    throw new UsageError((e as Error).message);
  }
  return value;
}

/** Merges flags over the config file. Throws UsageError or ConfigError. */
export function agentSettings(p: Parsed): AgentSettings {
  const cfgFile = flagOne(p, 'config');
  const file: AgentFileConfig = cfgFile === undefined ? {} : loadAgentConfig(cfgFile);
  const dataplane = flagOne(p, 'dataplane') ?? file.dataplane ?? 'iptables';
  if (!(DATAPLANES as readonly string[]).includes(dataplane)) throw new UsageError(`--dataplane: ${JSON.stringify(dataplane)} is not one of ${DATAPLANES.join(', ')}`);
  // File values join the flags as if given on the command line, so both pass the same checks.
  const merged: Parsed = { flags: new Map(p.flags), positional: p.positional };
  const fill = (flag: string, v: string[] | undefined): void => {
    if (v !== undefined && !merged.flags.has(flag)) merged.flags.set(flag, v);
  };
  fill('node', file.hostnameOverride === undefined ? undefined : [file.hostnameOverride]);
  fill('node-ip', file.nodeIPs);
  fill('cluster-cidr', file.clusterCIDRs);
  fill('nodeport-addresses', file.nodePortAddresses);
  if (file.masqueradeAll === true) fill('masquerade-all', ['true']);
  const manifests = [...flagAll(p, 'file'), ...p.positional];
  const kubeconfig = flagOne(p, 'kubeconfig') ?? file.kubeconfig;
  const inCluster = flagBool(p, 'in-cluster');
  const allManifests = manifests.length > 0 ? manifests : file.manifests ?? [];
  const sources = (allManifests.length > 0 ? 1 : 0) + (kubeconfig !== undefined ? 1 : 0) + (inCluster ? 1 : 0);
  if (sources !== 1) throw new UsageError('give exactly one source: -f MANIFESTS, --kubeconfig PATH or --in-cluster');
  return {
    dataplane: dataplane as DataPlaneName,
    flags: configFlags(merged, hostname()),
    manifests: allManifests,
    kubeconfig,
    inCluster,
    healthz: bindAddress(p, 'healthz-bind-address', cfgFile, 'healthzBindAddress', file.healthzBindAddress, '127.0.0.1:10256'),
    metrics: bindAddress(p, 'metrics-bind-address', cfgFile, 'metricsBindAddress', file.metricsBindAddress, '127.0.0.1:10249'),
    syncPeriodMs: duration(p, 'sync-period', file.syncPeriodMs, 30_000, SYNC_PERIOD_RANGE),
    minSyncPeriodMs: duration(p, 'min-sync-period', file.minSyncPeriodMs, 1_000, MIN_SYNC_PERIOD_RANGE),
    logLevel: oneOf(p, 'log-level', LEVELS),
    logJSON: oneOf(p, 'log-format', ['text', 'json'] as const) === undefined ? undefined : flagOne(p, 'log-format') === 'json',
    ebpf: ebpfOptions(p),
  };
}

/**
 * The eBPF options with the per-packet path's devices: as given, or the interfaces holding the
 * node IPs (none found: socket LB only, said once).
 */
async function withDevices(o: AgentSettings['ebpf'], nodeIPs: readonly string[], log: Logger): Promise<AgentSettings['ebpf']> {
  if (o.devices !== undefined) return o;
  const devices = nodeIPs.length === 0 ? [] : await readDevicesHolding(nodeIPs).catch((e: Error) => {
    log.warn('could not find the interfaces holding the node IPs', { error: e });
    return [];
  });
  if (devices.length === 0) log.warn('no interface holds a node IP (--node-ip): the eBPF per-packet path stays off; pass --devices to choose interfaces', { nodeIPs: nodeIPs.join(',') });
  return { ...o, devices };
}

/** Runs until SIGTERM/SIGINT. Resolves with the exit code. */
export async function runAgent(s: AgentSettings, logger: Logger = createLogger({ level: s.logLevel, json: s.logJSON })): Promise<number> {
  const log = logger.child({ node: s.flags.nodeName });
  const metrics = new Metrics();
  const health = new ProxyHealth(Math.max(2 * s.syncPeriodMs, 10_000));
  const tracker = new Tracker(s.flags.nodeName);
  // NodePorts without --nodeport-addresses are served on every address the kernel treats as local.
  let localAddresses: string[] = await readLocalAddresses().catch((e: Error) => {
    log.warn('could not read the node\'s local addresses; NodePorts use the node IPs until they can be read', { error: e });
    return [];
  });
  const configFor = (node: Parameters<typeof proxyConfig>[1]) => ({ ...proxyConfig(s.flags, node), localAddresses });

  // The input is read before the kernel is touched: a manifest that cannot be read stops the
  // agent here (exit 3) with nothing programmed. Changes queue in the tracker until the runner
  // starts; the first sync takes them all.
  const source: Source = s.manifests.length > 0
    ? new FileSource({ paths: s.manifests, logger: log.child({ source: 'files' }) })
    : new KubernetesSource({ kubeconfig: s.kubeconfig, inCluster: s.inCluster, nodeName: s.flags.nodeName, logger: log.child({ source: 'kubernetes' }) });
  let runner: BoundedFrequencyRunner | undefined;
  health.queued();
  await source.start((e) => {
    if (tracker.handle(e)) {
      health.queued();
      metrics.lastQueuedTimestamp.set(Date.now() / 1000);
      runner?.run();
    }
  });
  try {
    return await serve();
  } finally {
    // Whatever ended the agent, the source's watches must not keep the process alive.
    await source.stop();
  }

  async function serve(): Promise<number> {
    const ebpf = s.dataplane === 'ebpf' ? await withDevices(s.ebpf, proxyConfig(s.flags, null).nodeIPs, log) : s.ebpf;
    const dataplane = await createDataPlane(s.dataplane, { config: () => syncer.config, logger: log.child({ dataplane: s.dataplane }), ebpf });
    const serviceHealth = new ServiceHealthServers({
      // With --nodeport-addresses, only those node addresses, as NodePorts; else every address.
      addresses: () => (syncer.config.nodePortAddresses.length > 0 ? nodePortAddresses(syncer.config) : []),
      proxyHealthy: () => health.state().healthy,
      logger: log.child({ component: 'service-health' }),
    });
    let othersRemoved = false;
    const syncer: Syncer = new Syncer({
      tracker, dataplane, config: configFor, logger: log, metrics, health, fullSyncIntervalMs: FULL_SYNC_INTERVAL_MS,
      onApplied: async (changes) => {
        await serviceHealth.update(changes);
        // Another data plane's (or kube-proxy's) rules go once this one's first sync has landed:
        // until then they keep serving, so taking a node over leaves no gap.
        if (othersRemoved) return;
        othersRemoved = true;
        // Off the sync's path: it never throws, and touches no structure of this plane.
        void cleanupOtherDataPlanes(s.dataplane, { config: () => syncer.config, logger: log, ebpf: s.ebpf });
      },
    });
    await dataplane.init();
    if (dataplane.counters !== undefined) {
      const counters = dataplane.counters.bind(dataplane);
      metrics.exportDataPlaneCounters(counters, (e) => log.warn('could not read the data plane\'s counters', { error: e }));
    }

    const syncs = runner = new BoundedFrequencyRunner(async () => { await syncer.sync(); }, {
      minIntervalMs: s.minSyncPeriodMs,
      maxIntervalMs: s.syncPeriodMs,
      retryMinMs: Math.min(1000, s.minSyncPeriodMs || 1000),
      retryMaxMs: 30_000,
      onError: (e, retryIn) => log.error('sync failed, the previous rules stay in place', { error: e, retryInMs: retryIn, detail: (e as { detail?: string }).detail?.slice(0, 2000) }),
    });
    const admin = await startAdmin({
      healthz: s.healthz,
      metrics: s.metrics,
      nodeName: s.flags.nodeName,
      health,
      registry: metrics.registry,
      programmed: () => dataplane.programmed(),
      table: () => Object.fromEntries(syncer.table),
      trace: (q) => {
        const pkt = packetQuery(q);
        const r = trace(syncer.table, syncer.config, pkt);
        if (q.get('kernel') !== '1') return r;
        const dp = dataplane as { kernelTrace?: (p: typeof pkt) => KernelAnswer };
        if (dp.kernelTrace === undefined) throw new TypeError(`kernel=1 needs the ebpf data plane (this agent runs ${s.dataplane})`);
        if (pkt.protocol === 'SCTP') throw new TypeError('kernel=1 traces TCP and UDP');
        const kernel = dp.kernelTrace(pkt);
        const external = classifySource(pkt.src, syncer.config) === 'fromExternal';
        return { ...r, kernel, kernelDifferences: external ? kernelDifferences(r, kernel, localBackendsOf(syncer.table, r.service)) : null };
      },
    });
    log.info('rudder agent starting', { dataplane: s.dataplane, healthz: s.healthz || 'off', metrics: s.metrics || 'off', source: s.manifests.length > 0 ? s.manifests.join(',') : 'kubernetes' });

    syncs.start();
    const addressWatch = watchLocalAddresses((addrs) => {
      if (addrs.join(',') === localAddresses.join(',')) return;
      localAddresses = addrs;
      syncs.run();
    }, { onError: (e) => log.warn('watching the node\'s addresses', { error: e }) });

    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      process.once('SIGTERM', () => resolve('SIGTERM'));
      process.once('SIGINT', () => resolve('SIGINT'));
    });
    log.info('stopping; the programmed rules stay in place', { signal });
    syncs.stop();
    addressWatch.close();
    dataplane.close?.();
    await admin.close();
    await serviceHealth.close();
    return 0;
  }
}
