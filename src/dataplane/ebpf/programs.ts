// Loading, pinning and attaching the socket load balancer, so that its state outlives the agent.
//
// Pin layout (bpffs, directory mode 0700, root only):
//   <pin>/rd_services, rd_backends, ...   the maps (libbpf LIBBPF_PIN_BY_NAME), shared by both objects
//   <pin>/links/rd_connect4, ...          one BPF link per hook, attached to the cgroup
//   <pin>/tc/<interface>/                 one empty directory per interface the per-packet programs
//                                         are attached to (tc filters have no link to pin, and bpffs
//                                         holds no files: this is their record)
//   <pin>/tc-pod/<interface>/             the same for pod-facing interfaces (rd_from_pod)
// A starting agent loads a fresh copy of the programs, adopts the pinned maps (libbpf reuses a
// pinned map whose type, sizes and flags match; one that does not match is unpinned and recreated,
// and the first sync refills it), and swaps each pinned link to the new program with
// BPF_LINK_UPDATE: the hooks never run without a program and nothing is detached, so connections
// keep being translated while the agent is down or restarting. A link attached to another cgroup
// than the one asked for is detached and re-attached there.

import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, rmdirSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { bpffsMounts } from '../../util/mounts.js';
import { DataPlaneError } from '../dataplane.js';
import type { Logger } from '../../observe/log.js';
import { BpfObject, closeFd, ifIndex, linkInfo, linkUpdate, mapInfo, objGet, tcAttach, tcDetach, TC_EGRESS, TC_INGRESS, type MapSpec } from './libbpf.js';
import { KnobsCodec, type Knobs } from './codecs.js';
import { MAP_NAMES, type MapFds } from './maps.js';
import type { MapSizes } from './defaults.js';

export { DEFAULT_MAP_SIZES, DEFAULT_PIN_PATH, type MapSizes } from './defaults.js';
import { DEVICE_NAME } from './defaults.js';

/** The compiled objects (scripts/build-bpf.sh writes them at setup). */
export const BPF_BUILD_DIR = fileURLToPath(new URL('../../../../bpf/build/', import.meta.url));
export const SOCK_LB_OBJECT = join(BPF_BUILD_DIR, 'sock_lb.o');
export const SOCK_TERM_OBJECT = join(BPF_BUILD_DIR, 'sock_term.o');
export const TC_OBJECT = join(BPF_BUILD_DIR, 'tc_nodeport.o');

/** The per-packet path's own maps (lib/ct.h), besides the shared ones. */
export const TC_MAP_NAMES = ['rd_ct', 'rd_aff_ext', 'rd_ct_ends'] as const;
export type TcMapName = (typeof TC_MAP_NAMES)[number];

/** The filter the per-packet programs sit in, on each interface's clsact ingress and egress. */
export const TC_HANDLE = 0x5244;
export const TC_PRIORITY = 1;

/** The hooks, in attach order: reverse translation first, so no translated socket misses it. */
export const SOCKET_HOOKS = [
  'rd_recvmsg4', 'rd_getpeername4', 'rd_recvmsg6', 'rd_getpeername6',
  'rd_connect4', 'rd_sendmsg4', 'rd_connect6', 'rd_sendmsg6',
] as const;

const BPFFS = '/sys/fs/bpf';

function onBpffs(pin: string, mounts: readonly string[]): boolean {
  return mounts.some((m) => pin === m || pin.startsWith(m.endsWith('/') ? m : `${m}/`));
}

/** Pins need bpffs; like Cilium, the agent mounts it at /sys/fs/bpf when nothing is mounted there. */
function ensurePinDir(pin: string): void {
  let mounts = bpffsMounts();
  if (!onBpffs(pin, mounts) && (pin === BPFFS || pin.startsWith(`${BPFFS}/`)) && existsSync(BPFFS)) {
    const r = spawnSync('mount', ['-t', 'bpf', 'bpf', BPFFS], { encoding: 'utf8', timeout: 10_000 });
    if (r.status !== 0) throw new DataPlaneError('EINIT', `mount -t bpf bpf ${BPFFS}: ${(r.stderr ?? '').trim() || r.error?.message || `exit ${r.status}`}`);
    mounts = bpffsMounts();
  }
  if (!onBpffs(pin, mounts)) {
    throw new DataPlaneError('EINIT', `${pin} is not on a bpffs mount (mounted: ${mounts.join(', ') || 'none'}); mount one with \`mount -t bpf bpf /sys/fs/bpf\`${mounts.length === 0 ? '' : ' or choose --bpf-pin-path under it'}`);
  }
  mkdirSync(join(pin, 'links'), { recursive: true, mode: 0o700 });
  chmodSync(pin, 0o700);
  chmodSync(join(pin, 'links'), 0o700);
}

