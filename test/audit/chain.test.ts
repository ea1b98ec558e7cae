/**
 * The audit chain: every kind of tampering is found at the right line, and restarts and rotation
 * keep the chain verifiable. Logs are written by the real AuditLog; tampering is done on the bytes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { AuditLog } from '../../src/audit/auditLog.js';
import { GENESIS, lineHash, readTail, serializeAuditLine } from '../../src/audit/auditChain.js';
import type { AuditRecord } from '../../src/audit/auditRecord.js';
import { verifyAuditFiles } from '../../src/audit/verifyAudit.js';

let dir: string;
let n = 0;
const path = (name: string) => join(dir, name);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'patchgate-chain-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A plausible record; `i` makes each one distinct. */
function rec(i: number, over: Partial<AuditRecord> = {}): AuditRecord {
  const blocked = i % 4 === 3;
  return {
    id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, kind: 'transfer', client: '127.0.0.1', method: 'GET',
    url: `http://127.0.0.1:8000/kb/${i}.exe`, host: '127.0.0.1', inspected: true, served: blocked ? 'blocked' : 'full',
    status: blocked ? 403 : 200, upstreamStatus: 200, bytes: 7096 + i, bytesToClient: blocked ? 300 : 7096 + i,
    sha256: createHash('sha256').update(String(i)).digest('hex'), format: 'pe', verdict: blocked ? 'block' : 'allow',
    reasons: blocked ? [{ code: 'UNTRUSTED_ROOT', message: 'no pinned anchor reached' }] : [],
    signer: { subject: 'O=Patchgate Test, CN=Publisher', issuer: 'CN=Update CA', serial: '01', sha256: 'ab'.repeat(32) },
    chain: ['ab'.repeat(32), 'cd'.repeat(32)], rulesSha256: 'ef'.repeat(32), durations: { upstreamMs: 3, verifyMs: 0.4, toClientMs: 1 },
    ...over,
  };
}

/** Writes `count` records with a real AuditLog (appending: resumes an existing file). */
async function writeLog(file: string, count: number): Promise<AuditLog> {
  const log = new AuditLog(file);
  for (let i = 0; i < count; i++) log.record(rec(n++));
  await log.close();
  return log;
}

const lines = (file: string) => readFileSync(file, 'utf8').split('\n').slice(0, -1);
const put = (file: string, ls: string[]) => writeFileSync(file, ls.map((l) => l + '\n').join(''));
const verify = (files: string[], o: Parameters<typeof verifyAuditFiles>[1] = {}) => verifyAuditFiles(files, o);

