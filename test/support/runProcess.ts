/** `patchgate run` as a child process on 127.0.0.1 (ports chosen by the OS), for end-to-end tests. */
import { afterAll, beforeAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO, fx, pki } from './fixtures.js';
import { type Origin, send, startOrigin, waitFor } from './gateHarness.js';

export const BIN = join(REPO, 'bin', 'patchgate.js');

export interface RunningGate {
  child: ChildProcess;
  port: number;
  adminPort: number;
  stderr: () => string;
  exited: Promise<number | null>;
  /** SIGTERM and the exit code. */
  stop(): Promise<number | null>;
}

/** Starts `patchgate run` inspecting 127.0.0.1 with the lab Update CA pinned, auditing to `audit`. */
export async function startRunProcess(o: { audit: string; dir: string; spoolDir?: string; extra?: string[] }): Promise<RunningGate> {
  const child = spawn(process.execPath, [BIN, 'run', '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--update-host', '127.0.0.1',
    '--anchor', pki('updateca'), '--audit', o.audit, '--ca-dir', join(o.dir, 'ca'), '--spool-dir', o.spoolDir ?? o.dir, ...(o.extra ?? [])], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout!.resume();
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = await waitFor(() => /metrics http:\/\/127\.0\.0\.1:(\d+)\/metrics/.test(err) && /audit head/.test(err), 20_000);
  if (!ready) {
    child.kill('SIGKILL');
    throw new Error(`patchgate run did not start:\n${err}`);
  }
  return {
    child,
    port: Number(/gating update downloads on http:\/\/127\.0\.0\.1:(\d+)/.exec(err)![1]),
    adminPort: Number(/metrics http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(err)![1]),
    stderr: () => err,
    exited,
    stop: () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/** GET on the admin address; the body as text. */
export function adminGet(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let b = '';
      res.on('data', (d: Buffer) => (b += d.toString()));
      res.on('end', () => resolve(b));
    }).on('error', reject);
  });
}

/** The "audit head" lines `patchgate run` printed on stderr, in order. */
export const auditHeads = (stderr: string) => [...stderr.matchAll(/audit head ([0-9a-f]{64}) \(([^;]+);/g)].map((m) => ({ hash: m[1]!, when: m[2]! }));

/** What the tests of `patchgate run` as a process share: a temp folder, and an origin serving good.exe (allowed) and flame.exe (blocked). */
export interface RunTestBed {
  readonly dir: string;
  readonly origin: Origin;
}

/** The test bed, made before the current suite's tests (beforeAll) and removed after them (afterAll). */
export function useRunTestBed(tempPrefix: string): RunTestBed {
  const bed = {} as { dir: string; origin: Origin };
  beforeAll(async () => {
    bed.dir = mkdtempSync(join(tmpdir(), tempPrefix));
    bed.origin = await startOrigin();
    bed.origin.route('/good.exe', send(readFileSync(fx('good.exe'))));
    bed.origin.route('/flame.exe', send(readFileSync(fx('flame.exe'))));
  });
  afterAll(async () => {
    await bed.origin?.close();
    if (bed.dir) rmSync(bed.dir, { recursive: true, force: true });
  });
  return bed;
}
