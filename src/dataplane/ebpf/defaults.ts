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
 * Source ports of flows masqueraded to the node: every unprivileged port but the node's ephemeral
 * range (net.ipv4.ip_local_port_range, read at start), which the node's own connections pick
 * from without seeing these flows. About 36,000 ports per backend with Linux's default range.
 */
export const DEFAULT_SNAT_PORTS: [number, number] = [1024, 65535];

/** A Linux interface name (IFNAMSIZ 16 with the NUL), safe as a path component. */
export const DEVICE_NAME = /^(?!\.{1,2}$)[A-Za-z0-9_.@:-]{1,15}$/;

/** Connection tracking timeouts of the per-packet path, in seconds. */
export interface CtTimeouts {
  tcpSyn: number;
  tcpEstablished: number;
  tcpClosing: number;
  udp: number;
}

/** As Cilium's defaults: a SYN a minute, established TCP 6 hours, closing 10 s, UDP a minute. */
export const DEFAULT_CT_TIMEOUTS: CtTimeouts = { tcpSyn: 60, tcpEstablished: 21600, tcpClosing: 10, udp: 60 };
