/**
 * A lab PKI shaped like Microsoft's two channels: one root; under it a code-signing PCA (no EKU
 * extension, like Code Signing PCA 2024) issuing a codeSigning leaf, and a Certificate List CA (no
 * EKU, like Certificate List CA 2024) issuing a "Trust List Publisher" with only the root-list-signer
 * EKU (1.3.6.1.4.1.311.10.3.9). Made in memory by the lab's issuer (src/lab/labPki.ts), as the Flame lab's PKI is.
 */
import { createHash } from 'node:crypto';
import type { IssuedCertificate, KeyUsageName } from '../../src/pki/certificateFactory.js';
import { buildPE } from '../fixtures/build-unsigned.mjs';
import { signPe } from '../../src/lab/authenticodeSigner.js';
import { labIssuer, pinnedAnchor } from '../../src/lab/labPki.js';
import { signTrustList, type TrustListEntry } from '../../src/lab/trustListSigner.js';
import { OID } from '../../src/verify/oids.js';
import type { PinnedCertificate } from '../../src/verify/approvedCaPolicy.js';

export interface TrustListPki {
  root: IssuedCertificate;
  codePca: IssuedCertificate;
  codeLeaf: IssuedCertificate;
  listCa: IssuedCertificate;
  listPublisher: IssuedCertificate;
}

export function makeTrustListPki(now = new Date()): TrustListPki {
  const { ca, leaf } = labIssuer('Patchgate Lab', now, 1, 5);
  // Microsoft's PCAs carry digitalSignature besides the CA usages, and no EKU extension.
  const usages: KeyUsageName[] = ['digitalSignature', 'keyCertSign', 'cRLSign'];
  const root = ca('Lab Root Certificate Authority 2026', undefined, { usages });
  const codePca = ca('Lab Code Signing PCA 2026', root, { usages });
  const listCa = ca('Lab Certificate List CA 2026', root, { usages });
  return {
    root, codePca, listCa,
    codeLeaf: leaf('Lab Corporation', codePca, ['codeSigning']),
    listPublisher: leaf('Lab Certificate Trust List Publisher', listCa, [OID.ekuRootListSigner]),
  };
}

export const pin = (c: IssuedCertificate): PinnedCertificate => pinnedAnchor(c, 'lab');
export const sha1 = (b: Uint8Array) => new Uint8Array(createHash('sha1').update(b).digest());

/** A root list (authroot.stl-shaped) naming the given certificates by SHA-1 thumbprint. */
export function rootList(signer: IssuedCertificate, issuer: IssuedCertificate, listed: Uint8Array[], usage = OID.ekuRootListSigner): Uint8Array {
  const entries: TrustListEntry[] = listed.map((der) => ({ identifier: sha1(der) }));
  return signTrustList({
    usage: [usage], entries, thisUpdate: new Date('2026-11-01T00:00:00Z'), nextUpdate: new Date('2027-01-01T00:00:00Z'), sequenceNumber: 20261101,
    signerCertDer: signer.der, signerKey: signer.keyObject, extraCertsDer: [issuer.der],
  });
}

/** A small PE signed by `signer` (Authenticode, chain bag: signer + issuer). */
export function signedPe(signer: IssuedCertificate, issuer: IssuedCertificate): Uint8Array {
  return signPe(buildPE('pe64') as Uint8Array, { signerCertDer: signer.der, signerKey: signer.keyObject, extraCertsDer: [issuer.der] });
}
