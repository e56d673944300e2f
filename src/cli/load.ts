// One-shot loading for the offline commands: manifests -> tracker -> table, through the same
// code path the agent uses.

import { build } from '../model/build.js';
import type { ProxyConfig, ServiceTable } from '../model/types.js';
import type { Logger } from '../observe/log.js';
import { describeSkipped, loadManifests } from '../source/files.js';
import { Tracker } from '../sync/tracker.js';
import { proxyConfig, type ConfigFlags } from './config.js';

export interface Loaded {
  table: ServiceTable;
  config: ProxyConfig;
  tracker: Tracker;
}

/** Throws ManifestError for an unusable file; invalid objects are logged and skipped. */
export function loadTable(paths: string[], flags: ConfigFlags, logger: Logger): Loaded {
  const m = loadManifests(paths);
  for (const s of m.invalid) logger.warn(`skipping invalid object: ${describeSkipped(s)}`);
  for (const s of m.ignored) logger.info(`ignoring object: ${describeSkipped(s)}`);
  const tracker = new Tracker(flags.nodeName);
  for (const o of m.objects) tracker.handle({ type: 'upsert', object: o });
  const config = proxyConfig(flags, tracker.node);
  return { table: build(tracker, config), config, tracker };
}
