// Connected UDP sockets that still point at a backend that went away: nothing in UDP tells the
// client, so without help it keeps sending into the void (or to whatever reuses the address).
// bpf_sock_destroy (kernel 6.5+) from a UDP socket iterator closes them with ECONNABORTED, and the
// client's next connect() goes through the socket load balancer to a live backend.
//
// An iterator walks the sockets of the network namespace it is created in, so it is created once
// in each namespace that has a process in the served cgroup (found through cgroup.procs of the
// cgroup and its descendants). The main thread enters each namespace with setns, creates the
// iterator and returns, synchronously; reading the iterator runs the program.

import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../observe/log.js';
import { DataPlaneError } from '../dataplane.js';
import { BpfObject, bpfMap, closeFd, inNetns, iterCreate, type BpfLink } from './libbpf.js';
import { StaleKeyCodec } from './codecs.js';
import { SOCK_TERM_OBJECT } from './programs.js';

export class StaleUdp {
  private unsupported = false;
  /** Loaded once, on the first removal of a UDP backend (the verifier's work is not per event). */
  private loaded: { obj: BpfObject; link: BpfLink; fd: number } | undefined;

  constructor(private readonly cgroupPath: string, private readonly logger: Logger) {}

  private load(): { obj: BpfObject; link: BpfLink; fd: number } | undefined {
    if (this.loaded !== undefined || this.unsupported) return this.loaded;
    try {
      const obj = BpfObject.load(SOCK_TERM_OBJECT);
      try {
        this.loaded = { obj, link: obj.attachIter('rd_sock_term'), fd: obj.mapFd('rd_stale') };
      } catch (e) {
        obj.close();
        throw e;
      }
    } catch (e) {
      this.unsupported = true;
      this.logger.info('connected UDP sockets of removed backends will not be closed (needs bpf_sock_destroy, kernel 6.5+)', { why: (e as Error).message });
    }
    return this.loaded;
  }

  /** Closes connected UDP sockets to these backends; returns how many. Throws DataPlaneError. */
  destroy(backends: ReadonlyArray<{ ip: string; port: number; proto: number }>): number {
    if (backends.length === 0) return 0;
    const l = this.load();
    if (l === undefined) return 0;
    const keys = backends.map((b) => {
      const key = Buffer.alloc(StaleKeyCodec.size);
      StaleKeyCodec.encode(b.ip, b.port, b.proto, key);
      return key;
    });
    const one = Buffer.from([1]);
    const before = destroyedCount(l.obj);
    for (const key of keys) bpfMap.update(l.fd, key, one, 'rd_stale');
    try {
      for (const ns of this.namespaces()) {
        let nsFd = -1;
        try {
          nsFd = openSync(ns, 'r');
        } catch {
          continue; // the process is gone
        }
        try {
          const iter = inNetns(nsFd, () => iterCreate(l.link.fd));
          try {
            drain(iter);
          } finally {
            closeFd(iter);
          }
        } finally {
          closeSync(nsFd);
        }
      }
    } finally {
      // The next removal names its own backends (an address may come back as a live backend).
      for (const key of keys) bpfMap.delete(l.fd, key, 'rd_stale');
    }
    return destroyedCount(l.obj) - before;
  }

  /** Releases the iterator program. */
  close(): void {
    this.loaded?.link.destroy();
    this.loaded?.obj.close();
    this.loaded = undefined;
  }

  /** One /proc/PID/ns/net per distinct namespace of the cgroup's processes. */
  private namespaces(): string[] {
    const seen = new Map<bigint, string>();
    const walk = (dir: string): void => {
      let procs: string[] = [];
      try {
        procs = readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter((l) => l !== '');
      } catch {
        return;
      }
      for (const pid of procs) {
        const ns = `/proc/${pid}/ns/net`;
        try {
          const ino = statSync(ns, { bigint: true }).ino;
          if (!seen.has(ino)) seen.set(ino, ns);
        } catch {
          // exited
        }
      }
      let children: string[] = [];
      try {
        children = readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
      } catch {
        return;
      }
      for (const c of children) walk(join(dir, c));
    };
    if (existsSync(this.cgroupPath)) walk(this.cgroupPath);
    return [...seen.values()];
  }
}

function drain(fd: number): void {
  const buf = Buffer.alloc(4096);
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buf);
    } catch (e) {
      throw new DataPlaneError('EAPPLY', `read UDP socket iterator: ${(e as Error).message}`);
    }
    if (n === 0) return;
  }
}

/** The program's counter of destroyed sockets, in its .bss. */
function destroyedCount(obj: BpfObject): number {
  const fd = obj.mapFd('.bss');
  const key = Buffer.alloc(4);
  const val = Buffer.alloc(8);
  return bpfMap.lookup(fd, key, val, '.bss') ? Number(val.readBigUInt64LE(0)) : 0;
}
