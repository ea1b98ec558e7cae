/**
 * The one transfer-record builder the gate and the ICAP service share (src/inspect/transferRecord.ts):
 * the Verdict's facts, the defaults for `inspected` and `hold`, checked against the audit schema.
 */
import { describe, expect, it } from 'vitest';
import { transferRecord, type TransferSubject } from '../../src/inspect/transferRecord.js';
import { verifyFixture } from '../support/fixtures.js';

const subject: TransferSubject = { id: 'id-1', client: '10.0.0.2', method: 'GET', url: 'http://u.test/a.exe', host: 'u.test', upstreamStatus: 200, rulesSha256: 'r', trustChannel: undefined };

describe('transferRecord', () => {
  it('copies the Verdict\'s facts and marks a verified payload inspected, held whole unless told otherwise', () => {
    const v = verifyFixture('good');
    expect(v.verdict).toBe('allow');
    const r = transferRecord(subject, { served: 'full', status: 200, verdict: 'allow', reasons: [], verdictData: v, durations: {} });
    expect(r).toMatchObject({ kind: 'transfer', inspected: true, hold: 'whole', bytes: v.size, sha256: v.sha256, format: 'pe', signer: v.signer, chain: v.chain!.map((c) => c.sha256) });
    expect(transferRecord(subject, { served: 'blocked', status: 200, verdict: 'block', reasons: [], verdictData: v, durations: {}, hold: 'tail' }).hold).toBe('tail');
  });

  it('a transfer without a verdict (passed content, an early block) has no hold and no payload facts', () => {
    const r = transferRecord(subject, { served: 'passed', status: 200, verdict: 'pass', reasons: [], inspected: false, durations: {} });
    expect(r.inspected).toBe(false);
    expect(r.hold).toBeUndefined();
    expect(r.sha256).toBeUndefined();
    expect(r.shared).toBeUndefined();
  });

  it('carries the gate\'s and the ICAP service\'s own fields', () => {
    const r = transferRecord(subject, { served: 'range', status: 206, verdict: 'allow', reasons: [], durations: {}, range: 'bytes=0-9', shared: true, icapClient: '127.0.0.1', icapStatus: 200 });
    expect(r).toMatchObject({ range: 'bytes=0-9', shared: true, icapClient: '127.0.0.1', icapStatus: 200 });
  });
});