/** Unpins a pinned map that the new object could not reuse, so libbpf creates it afresh. */
function dropIncompatiblePins(pin: string, spec: (name: string) => MapSpec, logger: Logger, names: readonly string[] = MAP_NAMES): void {
  for (const name of names) {
    const path = join(pin, name);
    if (!existsSync(path)) continue;
    const want = spec(name);
    let fd = -1;
    try {
      fd = objGet(path);
      const have = mapInfo(fd);
      if (have.type !== want.type || have.keySize !== want.keySize || have.valueSize !== want.valueSize || have.maxEntries !== want.maxEntries) {
        logger.warn('pinned map does not match this version or these sizes: recreating it (the first sync refills it)', { map: name, have: `${have.keySize}/${have.valueSize}/${have.maxEntries}`, want: `${want.keySize}/${want.valueSize}/${want.maxEntries}` });
        unlinkSync(path);
      }
    } finally {
      if (fd >= 0) closeFd(fd);
    }
  }
}

export interface LoadOptions {
  pinPath: string;
  cgroupPath: string;
  knobs: Knobs;
  sizes: MapSizes;
  logger: Logger;
  objectPath?: string;
}

/** The loaded socket load balancer: map fds for the data plane, links pinned. */
export interface SocketLB {
  obj: BpfObject;
  fds: MapFds;
  /** Hooks that were already attached (adopted from pins) rather than attached now. */
  adopted: number;
  close(): void;
}

/**
 * Loads the programs, adopts or creates the pinned maps, and attaches (or swaps) every hook on
 * `cgroupPath`. Throws DataPlaneError EINIT (with the verifier log on rejection) or EAPPLY.
 */
export function loadSocketLB(o: LoadOptions): SocketLB {
  const objectPath = o.objectPath ?? SOCK_LB_OBJECT;
  if (!existsSync(objectPath)) throw new DataPlaneError('EINIT', `${objectPath} is missing: run scripts/setup.sh (it compiles bpf/ with clang)`);
  ensurePinDir(o.pinPath);
  const obj = BpfObject.load(objectPath, {
    pinRoot: o.pinPath,
    configure: (spec) => {
      sizeShared(spec, o);
      dropIncompatiblePins(o.pinPath, spec, o.logger);
    },
  });
  try {
    const fds = Object.fromEntries(MAP_NAMES.map((n) => [n, obj.mapFd(n)])) as MapFds;
    const adopted = attachHooks(obj, o);
    return { obj, fds, adopted, close: () => obj.close() };
  } catch (e) {
    obj.close();
    throw e;
  }
}

/** The knobs and the sizes of the maps both objects share (a pinned map is reused only if they match). */
function sizeShared(spec: (name: string) => MapSpec, o: { knobs: Knobs; sizes: MapSizes }): void {
  spec('.rodata').setInitialValue(KnobsCodec.encode(o.knobs));
  spec('rd_services').setMaxEntries(o.sizes.services);
  spec('rd_backends').setMaxEntries(o.sizes.backends);
  spec('rd_be_stats').setMaxEntries(o.sizes.backends);
  spec('rd_rev_sk').setMaxEntries(o.sizes.sockets);
  spec('rd_affinity').setMaxEntries(o.sizes.affinity);
  spec('rd_maglev').setValueSize(4 * o.sizes.maglevTableSize);
  spec('rd_maglev').setMaxEntries(o.sizes.maglevServices);
}

export interface PerPacketOptions {
  pinPath: string;
  knobs: Knobs;
  sizes: MapSizes;
  /** Interfaces (in this process's network namespace) whose traffic is translated. */
  devices: readonly string[];
  logger: Logger;
  objectPath?: string;
}

/** The loaded per-packet programs, attached to `devices`. */
export interface PerPacket {
  obj: BpfObject;
  fds: Record<TcMapName, number>;
  devices: string[];
  close(): void;
}


type DeviceRole = 'tc' | 'tc-pod';

function recordedDevices(pin: string, role: DeviceRole = 'tc'): string[] {
  try {
    return readdirSync(join(pin, role)).filter((d) => DEVICE_NAME.test(d));
  } catch {
    return [];
  }
}

