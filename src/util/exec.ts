// The one way Rudder runs another program: argv arrays, optional stdin, never a shell.

import { spawn } from 'node:child_process';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The shape of exec(): data planes take one so tests can inject a fake and the lab a namespace. */
export type ExecFn = (argv: readonly string[], opts?: ExecOptions) => Promise<ExecResult>;

export interface ExecOptions {
  /** Written to the child's stdin, then stdin is closed. */
  input?: string;
  /** Kill the child after this long (SIGKILL); default 60 s. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/** A program could not be started, was killed, or (with execOk) exited non-zero. */
export class ExecError extends Error {
  readonly code = 'EEXEC';
  constructor(readonly argv: readonly string[], readonly result: ExecResult | null, message: string) {
    super(message);
    this.name = 'ExecError';
  }
}

/** Runs argv[0] with the rest as arguments. Resolves with the exit code; rejects only if it cannot run. */
export function exec(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) return Promise.reject(new ExecError(argv, null, 'empty command'));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let killed = false;
    const timer = setTimeout(() => { killed = true; child.kill('SIGKILL'); }, opts.timeoutMs ?? 60_000);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new ExecError(argv, null, `cannot run ${cmd}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result = { code: code ?? -1, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
      if (killed) reject(new ExecError(argv, result, `${cmd} timed out after ${opts.timeoutMs ?? 60_000} ms`));
      else if (signal !== null) reject(new ExecError(argv, result, `${cmd} killed by ${signal}`));
      else resolve(result);
    });
    // A child that exits before reading its input raises EPIPE on stdin: its exit code tells the story.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** Like exec, but a non-zero exit is an ExecError carrying the child's stderr. */
export async function execOk(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const r = await exec(argv, opts);
  if (r.code !== 0) {
    const detail = r.stderr.trim() || r.stdout.trim() || `exit code ${r.code}`;
    throw new ExecError(argv, r, `${argv.slice(0, 3).join(' ')} failed: ${detail}`);
  }
  return r;
}
