// Process-wide teardown: every live lab is destroyed synchronously on process exit and on
// SIGINT/SIGTERM/SIGHUP, so a crashed or interrupted test leaves nothing behind.

/** What the hooks need of a lab. */
export interface ExitTeardown {
  /** Destroy on a signal even when other listeners handle it. */
  readonly handleSignals: boolean;
  destroySync(): void;
}

const live = new Set<ExitTeardown>();
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
let installed = false;

function onExit(): void {
  for (const lab of [...live]) lab.destroySync();
}

function onSignal(signal: NodeJS.Signals): void {
  const alone = process.listenerCount(signal) === 1;
  for (const lab of [...live]) if (alone || lab.handleSignals) lab.destroySync();
  if (alone) {
    // Nobody else handles this signal: restore the default action and die of it, as we would have.
    uninstall();
    process.kill(process.pid, signal);
  }
}

/** Destroys `lab` synchronously on process exit and on signals until it is unregistered. */
export function register(lab: ExitTeardown): void {
  live.add(lab);
  if (installed) return;
  installed = true;
  process.on('exit', onExit);
  for (const s of SIGNALS) process.on(s, onSignal);
}

export function unregister(lab: ExitTeardown): void {
  live.delete(lab);
  if (live.size === 0) uninstall();
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  process.off('exit', onExit);
  for (const s of SIGNALS) process.off(s, onSignal);
}
