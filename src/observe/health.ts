// kube-proxy's health semantics: unhealthy until the first successful sync, and unhealthy when a
// queued change has waited longer than the timeout without a sync. /livez is the same check
// (kube-proxy's /livez differs only in ignoring node deletion, which Rudder does not act on).

export interface HealthState {
  healthy: boolean;
  lastUpdated: number | null;
  oldestQueued: number | null;
}

export class ProxyHealth {
  private lastUpdated: number | null = null;
  private oldestQueued: number | null = null;

  constructor(private readonly timeoutMs: number, private readonly now: () => number = Date.now) {}

  /** A change is waiting to be programmed. */
  queued(): void {
    if (this.oldestQueued === null) this.oldestQueued = this.now();
  }

  /** A sync landed; `stillQueued` is when the oldest change it did not cover arrived (null: none). */
  updated(stillQueued: number | null = null): void {
    this.lastUpdated = this.now();
    this.oldestQueued = stillQueued;
  }

  state(): HealthState {
    const t = this.now();
    let healthy = this.lastUpdated !== null;
    if (this.oldestQueued !== null && t - this.oldestQueued > this.timeoutMs) healthy = false;
    return { healthy, lastUpdated: this.lastUpdated, oldestQueued: this.oldestQueued };
  }

  /** The JSON body kube-proxy's /healthz answers with. */
  body(nodeName: string): string {
    const s = this.state();
    return JSON.stringify({
      lastUpdated: s.lastUpdated === null ? '' : new Date(s.lastUpdated).toISOString(),
      currentTime: new Date(this.now()).toISOString(),
      nodeEligible: true,
      nodeName,
    });
  }
}
