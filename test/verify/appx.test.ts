/**
 * APPX / MSIX verification: each check against a fixture made by test/fixtures/make-fixtures.sh
 * (build-appx.mjs + osslsigncode), and the ZIP reader's strictness against hostile archives built
 * here from the good package (each one a test that fails without its check).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { verifyBuffer } from '../../src/verify/incrementalVerifier.js';
import { parseBlockMap } from '../../src/verify/appx/blockMap.js';
import { MalformedError } from '../../src/verify/malformed.js';
import { codes, fx, labPolicy, verifyRandomAccessFixture, AT } from '../support/fixtures.js';

describe('APPX and MSIX packages', () => {
  it.each(['good-appx', 'good-big-appx', 'good-zip64-appx', 'good-ci-appx', 'good-appxbundle'])('%s is allowed', async (name) => {
    const v = await verifyRandomAccessFixture(name);
    expect(v.reasons).toEqual([]);
    expect(v.verdict).toBe('allow');
    expect(v.format).toBe('msix');
    expect(v.signer?.subject).toMatch(/Publisher/);
    expect(v.digest?.expected).toBe(v.digest?.actual);
    expect(v.digest?.actual.startsWith(Buffer.from('APPXAXPC').toString('hex'))).toBe(true);
  });

  it.each([
    ['unsigned-appx', ['NOT_SIGNED']],
    ['rogue-appx', ['UNTRUSTED_ROOT']],
    ['flame-appx', ['NO_CODESIGN_EKU', 'UNTRUSTED_ROOT', 'WEAK_ALGORITHM']],
    ['sha1-cert-appx', ['WEAK_ALGORITHM']],
    ['flame-appxbundle', ['NO_CODESIGN_EKU', 'UNTRUSTED_ROOT', 'WEAK_ALGORITHM']],
    ['sha1-cert-appxbundle', ['WEAK_ALGORITHM']],
    ['tampered-appx', ['DIGEST_MISMATCH', 'MALFORMED']],
    ['tampered-zip64-appx', ['DIGEST_MISMATCH', 'MALFORMED']],
    ['appended-appx', ['MALFORMED']],
    ['rogue-appxbundle', ['UNTRUSTED_ROOT']],
    ['rogue-inner-appxbundle', ['UNTRUSTED_ROOT']],
    ['unsigned-appxbundle', ['NOT_SIGNED']],
    ['tampered-appxbundle', ['DIGEST_MISMATCH', 'MALFORMED']],
  ])('%s is blocked with %j', async (name, expected) => {
    const v = await verifyRandomAccessFixture(name);
    expect(v.verdict).toBe('block');
    expect(codes(v)).toEqual(expected);
  });
});

/** A stored-only ZIP of the given (name, text) entries. */
function zipOf(files: [string, string][]): Buffer {
  const locals: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [n, text] of files) {
    const name = Buffer.from(n);
    const data = Buffer.from(text);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0); lh.writeUInt16LE(20, 4); lh.writeUInt32LE(crc32(data), 14);
    lh.writeUInt32LE(data.length, 18); lh.writeUInt32LE(data.length, 22); lh.writeUInt16LE(name.length, 26);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0); cd.writeUInt16LE(20, 6); cd.writeUInt32LE(crc32(data), 16);
    cd.writeUInt32LE(data.length, 20); cd.writeUInt32LE(data.length, 24); cd.writeUInt16LE(name.length, 28); cd.writeUInt32LE(offset, 42);
    locals.push(lh, name, data);
    central.push(cd, name);
    offset += 30 + name.length + data.length;
  }
  const cdBytes = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0); eocd.writeUInt16LE(files.length, 8); eocd.writeUInt16LE(files.length, 10);
  eocd.writeUInt32LE(cdBytes.length, 12); eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cdBytes, eocd]);
}

/** The good package's structure, for surgical changes. */
function layout(b: Buffer) {
  const eocd = b.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const cdOffset = b.readUInt32LE(eocd + 16);
  const count = b.readUInt16LE(eocd + 10);
  const records: { at: number; name: string; local: number }[] = [];
  let p = cdOffset;
  for (let i = 0; i < count; i++) {
    const n = b.readUInt16LE(p + 28);
    records.push({ at: p, name: b.subarray(p + 46, p + 46 + n).toString('utf8'), local: b.readUInt32LE(p + 42) });
    p += 46 + n + b.readUInt16LE(p + 30) + b.readUInt16LE(p + 32);
  }
  return { eocd, cdOffset, records, record: (name: string) => records.find((r) => r.name === name)! };
}

