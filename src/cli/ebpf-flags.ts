// The eBPF data plane's flags, shared by `rudder agent` and `rudder cleanup` (which must find
// the same pins).

import { isAbsolute } from 'node:path';
import type { EbpfDataPlaneOptions, LbAlgorithm } from '../dataplane/ebpf/index.js';
import { DEFAULT_MAGLEV_TABLE_SIZE, MAGLEV_TABLE_SIZES } from '../dataplane/ebpf/maglev.js';
import { DEFAULT_CT_TIMEOUTS, DEFAULT_MAP_SIZES, DEFAULT_PIN_PATH, DEFAULT_SNAT_PORTS, DEVICE_NAME } from '../dataplane/ebpf/defaults.js';
import { LB_ALGORITHM_ANNOTATION } from '../source/decode.js';
import { UsageError, flagBool, flagOne, type FlagSpecs, type Parsed } from './args.js';

export const EBPF_PIN_FLAG: FlagSpecs = {
  'bpf-pin-path': { value: 'DIR', help: `eBPF: bpffs directory for pinned maps and links, root-only (default ${DEFAULT_PIN_PATH})` },
};

export const EBPF_FLAGS: FlagSpecs = {
  'cgroup-root': { value: 'PATH', help: 'eBPF: the cgroup v2 directory whose processes are load-balanced at connect() (default: the cgroup v2 mount)' },
  ...EBPF_PIN_FLAG,
  'socket-lb-host-namespace-only': { boolean: true, help: 'eBPF: translate only the host namespace\'s sockets at connect(); pods\' traffic is left to the per-packet path (for service meshes)' },
  'lb-algorithm': { value: 'random|maglev', help: `eBPF: backend selection (default random; the ${LB_ALGORITHM_ANNOTATION} annotation overrides it per service)` },
  'maglev-table-size': { value: 'PRIME', help: `eBPF: Maglev lookup table size, one of ${MAGLEV_TABLE_SIZES.join(', ')} (default ${DEFAULT_MAGLEV_TABLE_SIZE})` },
  'bpf-lb-map-max': { value: 'N', help: `eBPF: entries of the service map: every frontend's master and backend slots (default ${DEFAULT_MAP_SIZES.services})` },
  devices: { value: 'IF,...|none', help: 'eBPF: interfaces whose packets are translated per packet (external clients of NodePorts, external and LB IPs); default: the interfaces holding the node IPs; none: socket LB only' },
  'bpf-ct-max': { value: 'N', help: `eBPF: connection tracking entries of the per-packet path, two per flow (default ${DEFAULT_MAP_SIZES.ct})` },
  'bpf-snat-ports': { value: 'MIN-MAX', help: `eBPF: source ports of flows masqueraded to the node, the node's ephemeral range (net.ipv4.ip_local_port_range) left out (default ${DEFAULT_SNAT_PORTS.join('-')})` },
  'bpf-ct-timeout-tcp-syn': { value: 'DURATION', help: `eBPF: per-packet connection tracking: a TCP flow that only sent SYNs (default ${DEFAULT_CT_TIMEOUTS.tcpSyn}s)` },
  'bpf-ct-timeout-tcp': { value: 'DURATION', help: `eBPF: an established TCP flow without packets (default ${DEFAULT_CT_TIMEOUTS.tcpEstablished / 3600}h)` },
  'bpf-ct-timeout-tcp-closing': { value: 'DURATION', help: `eBPF: a TCP flow after a FIN or RST, its SNAT port held meanwhile (default ${DEFAULT_CT_TIMEOUTS.tcpClosing}s)` },
  'bpf-ct-timeout-udp': { value: 'DURATION', help: `eBPF: a UDP flow without packets (default ${DEFAULT_CT_TIMEOUTS.udp}s)` },
};

function absolute(p: Parsed, flag: string): string | undefined {
  const v = flagOne(p, flag);
  if (v !== undefined && (!isAbsolute(v) || v.includes('\0'))) throw new UsageError(`--${flag}: ${JSON.stringify(v)} is not an absolute path`);
  return v;
}

