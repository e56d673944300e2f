// The eBPF plane's defaults as plain constants: the CLI's help text reads them without loading
// libbpf.

export const DEFAULT_PIN_PATH = '/sys/fs/bpf/rudder';

export interface MapSizes {
  /** rd_services elements: every frontend's master and backend slots. */
  services: number;
  backends: number;
  /** rd_rev_sk: translated sockets remembered for recvmsg/getpeername. */
  sockets: number;
  affinity: number;
  /** Maglev table size (prime). */
  maglevTableSize: number;
  /** Frontends that may use Maglev at once. */
  maglevServices: number;
}

export const DEFAULT_MAP_SIZES: MapSizes = { services: 524288, backends: 262144, sockets: 262144, affinity: 65536, maglevTableSize: 16381, maglevServices: 4096 };
