// Where filesystems are mounted, from /proc/self/mountinfo: the cgroup v2 hierarchy (lab cgroups,
// the eBPF plane's attach point) and bpffs (the eBPF plane's pins). Hard-coded paths differ
// between hosts (here cgroup v2 is at /sys/fs/cgroup/unified).

import { readFileSync } from 'node:fs';

interface Mount {
  /** The mounted part of the filesystem (field 4). */
  root: string;
  point: string;
}

/** mountinfo writes space, tab, newline and backslash as octal escapes (`\040`). */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The mounts of one filesystem type in a mountinfo text. */
export function parseMounts(mountinfo: string, fstype: string): Mount[] {
  const found: Mount[] = [];
  for (const line of mountinfo.split('\n')) {
    // id parent major:minor root mount-point options [optional fields...] - fstype source super-options
    const dash = line.indexOf(' - ');
    if (dash < 0) continue;
    const left = line.slice(0, dash).split(' ');
    if (line.slice(dash + 3).split(' ')[0] !== fstype || left.length < 5) continue;
    found.push({ root: unescapeMountField(left[3]!), point: unescapeMountField(left[4]!) });
  }
  return found;
}

function readMountinfo(): string {
  try {
    return readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return '';
  }
}

/**
 * The cgroup2 mount point in a /proc/self/mountinfo text, or null if there is none. Prefers a
 * mount of the hierarchy's root, so /proc/<pid>/cgroup paths are relative to the mount point.
 */
export function parseCgroup2Mount(mountinfo: string): string | null {
  const found = parseMounts(mountinfo, 'cgroup2');
  return (found.find((m) => m.root === '/') ?? found[0])?.point ?? null;
}

/** The cgroup2 mount point of this machine, or null if cgroup v2 is not mounted. Never throws. */
export function findCgroup2Mount(): string | null {
  return parseCgroup2Mount(readMountinfo());
}

/** Where bpffs is mounted. Never throws. */
export function bpffsMounts(): string[] {
  return parseMounts(readMountinfo(), 'bpf').map((m) => m.point);
}