describe('SHA-1 certificates', () => {
  it.each(['sha1-cert-appx', 'sha1-cert-appxbundle'])('%s passes only where the rules allow SHA-1', async (name) => {
    const v = await verifyRandomAccessFixture(name, labPolicy({ allowSha1: true }));
    expect(v.reasons).toEqual([]);
    expect(v.verdict).toBe('allow');
  });
});

describe('code integrity', () => {
  it('a package with AppxMetadata/CodeIntegrity.cat signs its digest too (AXCI, compared with osslsigncode by the interop test)', async () => {
    const v = await verifyRandomAccessFixture('good-ci-appx');
    expect(v.digest?.actual).toContain(Buffer.from('AXCI').toString('hex'));
    expect((await verifyRandomAccessFixture('good-appx')).digest?.actual).not.toContain(Buffer.from('AXCI').toString('hex'));
  });
});

describe('bundles', () => {
  it('a package with a bad signature inside a well-signed bundle blocks the bundle, naming the package', async () => {
    const v = await verifyRandomAccessFixture('rogue-inner-appxbundle');
    expect(v.reasons.map((r) => r.message).join(' | ')).toMatch(/^package rogue\.appx: /);
    expect(v.signer?.subject).toMatch(/CN=Patchgate Test Publisher$/); // the bundle's own signer is the good one
  });
});

describe('ZIP strictness (hostile archives → MALFORMED / OVERSIZE / UNSUPPORTED_FORMAT, never a hang)', () => {
  const good = () => Buffer.from(readFileSync(fx('good.appx')));
  const verify = (b: Buffer) => verifyBuffer(b, labPolicy(), { now: AT });
  const expectCode = async (b: Buffer, code: string, message?: RegExp) => {
    const v = await verify(b);
    expect(v.verdict).toBe('block');
    expect(codes(v)).toEqual([code]);
    if (message) expect(v.reasons.map((r) => r.message).join(' | ')).toMatch(message);
  };

  it('the unchanged package is allowed (the changes below are the only difference)', async () => {
    expect((await verify(good())).verdict).toBe('allow');
  });

  it('a central directory that lists an entry at another offset than where the previous one ends (overlap)', async () => {
    const b = good();
    const { record } = layout(b);
    b.writeUInt32LE(record('Assets/logo.png').local - 10, record('Assets/logo.png').at + 42);
    await expectCode(b, 'MALFORMED', /not where the previous one ends/);
  });

  it('a local header that disagrees with the central directory (method, name, sizes)', async () => {
    const m = good();
    const logo = layout(m).record('Assets/logo.png');
    m.writeUInt16LE(8, logo.local + 8); // local says deflated, directory says stored
    await expectCode(m, 'MALFORMED', /disagrees/);
    const n = good();
    n[layout(n).record('Assets/logo.png').local + 30] ^= 0x20; // 'a' -> 'A' in the local name only
    await expectCode(n, 'MALFORMED', /local header names/);
    const s = good();
    const l = layout(s).record('Assets/logo.png');
    s.writeUInt32LE(s.readUInt32LE(l.local + 22) + 1, l.local + 22);
    await expectCode(s, 'MALFORMED', /CRC or sizes/);
  });

  it('two entries whose names differ only in case', async () => {
    await expectCode(zipOf([['AppxBlockMap.xml', '<BlockMap/>'], ['a.txt', 'one'], ['A.TXT', 'two']]), 'MALFORMED', /two entries named/);
  });

  it('data between the last entry and the central directory', async () => {
    const b = good();
    const { eocd, cdOffset } = layout(b);
    const junk = Buffer.alloc(16, 0x41);
    const out = Buffer.concat([b.subarray(0, cdOffset), junk, b.subarray(cdOffset)]);
    out.writeUInt32LE(cdOffset + 16, eocd + 16 + 16);
    await expectCode(out, 'MALFORMED', /between the last entry and the central directory/);
  });

  it('bytes after the end record', async () => {
    await expectCode(Buffer.concat([good(), Buffer.from('trailing')]), 'MALFORMED', /end-of-central-directory/);
  });

  it('a declared size smaller than what the data inflates to (an inflate bomb stops at the declared size)', async () => {
    const b = good();
    const { record } = layout(b);
    const r = record('AppxManifest.xml');
    const size = b.readUInt32LE(r.at + 24);
    b.writeUInt32LE(size - 100, r.at + 24);
    b.writeUInt32LE(size - 100, r.local + 22);
    const v = await verify(b);
    expect(v.verdict).toBe('block');
    expect(v.reasons.map((x) => x.message).join(' ')).toMatch(/inflates past its declared|AppxBlockMap/);
  });

  it('a package that inflates to far more than its size is OVERSIZE before anything is inflated', async () => {
    const b = good();
    const { record } = layout(b);
    const r = record('AppxManifest.xml');
    b.writeUInt32LE(0x7fffffff, r.at + 24);
    b.writeUInt32LE(0x7fffffff, r.local + 22);
    await expectCode(b, 'OVERSIZE', /inflates to/);
  });

  it('ZIP64 markers without ZIP64 records, or records the end record does not announce, are MALFORMED', async () => {
    const z = good();
    z.writeUInt32LE(0xffffffff, layout(z).eocd + 16);
    await expectCode(z, 'MALFORMED', /ZIP64 markers without a ZIP64 locator/);
    const z64 = Buffer.from(readFileSync(fx('good-zip64.appx')));
    const e = z64.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
    const cdSize = z64.readBigUInt64LE(e - 20 - 56 + 40);
    const cdOffset = z64.readBigUInt64LE(e - 20 - 56 + 48);
    z64.writeUInt32LE(Number(cdSize), e + 12);
    z64.writeUInt32LE(Number(cdOffset), e + 16); // plain end record, ZIP64 records still in front of it
    await expectCode(z64, 'MALFORMED', /ZIP64 records without the end record saying so/);
    const moved = Buffer.from(readFileSync(fx('good-zip64.appx')));
    moved.writeBigUInt64LE(moved.readBigUInt64LE(e - 20 + 8) - 4n, e - 20 + 8); // the locator points elsewhere
    await expectCode(moved, 'MALFORMED', /ZIP64/);
  });

  it('a ZIP that is no package is UNSUPPORTED_FORMAT; an encrypted entry is MALFORMED', async () => {
    const zip = zipOf([['readme.txt', 'hello']]);
    const v = await verify(zip);
    expect(v.format).toBe('msix');
    expect(codes(v)).toEqual(['UNSUPPORTED_FORMAT']);
    expect(v.reasons[0]!.message).toMatch(/not an MSIX\/APPX package/);
    const e = good();
    const l = layout(e).record('Assets/logo.png');
    e.writeUInt16LE(1, l.at + 8);
    e.writeUInt16LE(1, l.local + 6);
    await expectCode(e, 'MALFORMED', /encrypted/);
  });

  it('a block that does not match the block map (CRC-32 fixed, so only the block map and the signature notice)', async () => {
    // The asset's bytes changed, and its CRC-32 fixed in both headers: only the block map notices (and the signature).
    const b = good();
    const r = layout(b).record('Assets/logo.png');
    const dataAt = r.local + 30 + 'Assets/logo.png'.length;
    b[dataAt + 10] ^= 0xff;
    const crc = crc32(b.subarray(dataAt, dataAt + 700));
    b.writeUInt32LE(crc, r.at + 16);
    b.writeUInt32LE(crc, r.local + 14);
    const v = await verify(b);
    expect(codes(v)).toEqual(['DIGEST_MISMATCH', 'MALFORMED']);
    expect(v.reasons.find((x) => x.code === 'MALFORMED')!.message).toMatch(/block 0 of "Assets\/logo.png" does not match/);
  });
});

