/**
 * The ICAP parsers on their own, with fast-check (fixed seed): any chunking of any body, cut
 * anywhere, decodes to the same bytes; any bytes at all give data, a request for more, or an
 * IcapProtocolError (never another exception, never a chunk larger than what arrived); the same
 * for Encapsulated headers and ICAP heads. Plus the `patchgate icap` command line.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ChunkedBodyReader } from '../../src/icap/chunkedBody.js';
import { IcapProtocolError, parseEncapsulated, parseHttpHead, parseIcapHead } from '../../src/icap/icapMessage.js';
import { REPO } from '../support/fixtures.js';
import { squidBinary } from '../support/squidHarness.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';

const SEED = 20261201;

function encodeChunked(body: Uint8Array, sizes: number[], ext: string): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  let i = 0;
  while (at < body.length) {
    const n = Math.max(1, Math.min(sizes[i++ % sizes.length]!, body.length - at));
    parts.push(Buffer.from(`${n.toString(16)}\r\n`), Buffer.from(body.subarray(at, at + n)), Buffer.from('\r\n'));
    at += n;
  }
  parts.push(Buffer.from(`0${ext}\r\n\r\n`));
  return Buffer.concat(parts);
}

/** Feeds `wire` cut at `cuts` the way a connection does (unused bytes stay for the next feed). */
function decode(wire: Buffer, cuts: number[]): { body: Buffer; ieof: boolean | undefined; rest: Buffer } {
  const r = new ChunkedBodyReader();
  const out: Buffer[] = [];
  let ieof: boolean | undefined;
  let pending = Buffer.alloc(0);
  let from = 0;
  for (const cut of [...cuts.filter((c) => c > 0 && c < wire.length).sort((a, b) => a - b), wire.length]) {
    pending = Buffer.concat([pending, wire.subarray(from, cut)]);
    from = cut;
    if (r.finished) continue;
    const { used, events } = r.feed(pending);
    pending = pending.subarray(used);
    for (const e of events) {
      if (e.kind === 'data') out.push(Buffer.from(e.data));
      else ieof = e.ieof;
    }
  }
  return { body: Buffer.concat(out), ieof, rest: pending };
}

describe('ChunkedBodyReader', () => {
  it('any body, any chunk sizes, cut anywhere: the same bytes, the ieof flag, and the bytes after the last-chunk left over', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 5000 }), fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 12 }), fc.boolean(), fc.uint8Array({ maxLength: 40 }),
        (body, sizes, cutSeeds, ieof, next) => {
          const wire = Buffer.concat([encodeChunked(body, sizes, ieof ? '; ieof' : ''), Buffer.from(next)]);
          const r = decode(wire, cutSeeds.map((c) => c % (wire.length + 1)));
          expect(r.body.equals(Buffer.from(body))).toBe(true);
          expect(r.ieof).toBe(ieof);
          expect(r.rest.equals(Buffer.from(next))).toBe(true);
        },
      ),
      { seed: SEED, numRuns: 300 },
    );
  });

  it('any bytes at all: data no larger than what arrived, or an IcapProtocolError, nothing else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), fc.array(fc.nat(), { maxLength: 6 }), (bytes, cutSeeds) => {
        const wire = Buffer.from(bytes);
        try {
          const r = decode(wire, cutSeeds.map((c) => c % (wire.length + 1)));
          expect(r.body.length).toBeLessThanOrEqual(wire.length);
        } catch (e) {
          expect(e).toBeInstanceOf(IcapProtocolError);
        }
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it.each([
    ['a 2^64 chunk size', '10000000000000000\r\n'],
    ['a 2^53+1 chunk size', '20000000000001\r\n'],
    ['a negative size', '-1\r\n'],
    ['a size line of 5000 digits', '1'.repeat(5000)],
    ['an endless trailer', '0\r\n' + 'X: y\r\n'.repeat(4000)],
  ])('refuses %s without allocating it', (_n, text) => {
    expect(() => new ChunkedBodyReader().feed(Buffer.from(text))).toThrow(IcapProtocolError);
  });

  it('continues after a preview last-chunk only when asked, and never after ieof', () => {
    const r = new ChunkedBodyReader();
    expect(r.feed(Buffer.from('3\r\nabc\r\n0\r\n\r\n')).events.at(-1)).toEqual({ kind: 'end', ieof: false });
    r.continueAfterPreview();
    const more = r.feed(Buffer.from('2\r\nde\r\n0\r\n\r\n'));
    expect(Buffer.concat(more.events.flatMap((e) => (e.kind === 'data' ? [e.data] : []))).toString()).toBe('de');
    const done = new ChunkedBodyReader();
    done.feed(Buffer.from('0; ieof\r\n\r\n'));
    expect(() => done.continueAfterPreview()).toThrow();
  });
});