describe('the chain as written', () => {
  it('a new log starts at genesis; each prev is the SHA-256 of the previous line; the head is the last line\'s hash', async () => {
    const f = path('fresh.jsonl');
    const log = await writeLog(f, 12);
    const ls = lines(f);
    expect(ls).toHaveLength(12);
    const parsed = ls.map((l) => JSON.parse(l));
    expect(parsed[0].prev).toBe(GENESIS);
    for (let i = 1; i < ls.length; i++) expect(parsed[i].prev).toBe(createHash('sha256').update(ls[i - 1]!).digest('hex'));
    // pino-compatible: level, time (epoch ms), msg = kind; prev right after time.
    expect(Object.keys(parsed[0]).slice(0, 4)).toEqual(['level', 'time', 'prev', 'id']);
    expect(parsed[0]).toMatchObject({ level: 30, msg: 'transfer' });
    expect(typeof parsed[0].time).toBe('number');
    expect(log.head).toEqual({ hash: lineHash(ls[11]!), written: 12 });
    const r = await verify([f]);
    expect(r).toMatchObject({ intact: true, records: 12, head: lineHash(ls[11]!), fromGenesis: true });
    expect(r.break).toBeUndefined();
  });

  it('serialisation is deterministic: fixed field order, undefined fields left out', () => {
    const a = serializeAuditLine(rec(1, { range: undefined, shared: undefined }), GENESIS, 1);
    const b = serializeAuditLine({ ...rec(1), range: undefined } as AuditRecord, GENESIS, 1);
    expect(a).toBe(b);
    expect(a).not.toContain('"range"');
    expect(a.endsWith('"msg":"transfer"}')).toBe(true);
  });

  it('a line is exactly JSON.stringify of the record in its field order (written field by field): nested values, unknown fields sorted, odd strings', () => {
    const extra = { zeta: 'z', alpha: { nested: [1, 'two', null] }, gone: undefined, text: 'quote " backslash \\ line\u2028 nul \u0000 é' };
    for (const r of [rec(1), rec(3), { ...rec(2), ...extra } as unknown as AuditRecord]) {
      const o = r as unknown as Record<string, unknown>;
      const ordered = ['id', 'kind', 'client', 'method', 'url', 'host', 'inspected', 'served', 'status', 'upstreamStatus', 'range', 'bytes',
        'bytesToClient', 'sha256', 'format', 'verdict', 'reasons', 'signer', 'chain', 'timestamp', 'rulesSha256', 'durations', 'shared', 'icapClient', 'icapStatus'];
      const reference: Record<string, unknown> = { level: 30, time: 1234, prev: GENESIS };
      for (const k of ordered) if (o[k] !== undefined) reference[k] = o[k];
      for (const k of Object.keys(o).sort()) if (!ordered.includes(k) && o[k] !== undefined) reference[k] = o[k];
      reference.msg = r.kind;
      expect(serializeAuditLine(r, GENESIS, 1234)).toBe(JSON.stringify(reference));
    }
  });

  it('the schema is checked: missing fields, wrong types, unknown fields, bad reason codes', async () => {
    const f = path('schema.jsonl');
    const good = (r: AuditRecord, prev: string) => serializeAuditLine(r, prev, 1_700_000_000_000);
    const cases: [string, (o: Record<string, unknown>) => void, RegExp][] = [
      ['missing verdict', (o) => { delete o.verdict; }, /missing field "verdict"/],
      ['status a string', (o) => { o.status = '200'; }, /status must be integer/],
      ['unknown field', (o) => { o.approvedBy = 'admin'; }, /unexpected field "approvedBy"/],
      ['unknown reason code', (o) => { o.reasons = [{ code: 'ALLOWED_BY_ADMIN', message: '' }]; }, /reasons\.0\.code/],
      ['prev not hex', (o) => { o.prev = 'x'; }, /prev must match/],
      ['msg differs from kind', (o) => { o.msg = 'connect'; }, /msg "connect" differs from kind "transfer"/],
    ];
    for (const [name, spoil, msg] of cases) {
      const l1 = good(rec(1), GENESIS);
      const o = JSON.parse(good(rec(2), lineHash(l1)));
      spoil(o);
      put(f, [l1, JSON.stringify(o)]);
      const r = await verify([f]);
      expect(r.intact, name).toBe(false);
      expect(r.break, name).toMatchObject({ file: f, line: 2 });
      expect(r.break!.reason, name).toMatch(msg);
    }
  });
});