function positiveInt(p: Parsed, flag: string, max: number): number | undefined {
  const v = flagOne(p, flag);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > max) throw new UsageError(`--${flag}: ${JSON.stringify(v)} is not an integer in 1..${max}`);
  return n;
}

/** A duration in whole seconds ("90s", "10m", "6h", or plain seconds), 1 s to 7 days. Throws UsageError. */
function seconds(p: Parsed, flag: string): number | undefined {
  const v = flagOne(p, flag);
  if (v === undefined) return undefined;
  const m = /^(\d+)(s|m|h)?$/.exec(v);
  const n = m === null ? NaN : Number(m[1]) * (m[2] === 'h' ? 3600 : m[2] === 'm' ? 60 : 1);
  if (!(n >= 1 && n <= 7 * 86400)) throw new UsageError(`--${flag}: ${JSON.stringify(v)} is not a duration of whole seconds between 1s and 168h (e.g. 10s, 5m, 6h)`);
  return n;
}

/** The eBPF options the flags give. Throws UsageError naming the flag. */
export function ebpfOptions(p: Parsed): Omit<EbpfDataPlaneOptions, 'config' | 'logger'> {
  const out: Omit<EbpfDataPlaneOptions, 'config' | 'logger'> = {};
  const cg = absolute(p, 'cgroup-root');
  if (cg !== undefined) out.cgroupPath = cg;
  const pin = absolute(p, 'bpf-pin-path');
  if (pin !== undefined) out.pinPath = pin;
  if (flagBool(p, 'socket-lb-host-namespace-only')) out.hostNamespaceOnly = true;
  const alg = flagOne(p, 'lb-algorithm');
  if (alg !== undefined) {
    if (alg !== 'random' && alg !== 'maglev') throw new UsageError(`--lb-algorithm: ${JSON.stringify(alg)} is not one of random, maglev`);
    out.lbAlgorithm = alg as LbAlgorithm;
  }
  const m = positiveInt(p, 'maglev-table-size', 131071);
  const services = positiveInt(p, 'bpf-lb-map-max', 16_777_216);
  if (m !== undefined && !MAGLEV_TABLE_SIZES.includes(m)) throw new UsageError(`--maglev-table-size: ${m} is not one of ${MAGLEV_TABLE_SIZES.join(', ')}`);
  const ct = positiveInt(p, 'bpf-ct-max', 16_777_216);
  if (m !== undefined || services !== undefined || ct !== undefined) {
    out.sizes = { ...(m === undefined ? {} : { maglevTableSize: m }), ...(services === undefined ? {} : { services }), ...(ct === undefined ? {} : { ct }) };
  }
  const devices = flagOne(p, 'devices');
  if (devices !== undefined) {
    const list = devices === 'none' ? [] : devices.split(',').map((d) => d.trim());
    const bad = list.find((d) => !DEVICE_NAME.test(d));
    if (bad !== undefined) throw new UsageError(`--devices: ${JSON.stringify(bad)} is not an interface name`);
    out.devices = list;
  }
  const snat = flagOne(p, 'bpf-snat-ports');
  if (snat !== undefined) {
    const m2 = /^(\d{1,5})-(\d{1,5})$/.exec(snat);
    const lo = Number(m2?.[1]);
    const hi = Number(m2?.[2]);
    if (m2 === null || lo < 1024 || hi > 65535 || lo > hi) throw new UsageError(`--bpf-snat-ports: ${JSON.stringify(snat)} is not MIN-MAX with 1024 <= MIN <= MAX <= 65535`);
    out.snatPorts = [lo, hi];
  }
  const timeouts = { ...DEFAULT_CT_TIMEOUTS };
  let ctSet = false;
  for (const [flag, field] of [['bpf-ct-timeout-tcp-syn', 'tcpSyn'], ['bpf-ct-timeout-tcp', 'tcpEstablished'], ['bpf-ct-timeout-tcp-closing', 'tcpClosing'], ['bpf-ct-timeout-udp', 'udp']] as const) {
    const v = seconds(p, flag);
    if (v !== undefined) {
      timeouts[field] = v;
      ctSet = true;
    }
  }
  if (ctSet) out.ctTimeouts = timeouts;
  return out;
}
