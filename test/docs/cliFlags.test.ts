import { beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../support/fixtures.js';
import { BIN } from '../support/runProcess.js';

/** Each command and the docs page that documents its flags. */
const PAGES: [string[], string][] = [
  [['verify'], 'verify.md'],
  [['rules', 'check'], 'verify.md'],
  [['run'], 'gate.md'],
  [['icap'], 'icap-squid.md'],
  [['wpad-guard'], 'wpad-guard.md'],
  [['lab', 'flame'], 'lab.md'],
  [['audit', 'verify'], 'audit.md'],
  [['audit', 'summary'], 'audit.md'],
  [['trust', 'list'], 'trust.md'],
  [['trust', 'import-ctl'], 'trust.md'],
];

/** The options `patchgate COMMAND --help` lists (yargs: one `  --name` per line), but --help and --version. */
async function helpFlags(command: string[]): Promise<string[]> {
  const { stdout } = await promisify(execFile)(process.execPath, [BIN, ...command, '--help'], { encoding: 'utf8' });
  return [...stdout.matchAll(/^\s+(--[a-z0-9-]+)/gm)].map((m) => m[1]!).filter((f) => f !== '--help' && f !== '--version');
}

describe('every flag of every command is documented in its docs page', () => {
  const flagsOf = new Map<string, string[]>();
  beforeAll(async () => {
    // All at once: each start of the CLI takes a second or more on a loaded machine.
    const all = await Promise.all(PAGES.map(([command]) => helpFlags(command)));
    PAGES.forEach(([command], i) => flagsOf.set(command.join(' '), all[i]!));
  });

  for (const [command, page] of PAGES) {
    it(`patchgate ${command.join(' ')}: docs/${page}`, () => {
      const text = readFileSync(join(REPO, 'docs', page), 'utf8');
      const flags = flagsOf.get(command.join(' '))!;
      if (command.join(' ') !== 'rules check') expect(flags.length).toBeGreaterThan(0);
      expect(flags.filter((f) => !new RegExp(`${f}(?![a-z0-9-])`).test(text))).toEqual([]);
    });
  }
});
