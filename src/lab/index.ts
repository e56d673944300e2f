// The lab's public surface: network-namespace topologies for integration tests, demo and bench.

export { Lab, type LabExecOptions, type LabOptions, type RoleInfo, type RoleKind } from './lab.js';
export { LabError, type LabErrorCode } from './errors.js';
export {
  defaultTopology, validateTopology, podGateway, FABRIC_ROLE,
  type Topology, type NodeSpec, type PodSpec, type ClientSpec, type RouteSpec,
} from './topology.js';
export { LAB_PREFIX, nsName, runName, runPrefix, isRunId, listLabNamespaces } from './netns.js';
export { BPF_FS, findCgroup2Mount } from './cgroup.js';
export type { LabProcess, SpawnOptions } from './servers.js';
export type { PodReply, ProbeResult, ProbeFailureKind, CurlOptions, UdpOptions, PingResult } from './probes.js';
