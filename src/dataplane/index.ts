// Picks a data plane by name. Each is loaded on demand so a node never loads code for data planes
// it does not use (removing another plane's leftovers loads that one briefly).

import type { ProxyConfig } from '../model/types.js';
import type { Logger } from '../observe/log.js';
import type { DataPlane, DataPlaneError, DataPlaneName } from './dataplane.js';
import type { EbpfDataPlaneOptions } from './ebpf/index.js';

export const DATAPLANES: readonly DataPlaneName[] = ['iptables', 'nftables', 'ebpf'];

export interface DataPlaneDeps {
  /** The current proxy configuration (it follows the Node object, so it is read at each sync). */
  config: () => ProxyConfig;
  logger: Logger;
  /** Options of the eBPF data plane (cgroup, pins, algorithm), from the agent's flags. */
  ebpf?: Omit<EbpfDataPlaneOptions, 'config' | 'logger'>;
}

export async function createDataPlane(name: DataPlaneName, deps: DataPlaneDeps): Promise<DataPlane> {
  switch (name) {
    case 'iptables': {
      const { IptablesDataPlane } = await import('./iptables/index.js');
      return new IptablesDataPlane({ config: deps.config, logger: deps.logger });
    }
    case 'nftables': {
      const { NftablesDataPlane } = await import('./nftables/index.js');
      return new NftablesDataPlane({ config: deps.config, logger: deps.logger });
    }
    case 'ebpf': {
      const { EbpfDataPlane } = await import('./ebpf/index.js');
      return new EbpfDataPlane({ config: deps.config, logger: deps.logger, ...deps.ebpf });
    }
  }
}

/** The data planes that are built (and so may have left rules behind). */
export const BUILT_DATAPLANES: readonly DataPlaneName[] = ['iptables', 'nftables', 'ebpf'];

/**
 * Removes what the other data planes left in this network namespace, as kube-proxy does when it
 * starts in one mode after another: rules of two proxies would both match. Never throws: a plane
 * whose tools are missing has nothing to remove, and a failure is logged.
 */
export async function cleanupOtherDataPlanes(active: DataPlaneName, deps: DataPlaneDeps): Promise<void> {
  if (active === 'nftables') {
    // The other planes' cleanups remove kube-proxy's nftables tables too; this one keeps its own.
    try {
      const { NftablesDataPlane } = await import('./nftables/index.js');
      await new NftablesDataPlane({ config: deps.config, logger: deps.logger.child({ leftovers: 'kube-proxy' }) }).removeKubeProxyTables();
    } catch (e) {
      deps.logger.warn('could not remove kube-proxy\'s nftables tables', { error: e as Error, detail: (e as DataPlaneError).detail?.slice(0, 500) });
    }
  }
  for (const name of BUILT_DATAPLANES) {
    if (name === active) continue;
    try {
      const dp = await createDataPlane(name, { ...deps, logger: deps.logger.child({ leftovers: name }) });
      await dp.cleanup();
    } catch (e) {
      deps.logger.warn('could not remove another data plane\'s leftovers', { dataplane: name, error: e as Error, detail: (e as DataPlaneError).detail?.slice(0, 500) });
    }
  }
}
