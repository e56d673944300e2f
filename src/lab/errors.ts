// One error class for the lab, with a stable code per failure kind.

export type LabErrorCode =
  /** The topology object is malformed or unsafe (checked before anything is created). */
  | 'ETOPOLOGY'
  /** A kernel command failed while building the lab (what was created is removed). */
  | 'ECREATE'
  /** A role name that the lab does not have. */
  | 'EROLE'
  /** A pod server did not start or did not report ready in time. */
  | 'ESERVER'
  /** The lab was destroyed (or is being destroyed) while the operation ran. */
  | 'EDESTROYED'
  /** An operation would break the lab's network rule (e.g. a default route, a cgroup outside the lab). */
  | 'EUNSAFE'
  /** The lab has no cgroups (cgroup v2 is not mounted, or the lab was created without them). */
  | 'ECGROUP';

export class LabError extends Error {
  constructor(readonly code: LabErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LabError';
  }
}
