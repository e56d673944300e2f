// Picks a data plane by name. Each is loaded on demand so a node never loads code (or checks
// tools) for data planes it does not use.

import type { ProxyConfig } from '../model/types.js';
import type { Logger } from '../observe/log.js';
import { DataPlaneError, type DataPlane, type DataPlaneName } from './dataplane.js';

export const DATAPLANES: readonly DataPlaneName[] = ['iptables', 'nftables', 'ebpf'];

export interface DataPlaneDeps {
  /** The current proxy configuration (it follows the Node object, so it is read at each sync). */
  config: () => ProxyConfig;
  logger: Logger;
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
    case 'ebpf':
      throw new DataPlaneError('EUNSUPPORTED', `the ${name} data plane is not built yet; use --dataplane iptables`);
  }
}
