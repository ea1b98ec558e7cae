/**
 * The one DER header reader (src/verify/derHeader.ts): every length the core decodes by hand (the
 * strict DER scan, the raw TLV walk, the PKCS#7 blob's extent in PE/CAB/MSI/APPX, the certificate
 * sniff) goes through it, so its refusals are tested once here.
 */
import { describe, expect, it } from 'vitest';
import { readDerHeader } from '../../src/verify/derHeader.js';
import { derElementLength } from '../../src/verify/pe/winCertificate.js';
import { parseStrictDer } from '../../src/verify/cms/strictDer.js';
import { MalformedError } from '../../src/verify/malformed.js';

const b = (...x: number[]) => new Uint8Array(x);

describe('readDerHeader', () => {
  it('reads short and long definite lengths, and where the value starts and ends', () => {
    expect(readDerHeader(b(0x30, 0x03, 1, 2, 3), 0)).toEqual({ ok: true, tag: 0x30, valueStart: 2, length: 3, end: 5, lengthOctets: 1, minimal: true });
    expect(readDerHeader(b(0x04, 0x81, 0x80), 0)).toMatchObject({ ok: true, valueStart: 3, length: 0x80, end: 0x83, lengthOctets: 2, minimal: true });
    expect(readDerHeader(b(0, 0, 0x30, 0x82, 0x01, 0x00), 2)).toMatchObject({ ok: true, valueStart: 6, length: 256, end: 262, lengthOctets: 3, minimal: true });
    expect(readDerHeader(b(0x30, 0x84, 0x7f, 0xff, 0xff, 0xff), 0)).toMatchObject({ ok: true, length: 0x7fffffff, lengthOctets: 5 });
  });

  it('marks a long form that DER would write shorter as not minimal', () => {
    expect(readDerHeader(b(0x30, 0x81, 0x05), 0)).toMatchObject({ ok: true, length: 5, minimal: false });
    expect(readDerHeader(b(0x30, 0x82, 0x00, 0x90), 0)).toMatchObject({ ok: true, length: 0x90, minimal: false });
  });

  it('reads a high tag number form, and refuses one of more than four octets', () => {
    expect(readDerHeader(b(0x9f, 0x81, 0x01, 0x02, 0xaa, 0xbb), 0)).toMatchObject({ ok: true, tag: 0x9f, valueStart: 4, length: 2, end: 6 });
    expect(readDerHeader(b(0x9f, 0x81, 0x81, 0x81, 0x81, 0x81, 0x01, 0x00), 0)).toEqual({ ok: false, problem: 'tag-too-long' });
  });

  it('refuses indefinite lengths, length fields over four octets, and headers cut short', () => {
    expect(readDerHeader(b(0x30, 0x80, 0, 0), 0)).toEqual({ ok: false, problem: 'indefinite' });
    expect(readDerHeader(b(0x30, 0x85, 1, 0, 0, 0, 0), 0)).toEqual({ ok: false, problem: 'length-too-long', lengthOctets: 5 });
    expect(readDerHeader(b(0x30, 0x82, 0x01), 0)).toEqual({ ok: false, problem: 'truncated-length' });
    expect(readDerHeader(b(0x30), 0)).toEqual({ ok: false, problem: 'truncated-header' });
    expect(readDerHeader(b(), 0)).toEqual({ ok: false, problem: 'truncated-header' });
    expect(readDerHeader(b(0x9f, 0x81), 0)).toEqual({ ok: false, problem: 'truncated-header' });
  });
});

describe('its callers', () => {
  it('derElementLength gives the PKCS#7 blob\'s extent and refuses what the reader refuses', () => {
    expect(derElementLength(b(0x30, 0x82, 0x01, 0x00))).toBe(260);
    expect(() => derElementLength(b(0x30, 0x80))).toThrow(/indefinite/);
    expect(() => derElementLength(b(0x30, 0x85, 1, 1, 1, 1, 1))).toThrow(/too large/);
    expect(() => derElementLength(b(0x30, 0x83, 1))).toThrow(/truncated/);
    expect(() => derElementLength(b(0x31, 0x00))).toThrow(MalformedError);
  });

  it('the strict scan refuses each problem by name', () => {
    expect(() => parseStrictDer(b(0x30, 0x81, 0x01, 0x05), 'x')).toThrow(/non-minimal/);
    expect(() => parseStrictDer(b(0x30, 0x80, 0x00, 0x00), 'x')).toThrow(/indefinite/);
    expect(() => parseStrictDer(b(0x30, 0x85, 0, 0, 0, 0, 1, 0), 'x')).toThrow(/length field of 5 bytes/);
    expect(() => parseStrictDer(b(0x30, 0x03, 0x04, 0x82, 0x01), 'x')).toThrow(/truncated ASN.1 length/);
    expect(() => parseStrictDer(b(0x30, 0x02, 0x04, 0x00, 0x00), 'x')).toThrow(/bytes after/);
    expect(parseStrictDer(b(0x30, 0x03, 0x04, 0x01, 0x07), 'x').idBlock.tagNumber).toBe(16);
  });
});