describe('AppxBlockMap.xml parsing is linear (no backtracking on hostile documents)', () => {
  it.each([
    ['thousands of unterminated File tags', '<BlockMap HashMethod="http://www.w3.org/2001/04/xmlenc#sha256">' + '<File '.repeat(1_000_000)],
    ['a run of "<"', '<'.repeat(4_000_000)],
    ['one huge attribute name', '<BlockMap HashMethod="http://www.w3.org/2001/04/xmlenc#sha256"><File ' + 'a'.repeat(4_000_000) + '>'],
    ['a comment, which a machine-written block map never has', '<BlockMap HashMethod="http://www.w3.org/2001/04/xmlenc#sha256"><!-- x --></BlockMap>'],
    ['text between elements', '<BlockMap HashMethod="http://www.w3.org/2001/04/xmlenc#sha256">text</BlockMap>'],
  ])('%s: MALFORMED quickly', (_, doc) => {
    const t0 = performance.now();
    expect(() => parseBlockMap(Buffer.from(doc))).toThrow(MalformedError);
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('reads the fixture\'s block map shape (self-closing and nested File elements, Blocks with and without Size)', () => {
    const m = parseBlockMap(Buffer.from('<?xml version="1.0"?>\r\n<BlockMap HashMethod="http://www.w3.org/2001/04/xmlenc#sha256"><File Name="a\\b.txt" Size="0" LfhSize="37"/>' +
      '<File Name="c.bin" Size="70000" LfhSize="35"><Block Hash="AAAA" Size="10"/><Block Hash="BBBB"/></File></BlockMap>'));
    expect(m.hash).toBe('sha256');
    expect([...m.files.keys()]).toEqual(['A/B.TXT', 'C.BIN']);
    expect(m.files.get('C.BIN')!.blocks.length).toBe(2);
  });
});
