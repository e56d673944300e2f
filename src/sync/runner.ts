// A bounded-frequency runner, after kube-proxy's: requests coalesce into one run, runs are at
// least `minIntervalMs` apart, a run happens at least every `maxIntervalMs` (periodic resync),
// and a failed run is retried with exponential backoff. The clock is injectable for tests.

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface RunnerOptions {
  minIntervalMs: number;
  maxIntervalMs: number;
  retryMinMs: number;
  retryMaxMs: number;
  clock?: Clock;
  /** Called with each failure (the runner itself never throws). */
  onError?: (err: unknown, retryInMs: number) => void;
}

export class BoundedFrequencyRunner {
  private readonly clock: Clock;
  private timer: unknown = null;
  private timerAt = Infinity;
  private running = false;
  private requested = false;
  private stopped = true;
  private lastRunStart = -Infinity;
  private failures = 0;
  /** While a failed run waits for its retry, requests do not bring it forward. */
  private retryAt = -Infinity;
  private idleResolvers: Array<() => void> = [];

  constructor(private readonly fn: () => Promise<void>, private readonly opts: RunnerOptions) {
    this.clock = opts.clock ?? systemClock;
  }

  /** Starts the runner with an immediate first run. */
  start(): void {
    this.stopped = false;
    this.requested = true;
    this.schedule(0);
  }

  stop(): void {
    this.stopped = true;
    this.cancelTimer();
    for (const r of this.idleResolvers.splice(0)) r();
  }

  /** Asks for a run as soon as the minimum interval allows. Calls during a run coalesce into one more run. */
  run(): void {
    if (this.stopped) return;
    this.requested = true;
    if (this.running) return;
    const earliest = Math.max(this.lastRunStart + this.opts.minIntervalMs, this.retryAt);
    this.schedule(Math.max(0, earliest - this.clock.now()));
  }

  get consecutiveFailures(): number {
    return this.failures;
  }

  /** Resolves when no run is in progress or scheduled because of a request (tests, shutdown). */
  idle(): Promise<void> {
    if (!this.running && !this.requested) return Promise.resolve();
    return new Promise((r) => this.idleResolvers.push(r));
  }

  /** Schedules a tick in `delay` ms unless one is already due sooner. */
  private schedule(delay: number): void {
    const at = this.clock.now() + delay;
    if (this.timer !== null && this.timerAt <= at) return;
    this.cancelTimer();
    this.timerAt = at;
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.timerAt = Infinity;
      void this.tick();
    }, delay);
  }

  private cancelTimer(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
  }

  private async tick(): Promise<void> {
    if (this.stopped || this.running) return;
    this.running = true;
    this.requested = false;
    this.lastRunStart = this.clock.now();
    let failed = false;
    try {
      await this.fn();
      this.failures = 0;
      this.retryAt = -Infinity;
    } catch (err) {
      failed = true;
      this.failures++;
      const backoff = Math.min(this.opts.retryMaxMs, this.opts.retryMinMs * 2 ** (this.failures - 1));
      this.opts.onError?.(err, backoff);
      if (!this.stopped) {
        this.requested = true;
        this.running = false;
        this.retryAt = this.clock.now() + backoff;
        this.schedule(backoff);
        return;
      }
    } finally {
      this.running = false;
    }
    if (this.stopped || failed) return;
    if (this.requested) {
      this.schedule(Math.max(0, this.lastRunStart + this.opts.minIntervalMs - this.clock.now()));
    } else {
      for (const r of this.idleResolvers.splice(0)) r();
      this.schedule(this.opts.maxIntervalMs);
    }
  }
}