describe('tampering is found at the right line', () => {
  let base: string;
  let orig: string[];
  beforeAll(async () => {
    base = path('base.jsonl');
    await writeLog(base, 20);
    orig = lines(base);
  });
  const tampered = (name: string, ls: string[]) => {
    const f = path(name);
    put(f, ls);
    return f;
  };

  it('an edited field (still a valid record) breaks the chain at the next line', async () => {
    const ls = [...orig];
    ls[4] = ls[4]!.replace('"status":200', '"status":201'); // line 5
    expect(ls[4]).not.toBe(orig[4]);
    const f = tampered('edit.jsonl', ls);
    const r = await verify([f]);
    expect(r.break).toMatchObject({ file: f, line: 6 });
    expect(r.break!.reason).toMatch(/the line before was changed/);
  });

  it('a block turned into an allow is found too (the edit that matters)', async () => {
    const i = orig.findIndex((l) => l.includes('"verdict":"block"'));
    const ls = [...orig];
    ls[i] = ls[i]!.replace('"verdict":"block"', '"verdict":"allow"');
    const r = await verify([tampered('flip.jsonl', ls)]);
    expect(r.break?.line).toBe(i + 2);
  });

  it('an edit that breaks the schema is found on the edited line itself', async () => {
    const ls = [...orig];
    ls[6] = ls[6]!.replace('"verdict":', '"verdikt":');
    const r = await verify([tampered('schema-edit.jsonl', ls)]);
    expect(r.break).toMatchObject({ line: 7 });
    expect(r.break!.reason).toMatch(/not an audit record/);
  });

  it('a deleted line is found where it was', async () => {
    const ls = orig.filter((_, i) => i !== 9); // line 10 deleted
    const r = await verify([tampered('delete.jsonl', ls)]);
    expect(r.break).toMatchObject({ line: 10 });
    expect(r.break!.reason).toMatch(/lines were deleted before this one/);
  });

  it('deleting the first line is found (line 1 no longer starts at genesis)', async () => {
    const r = await verify([tampered('delete-first.jsonl', orig.slice(1))]);
    expect(r.break).toMatchObject({ line: 1 });
    expect(r.break!.reason).toMatch(/not the genesis value/);
  });

  it('two swapped lines are found at the first of them', async () => {
    const ls = [...orig];
    [ls[11], ls[12]] = [ls[12]!, ls[11]!]; // lines 12 and 13
    const r = await verify([tampered('swap.jsonl', ls)]);
    expect(r.break).toMatchObject({ line: 12 });
  });

  it('an inserted (replayed) line is found, and named as such', async () => {
    const ls = [...orig];
    ls.splice(7, 0, orig[2]!); // a copy of line 3 becomes line 8
    const r = await verify([tampered('insert.jsonl', ls)]);
    expect(r.break).toMatchObject({ line: 8 });
    expect(r.break!.reason).toMatch(/of line 2: lines were inserted, duplicated or reordered/);
  });

  it('a file truncated inside a line is found at that line', async () => {
    const f = tampered('cut.jsonl', orig);
    const offset = orig.slice(0, 6).reduce((a, l) => a + Buffer.byteLength(l) + 1, 0) + 40; // inside line 7
    truncateSync(f, offset);
    const r = await verify([f]);
    expect(r.break).toMatchObject({ line: 7 });
    expect(r.break!.reason).toMatch(/no newline: the file was cut/);
  });

  it('a file truncated at a line boundary is found against a head recorded earlier (--head)', async () => {
    const head = lineHash(orig[19]!);
    const f = tampered('cut-boundary.jsonl', orig.slice(0, 15));
    expect((await verify([f])).intact).toBe(true); // alone, a shorter chain is still a chain
    const r = await verify([f], { expectHash: head });
    expect(r.break).toMatchObject({ file: f, line: 16 });
    expect(r.break!.reason).toMatch(/expected head .* is not in the chain/);
    // The untouched log contains that head (and a log that grew since still does).
    expect((await verify([base], { expectHash: lineHash(orig[9]!) })).anchorAt).toEqual({ file: base, line: 10 });
  });

  it('two logs spliced into one file are found at the splice', async () => {
    const other = path('other.jsonl');
    await writeLog(other, 10);
    const ls = [...orig.slice(0, 8), ...lines(other).slice(4)];
    const r = await verify([tampered('splice.jsonl', ls)]);
    expect(r.break).toMatchObject({ line: 9 });
    // And one log given after another it does not continue:
    const r2 = await verify([base, other]);
    expect(r2.break).toMatchObject({ file: other, line: 1 });
    expect(r2.break!.reason).toMatch(/starts a new log \(genesis\), it does not continue/);
  });

  it('the untouched log is intact', async () => {
    expect((await verify([base])).intact).toBe(true);
  });
});

