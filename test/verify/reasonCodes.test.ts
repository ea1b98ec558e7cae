/**
 * The core's reason codes and the shell's: one table for users (REASON_CODES), two unions in code.
 * The core (src/verify) never names a shell code, so no Verdict can carry one.
 */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ALL_REASON_CODES, CORE_REASON_CODES, REASON_CODES, SHELL_REASON_CODES } from '../../src/verify/reasonCodes.js';
import { AUDIT_LINE_SCHEMA } from '../../src/audit/auditSchema.js';
import { REPO } from '../support/fixtures.js';

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

describe('reason codes', () => {
  it('the core\'s codes and the shell\'s split the one table between them, with no code in both', () => {
    expect(new Set([...CORE_REASON_CODES, ...SHELL_REASON_CODES])).toEqual(new Set(Object.keys(REASON_CODES)));
    expect(CORE_REASON_CODES.filter((c) => (SHELL_REASON_CODES as readonly string[]).includes(c))).toEqual([]);
    expect([...SHELL_REASON_CODES].sort()).toEqual(['ACCESS_DENIED', 'BAD_REQUEST', 'TIMEOUT', 'UPSTREAM_ERROR']);
    expect(CORE_REASON_CODES).toContain('INTERNAL_ERROR'); // the core emits it (fail closed)
    expect(ALL_REASON_CODES).toEqual(Object.keys(REASON_CODES));
  });

  it('no file of the core names a shell code (only the table does)', () => {
    const dir = join(REPO, 'src', 'verify');
    const offenders: string[] = [];
    for (const file of sources(dir)) {
      if (file.endsWith(join('verify', 'reasonCodes.ts'))) continue;
      const text = readFileSync(file, 'utf8');
      for (const code of SHELL_REASON_CODES) if (new RegExp(`['"\`]${code}['"\`]`).test(text)) offenders.push(`${file}: ${code}`);
    }
    expect(offenders).toEqual([]);
  });

  it('an audit record may carry every code, the shell\'s included', () => {
    const reasons = JSON.stringify(AUDIT_LINE_SCHEMA);
    for (const code of ALL_REASON_CODES) expect(reasons).toContain(`"${code}"`);
  });
});