function record(pin: string, dev: string, role: DeviceRole = 'tc'): void {
  mkdirSync(join(pin, role, dev), { recursive: true, mode: 0o700 });
}

function unrecord(pin: string, dev: string, role: DeviceRole = 'tc'): void {
  rmSync(join(pin, role, dev), { recursive: true, force: true });
}

/**
 * Loads the per-packet programs on the maps socket LB pinned (call loadSocketLB first), and
 * attaches them to every device's clsact ingress and egress, replacing what an earlier agent left
 * in the same filter (no gap: the swap is atomic). Devices recorded by an earlier agent and not in
 * `devices` are detached. Throws DataPlaneError EINIT.
 */
export function loadPerPacket(o: PerPacketOptions): PerPacket {
  const objectPath = o.objectPath ?? TC_OBJECT;
  if (!existsSync(objectPath)) throw new DataPlaneError('EINIT', `${objectPath} is missing: run scripts/setup.sh (it compiles bpf/ with clang)`);
  const obj = BpfObject.load(objectPath, {
    pinRoot: o.pinPath,
    configure: (spec) => {
      sizeShared(spec, o);
      spec('rd_ct').setMaxEntries(o.sizes.ct);
      spec('rd_aff_ext').setMaxEntries(o.sizes.affinity);
      dropIncompatiblePins(o.pinPath, spec, o.logger, TC_MAP_NAMES);
    },
  });
  try {
    const fds = Object.fromEntries(TC_MAP_NAMES.map((n) => [n, obj.mapFd(n)])) as Record<TcMapName, number>;
    const ingress = obj.progFd('rd_from_netdev');
    const egress = obj.progFd('rd_to_netdev');
    const before = recordedDevices(o.pinPath);
    for (const dev of o.devices) {
      if (!DEVICE_NAME.test(dev)) throw new DataPlaneError('EINIT', `not an interface name: ${JSON.stringify(dev)}`);
      const i = ifIndex(dev);
      // Recorded first: a crash half way still leaves every attached device known to cleanup.
      record(o.pinPath, dev);
      tcAttach(i, TC_INGRESS, ingress, TC_HANDLE, TC_PRIORITY, `${dev} ingress`);
      tcAttach(i, TC_EGRESS, egress, TC_HANDLE, TC_PRIORITY, `${dev} egress`);
    }
    for (const dev of before) {
      if (o.devices.includes(dev)) continue;
      detachDevice(dev);
      unrecord(o.pinPath, dev);
    }
    return { obj, fds, devices: [...o.devices], close: () => obj.close() };
  } catch (e) {
    obj.close();
    throw e;
  }
}

/**
 * Puts rd_from_pod on the ingress of exactly `devices` (the interfaces local endpoints are
 * routed through), replacing an earlier program in place and removing it from interfaces no
 * longer listed. An interface that vanished meanwhile is skipped (its filters went with it).
 * Returns the interfaces attached. Throws DataPlaneError EAPPLY.
 */
export function attachPodDevices(pp: PerPacket, pinPath: string, devices: readonly string[], logger: Logger): string[] {
  const prog = pp.obj.progFd('rd_from_pod');
  const done: string[] = [];
  for (const dev of devices) {
    if (!DEVICE_NAME.test(dev)) continue;
    let i: number;
    try {
      i = ifIndex(dev);
    } catch {
      continue;
    }
    record(pinPath, dev, 'tc-pod');
    try {
      tcAttach(i, TC_INGRESS, prog, TC_HANDLE, TC_PRIORITY, `${dev} ingress`);
      done.push(dev);
    } catch (e) {
      if (!existsSync(`/sys/class/net/${dev}`)) continue;
      throw new DataPlaneError('EAPPLY', (e as Error).message);
    }
  }
  for (const dev of recordedDevices(pinPath, 'tc-pod')) {
    if (done.includes(dev)) continue;
    try {
      detachDevice(dev, false);
    } catch (e) {
      logger.warn('could not detach from a pod interface', { device: dev, error: e as Error });
    }
    unrecord(pinPath, dev, 'tc-pod');
  }
  return done;
}

/**
 * A dry-run copy of the per-packet programs on the live pinned maps (knobs.dryRun: they decide
 * and rewrite but write no map), for `rudder trace --kernel`. Every pinned map must exist already
 * (libbpf would create a missing one, and one that does not match makes the load fail): nothing
 * under the pin directory changes. Sizes default to the pinned maps'. Throws DataPlaneError EINIT.
 */