describe('ICAP heads', () => {
  it('Encapsulated: any string parses to ordered heads and one final body, or is an IcapProtocolError', () => {
    const entry = fc.tuple(fc.constantFrom('req-hdr', 'res-hdr', 'res-body', 'null-body', 'req-body', 'opt-body', 'x-hdr', ''), fc.oneof(fc.nat(300_000).map(String), fc.string({ maxLength: 4 })));
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 60 }), fc.array(entry, { maxLength: 5 }).map((es) => es.map(([k, v]) => `${k}=${v}`).join(', '))), (v) => {
        try {
          const e = parseEncapsulated(v);
          expect(['req-body', 'res-body', 'opt-body', 'null-body']).toContain(e.body);
          for (const h of [e.reqHdr, e.resHdr]) if (h !== undefined) expect(h).toBeLessThanOrEqual(e.bodyOffset);
          if (e.reqHdr !== undefined && e.resHdr !== undefined) expect(e.reqHdr).toBeLessThanOrEqual(e.resHdr);
        } catch (err) {
          expect(err).toBeInstanceOf(IcapProtocolError);
        }
      }),
      { seed: SEED, numRuns: 1000 },
    );
  });

  it('ICAP and HTTP heads: any text parses or is an IcapProtocolError', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (t) => {
        for (const f of [() => parseIcapHead(t), () => parseHttpHead(Buffer.from(t + '\r\n\r\n', 'latin1'), 'response'), () => parseHttpHead(Buffer.from(t, 'latin1'), 'request')]) {
          try { f(); } catch (err) { expect(err).toBeInstanceOf(IcapProtocolError); }
        }
      }),
      { seed: SEED, numRuns: 1000 },
    );
  });

  it('refuses heads that would let one proxy and patchgate read a message differently', () => {
    expect(() => parseIcapHead('RESPMOD icap://x/respmod ICAP/1.0\r\nHost: a\nX: b')).toThrow(IcapProtocolError);
    expect(() => parseHttpHead(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 1\r\n folded\r\n\r\n'), 'response')).toThrow(IcapProtocolError);
    expect(() => parseEncapsulated('res-hdr=0, res-body=10, res-body=20')).toThrow(IcapProtocolError);
    expect(() => parseEncapsulated('res-body=0, res-hdr=10')).toThrow(IcapProtocolError);
    expect(() => parseEncapsulated('res-hdr=5, res-body=10')).toThrow(IcapProtocolError);
  });
});

describe('patchgate icap (command line)', () => {
  const pg = (...args: string[]) => spawnSync(process.execPath, [join(REPO, 'bin', 'patchgate.js'), 'icap', ...args], { encoding: 'utf8', timeout: 30_000 });
  it('lists its flags', () => {
    const r = pg('--help');
    expect(r.status).toBe(0);
    for (const f of ['--listen', '--rules', '--update-host', '--anchor', '--tsa-anchor', '--distrust', '--audit', '--admin', '--max-connections', '--preview-bytes', '--spool-dir', '--allow-peer']) expect(r.stdout).toContain(f);
  });
  it('prints Squid configuration for the rules\' inspected hosts that Squid itself accepts', () => {
    const r = pg('--listen', '127.0.0.1:1399', '--print-squid-config');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^acl update_hosts dstdomain .*\.windowsupdate\.com/m);
    expect(r.stdout).toContain('icap_service patchgate0 respmod_precache icap://127.0.0.1:1399/respmod bypass=off');
    // No SslBump: CONNECT to an update host would tunnel around patchgate, so it is denied.
    expect(r.stdout).toMatch(/^acl patchgate_connect method CONNECT\nhttp_access deny patchgate_connect update_hosts$/m);
    const squid = squidBinary();
    expect(squid, 'squid is needed (.ci/run installs it)').toBeDefined();
    const dir = mkdtempSync(join(tmpdir(), 'patchgate-squidconf-'));
    try {
      const conf = join(dir, 'squid.conf');
      writeFileSync(conf, `http_port 127.0.0.1:3999\npid_filename none\ncache_log ${join(dir, 'cache.log')}\n${r.stdout}`);
      const parse = spawnSync(squid!, ['-k', 'parse', '-f', conf], { encoding: 'utf8' });
      expect(parse.status, parse.stderr).toBe(0);
      expect(parse.stderr).not.toMatch(/WARNING|ERROR|FATAL/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('with a tail-mode host: that host out of the request-time delay pool, in it only once marked X-Patchgate-Hold: whole; Squid accepts it', () => {
    const r = pg('--listen', '127.0.0.1:1399', '--update-host', 'tail.example', '--hold', 'tail', '--print-squid-config');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^acl update_hosts dstdomain .*tail\.example/m);
    const whole = /^acl patchgate_whole_hosts dstdomain (.*)$/m.exec(r.stdout)?.[1]?.split(' ') ?? [];
    expect(whole).toContain('.windowsupdate.com'); // the bundled rules' hosts are held whole
    expect(whole).not.toContain('tail.example');
    expect(r.stdout).toContain('delay_access 1 allow patchgate_response patchgate_held_whole\n');
    const dir = mkdtempSync(join(tmpdir(), 'patchgate-squidconf-'));
    try {
      const conf = join(dir, 'squid.conf');
      writeFileSync(conf, `http_port 127.0.0.1:3999\npid_filename none\ncache_log ${join(dir, 'cache.log')}\n${r.stdout}`);
      const parse = spawnSync(squidBinary()!, ['-k', 'parse', '-f', conf], { encoding: 'utf8' });
      expect(parse.status, parse.stderr).toBe(0);
      expect(parse.stderr).not.toMatch(/WARNING|ERROR|FATAL/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([
    [['--listen', 'nonsense']],
    [['--preview-bytes', '10']],
    [['--max-connections', '0']],
    [['--allow-peer', '10.0.0.0/33']],
    [['--allow-peer', 'example.com']],
    [['--anchor', '/nonexistent/ca.pem']],
    [['--no-such-flag']],
  ])('exits 2 on %j with nothing on stdout', (args) => {
    const r = pg(...args);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
  });
});