describe('restarts and rotation keep the chain', () => {
  it('a restart resumes from the last line of the file', async () => {
    const f = path('restart.jsonl');
    await writeLog(f, 4);
    const before = lines(f);
    const second = await writeLog(f, 3);
    expect(second.head.resumedFrom).toBe(f);
    const ls = lines(f);
    expect(ls).toHaveLength(7);
    expect(JSON.parse(ls[4]!).prev).toBe(lineHash(before[3]!));
    await writeLog(f, 2);
    expect(await verify([f])).toMatchObject({ intact: true, records: 9 });
  });

  it('reading the tail is bounded and exact for long lines (longer than one 64 KiB read)', async () => {
    const f = path('long.jsonl');
    const log = new AuditLog(f);
    log.record(rec(1));
    log.record(rec(2, { url: `http://127.0.0.1/${'a'.repeat(200_000)}` }));
    await log.close();
    const ls = lines(f);
    expect(readTail(f)).toEqual({ hash: lineHash(ls[1]!), torn: false, file: f });
    await writeLog(f, 1);
    expect((await verify([f])).intact).toBe(true);
  });

  it('a line torn by a crash: the next start links to the torn bytes, and verify names the torn line', async () => {
    const f = path('torn.jsonl');
    await writeLog(f, 3);
    const torn = serializeAuditLine(rec(99), lineHash(lines(f)[2]!), 1).slice(0, 50);
    appendFileSync(f, torn); // the process died mid-write
    expect(readTail(f)).toMatchObject({ hash: lineHash(torn), torn: true });
    await writeLog(f, 2);
    const ls = lines(f);
    expect(ls[3]).toBe(torn);
    expect(JSON.parse(ls[4]!).prev).toBe(lineHash(torn));
    const r = await verify([f]);
    expect(r.break).toMatchObject({ line: 4 });
    expect(r.break!.reason).toMatch(/not JSON/);
  });

  it('rotation by rename + reopen (logrotate create, then SIGHUP): FILE.1 FILE verifies as one chain', async () => {
    const f = path('rot.jsonl');
    const log = new AuditLog(f);
    for (let i = 0; i < 5; i++) log.record(rec(n++));
    renameSync(f, `${f}.1`); // logrotate: the writer still holds the old file
    log.record(rec(n++)); // lands in FILE.1, before the signal
    log.reopen(); // postrotate: kill -HUP
    for (let i = 0; i < 4; i++) log.record(rec(n++));
    await log.close();
    expect(lines(`${f}.1`)).toHaveLength(6);
    expect(lines(f)).toHaveLength(4);
    expect(JSON.parse(lines(f)[0]!).prev).toBe(lineHash(lines(`${f}.1`)[5]!));
    const r = await verify([`${f}.1`, f]);
    expect(r).toMatchObject({ intact: true, records: 10, fromGenesis: true, head: log.head.hash });
    // The new file alone continues an earlier one: refused unless --partial.
    const alone = await verify([f]);
    expect(alone.break).toMatchObject({ file: f, line: 1 });
    expect(alone.break!.reason).toMatch(/continues an earlier one/);
    expect((await verify([f], { partial: true })).intact).toBe(true);
    // Out of order: found at the first line of the second file.
    expect((await verify([f, `${f}.1`], { partial: true })).break).toMatchObject({ file: `${f}.1`, line: 1 });
    // Compressed older files (logrotate compress) are read as they are.
    writeFileSync(`${f}.1.gz`, gzipSync(readFileSync(`${f}.1`)));
    expect((await verify([`${f}.1.gz`, f])).intact).toBe(true);
    // A line missing at the end of the older file is found at the first line of the newer.
    put(`${f}.1`, lines(`${f}.1`).slice(0, 5));
    const cut = await verify([`${f}.1`, f]);
    expect(cut.break).toMatchObject({ file: f, line: 1 });
    expect(cut.break!.reason).toMatch(/does not continue/);
  });

  it('rotation while the gate is stopped: a start on an empty or missing file links to FILE.1', async () => {
    const f = path('rot-stopped.jsonl');
    await writeLog(f, 3);
    renameSync(f, `${f}.1`);
    writeFileSync(f, ''); // logrotate create
    const log = await writeLog(f, 2);
    expect(log.head.resumedFrom).toBe(`${f}.1`);
    expect((await verify([`${f}.1`, f])).intact).toBe(true);
    // missingok and no file at all: the same.
    renameSync(`${f}.1`, `${f}.2`);
    renameSync(f, `${f}.1`);
    await writeLog(f, 1);
    expect((await verify([`${f}.2`, `${f}.1`, f])).intact).toBe(true);
  });
});
