// The whole machine's CPU time from /proc/stat, read around each wrk run of the traffic benchmark:
// the CPU seconds spent while a configuration served its requests, divided by their number, stand
// in for instructions per request (these machines have no hardware performance counters).

import { readFileSync } from 'node:fs';

/** USER_HZ: the unit of /proc/stat times, 100 on every Linux architecture Rudder runs on. */
const CLOCK_TICKS = 100;

/**
 * Busy CPU seconds so far, summed over every CPU, from /proc/stat text: user + nice + system +
 * irq + softirq + steal of the aggregate `cpu` line. Guest time is already inside user and nice;
 * idle and iowait are not busy. NaN when the line is missing or unreadable.
 */
export function busyCpuSeconds(stat: string): number {
  const line = /^cpu\s+(.*)$/m.exec(stat)?.[1];
  if (line === undefined) return NaN;
  const f = line.trim().split(/\s+/).map(Number);
  if (f.length < 8 || f.slice(0, 8).some((x) => !Number.isFinite(x))) return NaN;
  const [user, nice, system, , , irq, softirq, steal] = f as [number, number, number, number, number, number, number, number];
  return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS;
}

/** This machine's busy CPU seconds so far (see busyCpuSeconds), or NaN if /proc/stat cannot be read. */
export function machineBusyCpuSeconds(): number {
  try {
    return busyCpuSeconds(readFileSync('/proc/stat', 'utf8'));
  } catch {
    return NaN;
  }
}

/** CPU microseconds per request: busy CPU seconds over requests served; NaN without requests or figures. */
export function cpuUsPerRequest(busySeconds: number, requests: number): number {
  return requests > 0 && Number.isFinite(busySeconds) && busySeconds >= 0 ? (busySeconds * 1e6) / requests : NaN;
}
