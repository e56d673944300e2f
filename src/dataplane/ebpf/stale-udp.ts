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
import { BpfObject, bpfMap, closeFd, inNetns, iterCreate } from './libbpf.js';
import { StaleKeyCodec } from './codecs.js';
import { SOCK_TERM_OBJECT } from './programs.js';

export class StaleUdp {
  private unsupported = false;

  constructor(private readonly cgroupPath: string, private readonly logger: Logger) {}

  /** Closes connected UDP sockets to these backends; returns how many. Throws DataPlaneError. */
  destroy(backends: ReadonlyArray<{ ip: string; port: number; proto: number }>): number {
    if (this.unsupported || backends.length === 0) return 0;
    let obj: BpfObject;
    try {
      obj = BpfObject.load(SOCK_TERM_OBJECT);
    } catch (e) {
      this.unsupported = true;
      this.logger.info('connected UDP sockets of removed backends will not be closed (needs bpf_sock_destroy, kernel 6.5+)', { why: (e as Error).message });
      return 0;
    }
    try {
      const fd = obj.mapFd('rd_stale');
      const key = Buffer.alloc(StaleKeyCodec.size);
      const one = Buffer.from([1]);
      for (const b of backends) {
        StaleKeyCodec.encode(b.ip, b.port, b.proto, key);
        bpfMap.update(fd, key, one, 'rd_stale');
      }
      const link = obj.attachIter('rd_sock_term');
      try {
        for (const ns of this.namespaces()) {
          let nsFd = -1;
          try {
            nsFd = openSync(ns, 'r');
          } catch {
            continue; // the process is gone
          }
          try {
            const iter = inNetns(nsFd, () => iterCreate(link.fd));
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
        link.destroy();
      }
      return destroyedCount(obj);
    } finally {
      obj.close();
    }
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
