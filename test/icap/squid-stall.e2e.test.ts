/**
 * Squid 5.7's RESPMOD stall (bug 5352) and what patchgate does about it (docs/icap-squid.md, "Why
 * Squid 5.7 stalls"). Squid's ModXact keeps the virgin body it wrote to the service in its 64 KiB
 * pipe until it has parsed an ICAP response head; when the pipe is full and the origin has more,
 * Squid parks its read on the store entry's deferred reads, and only its client taking adapted
 * bytes (or a delay pool's tick) kicks it again. In tail mode patchgate therefore starts the adapted
 * response with the first body bytes, and after a preview never in the same segment as the 100
 * Continue (Squid parses one ICAP head per read: a 200 right behind the 100 waited, unparsed, for
 * bytes that never came, and 2 of 12 downloads of 64 MiB stalled at the first 64 KiB).
 *
 * First the protocol, from a raw ICAP client (deterministic: fails if the head goes out with the
 * 100 Continue, or waits for the verdict); then downloads through a real Squid configured as
 * `--print-squid-config` prints it for a tail-mode host: a streaming PE, in no delay pool, many in a
 * row, none may stall; a payload held whole, which the pool kicks, arrives too.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fx } from '../support/fixtures.js';
import { type Origin, proxyRequest, send, sleep, startOrigin, syntheticBytes, syntheticPe, waitFor } from '../support/gateHarness.js';
import { IcapClient, httpRequestHead, httpResponseHead, startIcap, type IcapHandle } from '../support/icapHarness.js';
import { startSquid, type SquidHandle } from '../support/squidHarness.js';
import { squidConfigSnippet } from '../../src/icap/squidConfig.js';

const MiB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function chunked(data: Buffer, size = 16 * 1024): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) {
    const c = data.subarray(i, i + size);
    parts.push(Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

function respmodHead(port: number, url: string, body: Buffer, preview?: number): string {
  const req = httpRequestHead(url);
  const res = httpResponseHead(200, { 'Content-Length': body.length });
  return `RESPMOD icap://127.0.0.1:${port}/respmod ICAP/1.0\r\nHost: 127.0.0.1\r\nAllow: trailers\r\n${preview !== undefined ? `Preview: ${preview}\r\n` : ''}`
    + `Encapsulated: req-hdr=0, res-hdr=${req.length}, res-body=${req.length + res.length}\r\n\r\n${req}${res}`;
}

const pe = syntheticPe(4 * MiB, 41);
const peBytes = syntheticBytes(pe);
const msi = readFileSync(fx('good-big.msi'));

describe('patchgate icap, hold: tail: when the adapted head goes out (raw ICAP client)', () => {
  let icap: IcapHandle;
  beforeAll(async () => {
    icap = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect', hold: 'tail' }], limits: { memoryHoldBytes: 1 * MiB, idleTimeoutMs: 10_000 } });
  });
  afterAll(async () => { await icap?.dispose(); });

  it.each([['a signed PE', 'tail', '/p.exe', peBytes], ['an MSI', 'whole', '/p.msi', msi]] as const)(
    'after a preview: the 100 Continue alone, the 200 head with the first body bytes after it (%s, X-Patchgate-Hold: %s)', async (_what, hold, path, body) => {
      const c = new IcapClient(icap.port);
      try {
        c.write(respmodHead(icap.port, `http://127.0.0.1:8${path}`, body, 4096));
        c.write(Buffer.concat([chunked(body.subarray(0, 4096)), Buffer.from('0\r\n\r\n')]));
        const cont = await c.readAnswer();
        expect(cont.status).toBe(100);
        // Nothing behind the 100 in the same read, nor before a body byte follows it: Squid would leave it unparsed.
        await sleep(300);
        expect(c.pendingBytes).toBe(0);
        c.write(chunked(body.subarray(4096, 64 * 1024)));
        // The head comes with the first bytes, long before the body's end (and its verdict).
        expect(await waitFor(() => (c.pendingBytes > 0 ? true : undefined), 3000)).toBe(true);
        c.write(Buffer.concat([chunked(body.subarray(64 * 1024)), Buffer.from('0\r\n\r\n')]));
        const a = await c.readAnswer(30_000);
        expect(a.status).toBe(200);
        expect(a.http?.headers['x-patchgate-hold']).toBe(hold);
        expect(sha256(a.body!)).toBe(sha256(body));
      } finally {
        c.close();
      }
    });

  it('without a preview: the 200 head with the first body bytes, before the body ends', async () => {
    const c = new IcapClient(icap.port);
    try {
      c.write(respmodHead(icap.port, 'http://127.0.0.1:8/np.exe', peBytes));
      await sleep(200);
      expect(c.pendingBytes).toBe(0); // no body byte yet: nothing to plan the head from
      c.write(chunked(peBytes.subarray(0, 64 * 1024)));
      expect(await waitFor(() => (c.pendingBytes > 0 ? true : undefined), 3000)).toBe(true);
      c.write(Buffer.concat([chunked(peBytes.subarray(64 * 1024)), Buffer.from('0\r\n\r\n')]));
      const a = await c.readAnswer(30_000);
      expect(a.status).toBe(200);
      expect(a.http?.headers['x-patchgate-hold']).toBe('tail');
      expect(sha256(a.body!)).toBe(sha256(peBytes));
    } finally {
      c.close();
    }
  });
});

describe('--print-squid-config: the delay pool only where no adapted body flows', () => {
  it('a host held whole is in the pool from its request on; a tail-mode host only when patchgate marks its payload held whole', () => {
    const conf = squidConfigSnippet({ services: ['icap://127.0.0.1:1344/respmod'], updateHosts: ['*.whole.test', 'tail.test'], tailHosts: ['tail.test'] });
    expect(conf.split('\n').filter((l) => l.startsWith('delay_access'))).toEqual([
      'delay_access 1 allow patchgate_whole_hosts', 'delay_access 1 allow patchgate_response patchgate_held_whole', 'delay_access 1 deny all',
    ]);
    expect(conf).toContain('acl patchgate_whole_hosts dstdomain .whole.test\n');
    // Checked only once there is a response (a reply ACL in a request-time check warns in cache.log).
    expect(conf).toContain('acl patchgate_response has response\n');
    expect(conf).toContain('acl patchgate_held_whole rep_header X-Patchgate-Hold ^whole$\n');
    const tailOnly = squidConfigSnippet({ services: ['icap://127.0.0.1:1344/respmod'], updateHosts: ['tail.test'], tailHosts: ['tail.test'] });
    expect(tailOnly).not.toContain('patchgate_whole_hosts');
    const wholeOnly = squidConfigSnippet({ services: ['icap://127.0.0.1:1344/respmod'], updateHosts: ['a.test'] });
    expect(wholeOnly.split('\n').filter((l) => l.startsWith('delay_access'))).toEqual(['delay_access 1 allow patchgate_whole_hosts', 'delay_access 1 deny all']);
    expect(wholeOnly).not.toContain('rep_header');
  });
});

describe('Squid 5.7 + patchgate icap (hold: tail), as --print-squid-config prints it: no stall', () => {
  let origin: Origin;
  let icap: IcapHandle;
  let squid: SquidHandle;
  const big = syntheticPe(24 * MiB, 43);
  const bigBytes = syntheticBytes(big);
  beforeAll(async () => {
    origin = await startOrigin();
    origin.route('/big.exe', send(bigBytes));
    origin.route('/big.msi', send(msi));
    icap = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect', hold: 'tail' }], limits: { memoryHoldBytes: 1 * MiB, idleTimeoutMs: 20_000, maxPayloadBytes: 64 * MiB } });
    squid = await startSquid({ icapPorts: [icap.port], updateHosts: ['127.0.0.1'], tailHosts: ['127.0.0.1'] });
    expect(squid.config).not.toContain('patchgate_whole_hosts'); // no pool from the request on
  }, 60_000);
  afterAll(async () => {
    await squid?.stop();
    await icap?.dispose();
    await origin?.close();
  });

  it('12 downloads of a 24 MiB PE in a row, outside the delay pool: every one complete and byte-identical', async () => {
    const outcomes: string[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await proxyRequest(squid.port, origin.url(`/big.exe?n=${i}`), { timeoutMs: 15_000 }).catch((e: Error) => ({ status: 0, complete: false, body: Buffer.alloc(0), headers: {}, error: e.message }));
      outcomes.push(r.status === 200 && r.complete && sha256(r.body) === sha256(bigBytes) ? 'ok' : `stalled at ${r.body.byteLength} bytes (${r.status}${'error' in r ? `, ${r.error}` : ''})`);
    }
    expect(outcomes).toEqual(Array(12).fill('ok'));
    await icap.waitRecords((x) => x.verdict === 'allow' && x.hold === 'tail', 12, 10_000);
  }, 240_000);

  it('an MSI (held whole: X-Patchgate-Hold: whole puts it in the pool) arrives whole, three times', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await proxyRequest(squid.port, origin.url(`/big.msi?n=${i}`), { timeoutMs: 30_000 });
      expect(r.status).toBe(200);
      expect(r.headers['x-patchgate-hold']).toBe('whole');
      expect(r.complete).toBe(true);
      expect(sha256(r.body)).toBe(sha256(msi));
    }
  }, 120_000);
});
