// What /proc says about a running process (an agent the benchmark started): resident memory and
// CPU time. Both return NaN rather than throw when the process is gone or the file unreadable, so
// a figure is missing instead of a run failing.

import { readFileSync } from 'node:fs';

/** USER_HZ: the unit of /proc/<pid>/stat times, 100 on every Linux architecture Rudder runs on. */
const CLOCK_TICKS = 100;

/** Resident memory (VmRSS) in MiB, or NaN. */
export function rssMiB(pid: number | undefined): number {
  try {
    const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb === undefined ? NaN : Number(kb) / 1024;
  } catch {
    return NaN;
  }
}

/** CPU time used so far (user + system, this process only), ms, or NaN. */
export function cpuMs(pid: number | undefined): number {
  try {
    // After the command name (which may hold spaces and parentheses): state is field 3, utime 14, stime 15.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}