export function loadTracer(o: { pinPath: string; knobs: Knobs; sizes?: MapSizes; objectPath?: string }): BpfObject {
  const objectPath = o.objectPath ?? TC_OBJECT;
  if (!existsSync(objectPath)) throw new DataPlaneError('EINIT', `${objectPath} is missing: run scripts/setup.sh (it compiles bpf/ with clang)`);
  const missing = [...MAP_NAMES, ...TC_MAP_NAMES].filter((n) => !existsSync(join(o.pinPath, n)));
  if (missing.length > 0) throw new DataPlaneError('EINIT', `no eBPF per-packet path pinned at ${o.pinPath} (missing ${missing.join(', ')}): is an ebpf agent running there with --devices?`);
  const sizes = o.sizes ?? pinnedSizes(o.pinPath);
  return BpfObject.load(objectPath, {
    pinRoot: o.pinPath,
    configure: (spec) => {
      sizeShared(spec, { knobs: { ...o.knobs, maglevTableSize: sizes.maglevTableSize, dryRun: true }, sizes });
      spec('rd_ct').setMaxEntries(sizes.ct);
      spec('rd_aff_ext').setMaxEntries(sizes.affinity);
    },
  });
}

/** The map sizes of a pinned plane, read from the pins. */
function pinnedSizes(pin: string): MapSizes {
  const info = (name: string) => {
    const fd = objGet(join(pin, name));
    try {
      return mapInfo(fd);
    } finally {
      closeFd(fd);
    }
  };
  const maglev = info('rd_maglev');
  return {
    services: info('rd_services').maxEntries, backends: info('rd_backends').maxEntries, sockets: info('rd_rev_sk').maxEntries,
    affinity: info('rd_affinity').maxEntries, maglevTableSize: maglev.valueSize / 4, maglevServices: maglev.maxEntries, ct: info('rd_ct').maxEntries,
  };
}

/** Removes Rudder's filter from a device's ingress (and egress) (a device that is gone has none). */
function detachDevice(dev: string, egress = true): void {
  let i: number;
  try {
    i = ifIndex(dev);
  } catch {
    return;
  }
  tcDetach(i, TC_INGRESS, TC_HANDLE, TC_PRIORITY, `${dev} ingress`);
  if (egress) tcDetach(i, TC_EGRESS, TC_HANDLE, TC_PRIORITY, `${dev} egress`);
}

function cgroupId(path: string): bigint {
  return statSync(path, { bigint: true }).ino;
}

function attachHooks(obj: BpfObject, o: LoadOptions): number {
  const want = cgroupId(o.cgroupPath);
  let adopted = 0;
  let cgFd = -1;
  try {
    for (const prog of SOCKET_HOOKS) {
      const pinned = join(o.pinPath, 'links', prog);
      if (existsSync(pinned)) {
        const fd = objGet(pinned);
        try {
          if (linkInfo(fd).cgroupId === want) {
            linkUpdate(fd, obj.progFd(prog), prog);
            adopted++;
            continue;
          }
          o.logger.info('a pinned hook is attached to another cgroup: moving it', { hook: prog, cgroup: o.cgroupPath });
        } finally {
          closeFd(fd);
        }
        unlinkSync(pinned);
      }
      if (cgFd < 0) cgFd = openSync(o.cgroupPath, 'r');
      const link = obj.attachCgroup(prog, cgFd);
      try {
        link.pin(pinned);
      } finally {
        // The pin keeps the attachment; closing this process's reference does not detach it.
        link.destroy();
      }
    }
  } finally {
    if (cgFd >= 0) closeSync(cgFd);
  }
  return adopted;
}

/**
 * Detaches every hook (unpinning a link detaches it once no process holds it) and removes every
 * pinned map and the pin directory. Idempotent. Throws DataPlaneError ECLEANUP.
 */
export function removePins(pin: string): void {
  if (!existsSync(pin)) return;
  try {
    // tc filters hold the programs without a pin: detach them where they were recorded.
    for (const dev of recordedDevices(pin)) detachDevice(dev);
    for (const dev of recordedDevices(pin, 'tc-pod')) detachDevice(dev, false);
    const links = join(pin, 'links');
    if (existsSync(links)) {
      for (const f of readdirSync(links)) unlinkSync(join(links, f));
      rmdirSync(links);
    }
    rmSync(pin, { recursive: true, force: true });
  } catch (e) {
    throw new DataPlaneError('ECLEANUP', `remove BPF pins under ${pin}: ${(e as Error).message}`);
  }
}
