// The addresses the kernel treats as local in this network namespace, for ProxyConfig.localAddresses:
// with no --nodeport-addresses, NodePorts are served on every one of them (the data planes match
// `addrtype LOCAL` / `fib daddr type local`), and `rudder trace` / `rudder services` need the same
// list spelled out. Read with `ip -j addr show`, followed with `ip -o monitor address`.

import { spawn as nodeSpawn } from 'node:child_process';
import { normalizeIP, parseIP } from '../model/ip.js';
import { exec as defaultExec, type ExecFn } from '../util/exec.js';

/** `ip` could not run, failed, or printed something that is not its JSON. */
export class LocalAddressError extends Error {
  readonly code = 'ELOCALADDR';
  constructor(message: string, readonly detail = '') {
    super(message);
    this.name = 'LocalAddressError';
  }
}

interface IpAddrInfo {
  family?: unknown;
  local?: unknown;
  dadfailed?: unknown;
}

/**
 * Never NodePort addresses: loopback, since localhost NodePorts need route_localnet, which Rudder
 * does not set, and IPv6 link-local, which is only meaningful with an interface attached.
 */
function usable(ip: string): boolean {
  const p = parseIP(ip);
  if (p === null) return false;
  if (p.family === 4) return p.value >> 24n !== 127n;
  return p.value !== 1n && p.value >> 118n !== 0x3fan;
}

function compare(a: string, b: string): number {
  const pa = parseIP(a)!;
  const pb = parseIP(b)!;
  if (pa.family !== pb.family) return pa.family - pb.family;
  return pa.value < pb.value ? -1 : pa.value > pb.value ? 1 : 0;
}

/**
 * The usable local addresses in `ip -j addr show` output: canonical text, IPv4 first, each family
 * in address order (so a re-created interface does not look like a change). Throws
 * LocalAddressError when the text is not that JSON.
 */
/** The links of `ip -j addr show` output. Throws LocalAddressError when it is not that JSON. */
function ipLinks(text: string): Array<{ ifname?: unknown; addr_info?: unknown }> {
  let links: unknown;
  try {
    links = JSON.parse(text);
  } catch (e) {
    throw new LocalAddressError(`ip -j addr show: unreadable output: ${(e as Error).message}`);
  }
  if (!Array.isArray(links)) throw new LocalAddressError('ip -j addr show: expected a list of links');
  return links as Array<{ ifname?: unknown; addr_info?: unknown }>;
}

export function parseIpAddrJSON(text: string): string[] {
  const out = new Set<string>();
  for (const link of ipLinks(text)) {
    const infos = link?.addr_info;
    if (!Array.isArray(infos)) continue;
    for (const a of infos as IpAddrInfo[]) {
      if ((a.family !== 'inet' && a.family !== 'inet6') || typeof a.local !== 'string') continue;
      // A duplicate-address-detection failure leaves the address on the link but never usable.
      if (a.dadfailed === true) continue;
      const ip = normalizeIP(a.local);
      if (ip !== null && usable(ip)) out.add(ip);
    }
  }
  return [...out].sort(compare);
}

/**
 * The interfaces in `ip -j addr show` output that hold one of `ips` (the node's addresses): where
 * the per-packet path attaches when no devices are given, as Cilium detects its devices.
 */
export function devicesHolding(text: string, ips: readonly string[]): string[] {
  const links = ipLinks(text);
  const want = new Set(ips.map((ip) => normalizeIP(ip)).filter((ip): ip is string => ip !== null));
  const out: string[] = [];
  for (const link of links) {
    if (typeof link?.ifname !== 'string' || !Array.isArray(link.addr_info)) continue;
    if ((link.addr_info as IpAddrInfo[]).some((a) => typeof a.local === 'string' && want.has(normalizeIP(a.local) ?? ''))) out.push(link.ifname);
  }
  return out;
}

/** The interfaces of this namespace holding one of `ips`. Throws LocalAddressError. */
export async function readDevicesHolding(ips: readonly string[], exec: ExecFn = defaultExec): Promise<string[]> {
  const r = await exec(['ip', '-j', 'addr', 'show'], { timeoutMs: 10_000 }).catch((e: Error) => {
    throw new LocalAddressError(`ip -j addr show could not run: ${e.message}`);
  });
  if (r.code !== 0) throw new LocalAddressError(`ip -j addr show failed (exit ${r.code})`, r.stderr.trim());
  return devicesHolding(r.stdout, ips);
}

