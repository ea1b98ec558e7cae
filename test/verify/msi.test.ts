/**
 * MSI / MSP verification (OLE compound files): each check against a fixture made by
 * test/fixtures/make-fixtures.sh (build-msi.mjs + osslsigncode), and the compound-file parser's
 * bounds against hostile structures built here from good.msi.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { verifyBuffer } from '../../src/verify/incrementalVerifier.js';
import { bytesSource } from '../../src/verify/format/signedFileFormat.js';
import { CompoundFile } from '../../src/verify/msi/compoundFile.js';
import { codes, fx, labPolicy, verifyRandomAccessFixture, AT } from '../support/fixtures.js';

describe('MSI and MSP packages', () => {
  it.each(['good-msi', 'good-ex-msi', 'good-msp', 'nested-good-msi'])('%s is allowed', async (name) => {
    const v = await verifyRandomAccessFixture(name);
    expect(v.reasons).toEqual([]);
    expect(v.verdict).toBe('allow');
    expect(v.format).toBe('msi');
    expect(v.signer?.subject).toMatch(/Publisher/);
    expect(v.digest?.expected).toBe(v.digest?.actual);
  });

  it('reports the SHA-256 of the whole package', async () => {
    const v = await verifyRandomAccessFixture('good-msi');
    expect(v.sha256).toBe(createHash('sha256').update(readFileSync(fx('good.msi'))).digest('hex'));
  });

  it.each([
    ['unsigned-msi', ['NOT_SIGNED']],
    ['rogue-msi', ['UNTRUSTED_ROOT']],
    ['rogue-msp', ['UNTRUSTED_ROOT']],
    ['tampered-msi', ['DIGEST_MISMATCH']],
    ['tampered-mini-msi', ['DIGEST_MISMATCH']],
    ['tampered-msp', ['DIGEST_MISMATCH']],
    ['tampered-ex-msi', ['DIGEST_MISMATCH']],
    ['sha1-digest-msi', ['WEAK_ALGORITHM']],
    ['sha1-digest-msp', ['WEAK_ALGORITHM']],
    ['sha1-cert-msi', ['WEAK_ALGORITHM']],
    ['flame-msp', ['NO_CODESIGN_EKU', 'UNTRUSTED_ROOT', 'WEAK_ALGORITHM']],
    ['appended-msi', ['TRAILING_DATA']],
  ])('%s is blocked with %j', async (name, expected) => {
    const v = await verifyRandomAccessFixture(name);
    expect(v.verdict).toBe('block');
    expect(codes(v)).toEqual(expected);
  });

  it('the Flame-like chain is blocked: it does not reach the pinned CA', async () => {
    const v = await verifyRandomAccessFixture('flame-msi');
    expect(v.verdict).toBe('block');
    expect(codes(v)).toContain('UNTRUSTED_ROOT');
  });

  it.each(['sha1-digest-msi', 'sha1-digest-msp', 'sha1-cert-msi'])('SHA-1 (%s) passes only where the rules allow it', async (name) => {
    const v = await verifyRandomAccessFixture(name, labPolicy({ allowSha1: true, fileDigests: ['sha1', 'sha256', 'sha384', 'sha512'] }));
    expect(v.reasons).toEqual([]);
  });

  it('a tampered stream keeps its valid chain yet blocks (the digest comes first)', async () => {
    const v = await verifyRandomAccessFixture('tampered-msi');
    expect(v.chain?.at(-1)?.subject).toMatch(/Update CA/);
    expect(v.digest?.expected).not.toBe(v.digest?.actual);
  });

  it('an MSI signature moved onto a PE-type check is refused: the SIP GUID must be MSI\'s', async () => {
    // good.msi's signature is bound to SpcSipInfo + the MSI GUID; change one GUID byte in the DER.
    const bytes = Buffer.from(readFileSync(fx('good.msi')));
    const guid = Buffer.from('f1100c0000000000c000000000000046', 'hex');
    const at = bytes.indexOf(guid);
    expect(at).toBeGreaterThan(0);
    bytes[at + 15] ^= 0x01;
    const v = await verifyBuffer(bytes, labPolicy(), { now: AT });
    expect(v.verdict).toBe('block');
    expect(codes(v)).toEqual(['MALFORMED']);
    expect(v.reasons[0]!.message).toMatch(/SIP/);
  });
});

describe('compound-file bounds (hostile structures → MALFORMED, never a hang)', () => {
  const good = () => Buffer.from(readFileSync(fx('good.msi')));
  const u32 = (b: Buffer, o: number) => b.readUInt32LE(o);
  const fatSector0 = (b: Buffer) => u32(b, 76);
  const fatEntryOffset = (b: Buffer, s: number) => (fatSector0(b) + 1) * 512 + 4 * s;
  const dirStart = (b: Buffer) => u32(b, 48);
  const verify = (b: Buffer) => verifyBuffer(b, labPolicy(), { now: AT });

  it('a FAT chain that loops (directory chain points back at itself)', async () => {
    const b = good();
    const d = dirStart(b);
    b.writeUInt32LE(d, fatEntryOffset(b, d)); // directory sector's next = itself
    const v = await verify(b);
    expect(codes(v)).toEqual(['MALFORMED']);
    expect(v.reasons[0]!.message).toMatch(/used twice|longer than/);
  });

  it('a chain that leaves the file', async () => {
    const b = good();
    const d = dirStart(b);
    b.writeUInt32LE(0x00ffffff, fatEntryOffset(b, d));
    expect(codes(await verify(b))).toEqual(['MALFORMED']);
  });

  it('two streams sharing sectors (overlap)', async () => {
    const b = good();
    // Find the Payload and another big stream's entries and point the second at the first's start.
    const cf = await CompoundFile.open(bytesSource(b));
    const big = cf.root.children.filter((c) => c.size >= 4096);
    expect(big.length).toBeGreaterThanOrEqual(2);
    const [a, c] = big as [typeof big[0], typeof big[0]];
    const dirOffset = (id: number) => (dirStart(b) + 1) * 512 + id * 128; // the directory fits its first sector here
    expect(id(b, dirOffset(c.id))).toBe(c.name.toString('utf16le'));
    b.writeUInt32LE(a.startSector, dirOffset(c.id) + 116);
    const v = await verify(b);
    expect(codes(v)).toEqual(['MALFORMED']);
    expect(v.reasons[0]!.message).toMatch(/used twice|sectors for/);
  });

  it('a directory tree whose sibling link points back at an ancestor (cycle)', async () => {
    const b = good();
    const cf = await CompoundFile.open(bytesSource(b));
    const child = cf.root.children[0]!;
    const off = (dirStart(b) + 1) * 512 + child.id * 128;
    b.writeUInt32LE(child.id, off + 68); // left sibling = itself
    const v = await verify(b);
    expect(codes(v)).toEqual(['MALFORMED']);
    expect(v.reasons[0]!.message).toMatch(/reached twice/);
  });

  it('a FAT sector count the file cannot hold', async () => {
    const b = good();
    b.writeUInt32LE(0x00100000, 44);
    expect(codes(await verify(b))).toEqual(['MALFORMED']);
  });

  it('a stream size beyond the file', async () => {
    const b = good();
    const cf = await CompoundFile.open(bytesSource(b));
    const s = cf.root.children.find((c) => c.name.toString('utf16le') === 'Payload')!;
    b.writeUInt32LE(0x7fffffff, (dirStart(b) + 1) * 512 + s.id * 128 + 120);
    expect(codes(await verify(b))).toEqual(['MALFORMED']);
  });

  it('a truncated package', async () => {
    const b = good();
    expect(codes(await verify(b.subarray(0, b.length - 1024)))).toEqual(['MALFORMED']);
    expect(codes(await verify(b.subarray(0, 300)))).toEqual(['MALFORMED']);
  });
});

function id(b: Buffer, entryOffset: number): string {
  const len = b.readUInt16LE(entryOffset + 64);
  return b.subarray(entryOffset, entryOffset + len - 2).toString('utf16le');
}

describe('compound-file structure checks (each one a test that fails without it)', () => {
  const load = (name = 'good.msi') => Buffer.from(readFileSync(fx(name)));
  const verify = (b: Buffer) => verifyBuffer(b, labPolicy(), { now: AT });
  /** The file offset of the directory entry named `name` (its UTF-16LE name, NUL and length field). */
  const entryAt = (b: Buffer, name: string) => {
    const field = Buffer.alloc(66);
    const encoded = Buffer.from(`${name}\u0000`, 'utf16le');
    encoded.copy(field);
    field.writeUInt16LE(encoded.length, 64);
    const at = b.indexOf(field);
    expect(at, name).toBeGreaterThan(0);
    expect(at % 128).toBe(0);
    return at;
  };
  const rename = (b: Buffer, at: number, name: string) => {
    b.fill(0, at, at + 64);
    const encoded = Buffer.from(`${name}\u0000`, 'utf16le');
    encoded.copy(b, at);
    b.writeUInt16LE(encoded.length, at + 64);
  };
  const expectMalformed = async (b: Buffer, message: RegExp) => {
    const v = await verify(b);
    expect(codes(v)).toEqual(['MALFORMED']);
    expect(v.reasons[0]!.message).toMatch(message);
  };

  it('the unchanged package is allowed (the mutations below are the only difference)', async () => {
    expect((await verify(load())).verdict).toBe('allow');
  });

  it('two entries of one storage whose names differ only in case', async () => {
    // "Empty" holds no bytes: renamed, it changes no digest, so only the name check can refuse it.
    const b = load();
    rename(b, entryAt(b, 'Empty'), 'binary');
    await expectMalformed(b, /two entries named/);
  });

  it('a stream with a child link', async () => {
    const b = load();
    const inner = (await CompoundFile.open(bytesSource(b))).root.children.find((c) => c.name.toString('utf16le') === 'Sub')!.children[0]!;
    b.writeUInt32LE(inner.id, entryAt(b, 'Empty') + 76);
    await expectMalformed(b, /child link/);
  });

  it('a signature stream outside the root storage', async () => {
    const b = load();
    rename(b, entryAt(b, 'Inner'), '\u0005DigitalSignature');
    await expectMalformed(b, /outside the root storage/);
  });

  it('DigitalSignature that is a storage', async () => {
    const b = load();
    b[entryAt(b, '\u0005DigitalSignature') + 66] = 1;
    await expectMalformed(b, /is a storage/);
  });

  it('siblings on the root entry', async () => {
    const b = load();
    const root = entryAt(b, 'Root Entry');
    b.writeUInt32LE(entryAt(b, 'Inner') / 128 - root / 128, root + 68);
    await expectMalformed(b, /root entry has siblings/);
  });

  it('header fields MS-CFB fixes: reserved bytes, a version 3 directory sector count', async () => {
    const r = load();
    r[34] = 1;
    await expectMalformed(r, /reserved bytes/);
    const d = load();
    d.writeUInt32LE(1, 40);
    await expectMalformed(d, /directory sector count/);
  });

  it('a FAT that marks one more sector FATSECT than the header counts', async () => {
    const b = load();
    const fatAt = (b.readUInt32LE(76) + 1) * 512;
    const entries = 128 * b.readUInt32LE(44);
    let free = -1;
    for (let i = entries - 1; i >= 0; i--) if (b.readUInt32LE(fatAt + 4 * i) === 0xffffffff) { free = i; break; }
    expect(free).toBeGreaterThan(0);
    b.writeUInt32LE(0xfffffffd, fatAt + 4 * free);
    await expectMalformed(b, /marks \d+ FAT/);
  });

  it('bytes after the PKCS#7 blob inside the DigitalSignature stream are TRAILING_DATA', async () => {
    const b = load();
    const ds = entryAt(b, '\u0005DigitalSignature');
    const size = b.readUInt32LE(ds + 120);
    const grow = (64 - (size % 64)) % 64; // into the zero slack of its last mini sector: no chain changes
    expect(grow).toBeGreaterThan(0);
    b.writeUInt32LE(size + grow, ds + 120);
    const v = await verify(b);
    expect(codes(v)).toEqual(['TRAILING_DATA']);
  });
});
