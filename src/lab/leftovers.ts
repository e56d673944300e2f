// What lab runs leave on the machine (namespaces, cgroups, BPF pin directories), how to remove it,
// and which run ids are therefore taken.

import { basename } from 'node:path';
import type { Logger } from '../observe/log.js';
import { findCgroup2Mount, listPinDirs, listRunCgroups, removeCgroupTree, removePinDirs } from './cgroup.js';
import { LabError } from './errors.js';
import { isRunId, LAB_PREFIX, listLabNamespaces, newRunId, removeLabNamespaces } from './netns.js';

/**
 * Removes every lab run (or only `runId`'s), in the order that frees each thing: processes in the
 * runs' cgroups are killed and the cgroups removed, then the namespaces (killing the processes in
 * them), then the pin directories, which no agent uses any more. Resolves with what was removed:
 * namespace names, then cgroup and pin directories (absolute paths). What cannot be removed is
 * logged and skipped. Throws LabError EROLE for a malformed run id.
 */
export async function removeLeftovers(runId: string | undefined, log: Logger): Promise<string[]> {
  if (runId !== undefined && !isRunId(runId)) throw new LabError('EROLE', `run id ${JSON.stringify(runId)} must be 4 hex digits`);
  const mount = findCgroup2Mount();
  const cgroups: string[] = [];
  for (const dir of mount === null ? [] : listRunCgroups(mount, runId)) {
    try {
      if (await removeCgroupTree(mount!, dir)) cgroups.push(dir);
      else log.warn('could not remove cgroup', { cgroup: dir });
    } catch (e) {
      log.warn('could not remove cgroup', { cgroup: dir, error: e });
    }
  }
  const namespaces = await removeLabNamespaces(runId, (ns) => log.warn('could not remove namespace', { ns }));
  const pins = removePinDirs(runId, (path, e) => log.warn('could not remove BPF pin directory', { path, error: e }));
  for (const ns of namespaces) log.info('removed namespace', { ns });
  for (const cgroup of cgroups) log.info('removed cgroup', { cgroup });
  for (const path of pins) log.info('removed BPF pin directory', { path });
  return [...namespaces, ...cgroups, ...pins];
}

/** Run ids that some namespace, cgroup or pin directory on the machine carries. */
export async function runIdsInUse(cgroupMount: string | null): Promise<Set<string>> {
  const names = [
    ...(await listLabNamespaces()),
    ...(cgroupMount === null ? [] : listRunCgroups(cgroupMount).map((d) => basename(d))),
    ...listPinDirs().map((d) => basename(d)),
  ];
  return new Set(names.map((n) => n.slice(LAB_PREFIX.length, LAB_PREFIX.length + 4)));
}

/** A run id nothing on the machine uses. Throws LabError ECREATE if none is found in 100 tries. */
export async function freeRunId(cgroupMount: string | null): Promise<string> {
  const inUse = await runIdsInUse(cgroupMount);
  for (let i = 0; i < 100; i++) {
    const id = newRunId();
    if (!inUse.has(id)) return id;
  }
  throw new LabError('ECREATE', 'no free run id (too many lab runs; run `rudder lab clean`)');
}
