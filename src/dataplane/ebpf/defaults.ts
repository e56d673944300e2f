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
  /** rd_ct: connection tracking entries of the per-packet path (two per flow). */
  ct: number;
}

export const DEFAULT_MAP_SIZES: MapSizes = { services: 524288, backends: 262144, sockets: 262144, affinity: 65536, maglevTableSize: 16381, maglevServices: 4096, ct: 262144 };

/**
 * Above Linux's default ephemeral range (net.ipv4.ip_local_port_range 32768-60999), so the node's
 * own connections never pick a port an SNATed flow holds; the agent warns when the node's range
 * overlaps it.
 */
export const DEFAULT_SNAT_PORTS: [number, number] = [61000, 65535];

/** A Linux interface name (IFNAMSIZ 16 with the NUL), safe as a path component. */
export const DEVICE_NAME = /^(?!\.{1,2}$)[A-Za-z0-9_.@:-]{1,15}$/;
