/**
 * A real Squid on 127.0.0.1 for the ICAP tests: no disk cache, ICAP enabled with the lines
 * `patchgate icap --print-squid-config` prints (bypass=off, one service set), logs in a temp
 * folder removed by stop(). The launcher is test/support/squidProcess.mjs, shared with bench/.
 */
import type { ChildProcess } from 'node:child_process';
// @ts-expect-error plain JavaScript module shared with the benchmark
import * as squidProcess from './squidProcess.mjs';

export interface SquidHandle {
  port: number;
  dir: string;
  pid: number;
  child: ChildProcess;
  config: string;
  cacheLog(): string;
  stop(): Promise<void>;
}

export const squidBinary = squidProcess.squidBinary as () => string | undefined;
export const freePort = squidProcess.freePort as () => Promise<number>;
/**
 * `tailHosts`: those of `updateHosts` held in tail mode (as the rules tell `--print-squid-config`);
 * `squid5Workaround: false`: without the delay pool it adds for Squid bug 5352; `cache`: a memory
 * cache instead of none; `extraLines`: more squid.conf lines.
 */
export const startSquid = squidProcess.startSquid as (o: { icapPorts?: number[]; updateHosts: string[]; tailHosts?: string[]; squid5Workaround?: boolean; cache?: boolean; extraLines?: string[] }) => Promise<SquidHandle>;