/** This namespace's usable local addresses (see parseIpAddrJSON). Throws LocalAddressError. */
export async function readLocalAddresses(exec: ExecFn = defaultExec): Promise<string[]> {
  let r;
  try {
    r = await exec(['ip', '-j', 'addr', 'show'], { timeoutMs: 10_000 });
  } catch (e) {
    throw new LocalAddressError(`ip -j addr show could not run: ${(e as Error).message}`);
  }
  if (r.code !== 0) throw new LocalAddressError(`ip -j addr show failed (exit ${r.code})`, r.stderr.trim());
  return parseIpAddrJSON(r.stdout);
}

/** The part of a child process the watcher uses, so tests can hand it a fake. */
export interface MonitorProcess {
  stdout: NodeJS.ReadableStream | null;
  on(event: 'exit', listener: (code: number | null) => void): unknown;
  on(event: 'error', listener: (e: Error) => void): unknown;
  kill(): unknown;
}

export interface WatchOptions {
  exec?: ExecFn;
  spawn?: (argv: readonly string[]) => MonitorProcess;
  /** Events arrive in bursts (an interface coming up adds several addresses): one read per burst. Default 250 ms. */
  debounceMs?: number;
  /** Restart delay after `ip monitor` exits. Default 1 s. */
  restartMs?: number;
  /** Failed reads and monitor exits; the watcher keeps going either way. */
  onError?: (e: Error) => void;
}

const spawnMonitor = (argv: readonly string[]): MonitorProcess =>
  nodeSpawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'ignore'] });

/**
 * Calls `onChange` with the local addresses now, then whenever they change (a burst of address
 * events, debounced, then one read; only a different list is reported). Never throws: failures
 * go to `onError`, and a monitor that exits is restarted.
 */
export function watchLocalAddresses(onChange: (addresses: string[]) => void, opts: WatchOptions = {}): { close(): void } {
  return watchIp('address', readLocalAddresses, (a) => a, onChange, opts);
}

/**
 * The same for `what` in general: `ip -o monitor <what>` says when to `read` again; `key` tells
 * whether what was read changed.
 */
export function watchIp<T>(what: 'address' | 'route', readState: (exec: ExecFn) => Promise<T[]>, key: (t: T) => string, onChange: (state: T[]) => void, opts: WatchOptions = {}): { close(): void } {
  const exec = opts.exec ?? defaultExec;
  const spawn = opts.spawn ?? spawnMonitor;
  const debounceMs = opts.debounceMs ?? 250;
  const restartMs = opts.restartMs ?? 1000;
  const onError = opts.onError ?? (() => {});
  let closed = false;
  let last: string | undefined;
  let timer: NodeJS.Timeout | undefined;
  let restart: NodeJS.Timeout | undefined;
  let child: MonitorProcess | undefined;
  let reading = false;
  let again = false;

  const read = async (): Promise<void> => {
    // One read at a time; events during a read cause one more read after it.
    if (reading) { again = true; return; }
    reading = true;
    try {
      do {
        again = false;
        try {
          const state = await readState(exec);
          const k = state.map(key).join(',');
          if (!closed && k !== last) {
            last = k;
            onChange(state);
          }
        } catch (e) {
          if (!closed) onError(e as Error);
        }
      } while (again && !closed);
    } finally {
      reading = false;
    }
  };

  const poke = (): void => {
    if (closed) return;
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => { timer = undefined; void read(); }, debounceMs);
  };

  const start = (): void => {
    if (closed) return;
    let c: MonitorProcess;
    try {
      c = spawn(['ip', '-o', 'monitor', what]);
    } catch (e) {
      onError(new LocalAddressError(`ip -o monitor ${what} could not run: ${(e as Error).message}`));
      restart = setTimeout(start, restartMs);
      return;
    }
    child = c;
    c.stdout?.on('data', poke);
    let ended = false;
    const onEnd = (why: string): void => {
      if (ended) return;
      ended = true;
      if (closed) return;
      onError(new LocalAddressError(`ip -o monitor ${what} ${why}; restarting`));
      // Changes made while no monitor ran would go unseen: read again once it is back.
      restart = setTimeout(() => { start(); poke(); }, restartMs);
    };
    c.on('error', (e) => onEnd(`failed: ${e.message}`));
    c.on('exit', (code) => onEnd(`exited (${code ?? 'signal'})`));
  };

  start();
  void read();
  return {
    close(): void {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      if (restart !== undefined) clearTimeout(restart);
      child?.kill();
    },
  };
}
