import { createHash, createPublicKey, hash, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { OID } from '../oids.js';
import { signatureAlgorithmFromOid, type SignatureAlgorithm } from '../algorithms.js';
import { parseStrictDer } from '../cms/strictDer.js';
import { BoundedCache } from '../boundedCache.js';

const NAME_LABELS: Record<string, string> = {
  '2.5.4.3': 'CN', '2.5.4.6': 'C', '2.5.4.7': 'L', '2.5.4.8': 'ST', '2.5.4.10': 'O', '2.5.4.11': 'OU',
  '2.5.4.5': 'serialNumber', '1.2.840.113549.1.9.1': 'emailAddress', '0.9.2342.19200300.100.1.25': 'DC',
};

export function formatName(name: pkijs.RelativeDistinguishedNames): string {
  return name.typesAndValues
    .map((tv) => {
      const label = NAME_LABELS[tv.type] ?? tv.type;
      const v = tv.value as { valueBlock?: { value?: unknown } };
      const text = typeof v?.valueBlock?.value === 'string' ? v.valueBlock.value : '?';
      return `${label}=${text}`;
    })
    .join(', ');
}

function toHex(bytes: ArrayBuffer | Uint8Array): string {
  return Buffer.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)).toString('hex');
}

function bytesOf(ab: ArrayBuffer | Uint8Array): Uint8Array {
  return ab instanceof Uint8Array ? ab : new Uint8Array(ab);
}

export interface KeyUsageBits {
  digitalSignature: boolean;
  keyCertSign: boolean;
}

/** Group orders of P-256, P-384 and P-521 (for ECDSA signature twins). */
const EC_ORDERS = [
  0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
  0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
  0x01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409n,
];

const CERT_CACHE = new BoundedCache<string, CertificateInfo>(512);

/**
 * One X.509 certificate with the facts the policy needs, read once. `der` is the exact encoding
 * found in the signature: fingerprints and pins compare these bytes, never a re-encoding.
 */
export class CertificateInfo {
  readonly der: Uint8Array;
  readonly sha256: string;
  /** SHA-1 thumbprint: only for matching distrust entries published as SHA-1. */
  readonly sha1: string;
  readonly cert: pkijs.Certificate;
  readonly subject: string;
  readonly issuer: string;
  readonly subjectDer: Uint8Array;
  readonly issuerDer: Uint8Array;
  readonly serialHex: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly signatureAlgorithmOid: string;
  readonly signatureAlgorithm: SignatureAlgorithm | undefined;
  /** undefined when the certificate has no EKU extension. */
  readonly eku: string[] | undefined;
  /** undefined when there is no basicConstraints extension. */
  readonly basicConstraints: { cA: boolean; pathLen?: number } | undefined;
  readonly keyUsage: KeyUsageBits | undefined;
  /** Legacy Netscape certificate type, when present: object signing (leaf) and object signing CA bits. */
  readonly netscapeCertType: { objectSigning: boolean; objectSigningCa: boolean } | undefined;
  readonly criticalExtensions: string[];
  readonly publicKeyAlgorithmOid: string;
  /** True when an EC key carries explicit curve parameters (CVE-2020-0601). */
  readonly explicitCurve: boolean;
  readonly spkiDer: Uint8Array;
  readonly subjectKeyIdentifier: string | undefined;
  private keyObject: KeyObject | null | undefined;

  constructor(der: Uint8Array) {
    this.der = der;
    this.sha256 = createHash('sha256').update(der).digest('hex');
    this.sha1 = createHash('sha1').update(der).digest('hex');
    const parsed = parseStrictDer(der, 'certificate', { reencode: true });
    this.cert = new pkijs.Certificate({ schema: parsed });
    const c = this.cert;
    // RFC 5280 4.1.1.2: the outer signatureAlgorithm must be the one inside the signed part, byte for byte;
    // otherwise unsigned bytes could change the certificate's fingerprint (and slip past a distrust list).
    const outer = (parsed as asn1js.Sequence).valueBlock.value[1];
    const tbs = (parsed as asn1js.Sequence).valueBlock.value[0] as asn1js.Sequence | undefined;
    const inner = tbs?.valueBlock.value.find((el, i) => i <= 2 && el instanceof asn1js.Sequence);
    if (!outer || !inner || !Buffer.from(outer.valueBeforeDecodeView).equals(Buffer.from(inner.valueBeforeDecodeView))) {
      throw new Error('certificate signatureAlgorithm differs from the one inside tbsCertificate');
    }
    // The BIT STRING's unused-bits octet is outside the signed part too: a signature is whole octets.
    if (c.signatureValue.valueBlock.unusedBits !== 0) throw new Error('certificate signatureValue has unused bits');
    this.subject = formatName(c.subject);
    this.issuer = formatName(c.issuer);
    this.subjectDer = bytesOf(c.subject.valueBeforeDecode);
    this.issuerDer = bytesOf(c.issuer.valueBeforeDecode);
    this.serialHex = toHex(c.serialNumber.valueBlock.valueHexView);
    this.notBefore = c.notBefore.value;
    this.notAfter = c.notAfter.value;
    this.signatureAlgorithmOid = c.signatureAlgorithm.algorithmId;
    this.signatureAlgorithm = signatureAlgorithmFromOid(this.signatureAlgorithmOid);
    const critical: string[] = [];
    let eku: string[] | undefined;
    let bc: CertificateInfo['basicConstraints'];
    let ku: KeyUsageBits | undefined;
    let ski: string | undefined;
    let nsType: CertificateInfo['netscapeCertType'];
    const seen = new Set<string>();
    for (const ext of c.extensions ?? []) {
      if (seen.has(ext.extnID)) throw new Error(`duplicate extension ${ext.extnID}`);
      seen.add(ext.extnID);
      if (ext.critical) critical.push(ext.extnID);
      const raw = ext.extnValue.valueBlock.valueHexView;
      switch (ext.extnID) {
        case OID.extExtendedKeyUsage: {
          const v = new pkijs.ExtKeyUsage({ schema: asn1js.fromBER(raw).result });
          eku = v.keyPurposes;
          break;
        }
        case OID.extBasicConstraints: {
          const v = new pkijs.BasicConstraints({ schema: asn1js.fromBER(raw).result });
          const pl = v.pathLenConstraint;
          bc = { cA: v.cA === true, pathLen: typeof pl === 'number' ? pl : pl instanceof asn1js.Integer ? pl.valueBlock.valueDec : undefined };
          break;
        }
        case OID.extKeyUsage: {
          const bits = asn1js.fromBER(raw).result;
          if (!(bits instanceof asn1js.BitString)) throw new Error('keyUsage is not a BIT STRING');
          const b0 = bits.valueBlock.valueHexView[0] ?? 0;
          ku = { digitalSignature: (b0 & 0x80) !== 0, keyCertSign: (b0 & 0x04) !== 0 };
          break;
        }
        case OID.extNetscapeCertType: {
          const bits = asn1js.fromBER(raw).result;
          if (!(bits instanceof asn1js.BitString)) throw new Error('netscape-cert-type is not a BIT STRING');
          const b0 = bits.valueBlock.valueHexView[0] ?? 0;
          nsType = { objectSigning: (b0 & 0x10) !== 0, objectSigningCa: (b0 & 0x01) !== 0 };
          break;
        }
        case OID.extSubjectKeyIdentifier: {
          const v = asn1js.fromBER(raw).result;
          if (v instanceof asn1js.OctetString) ski = toHex(v.valueBlock.valueHexView);
          break;
        }
        default:
      }
    }
    this.eku = eku;
    this.basicConstraints = bc;
    this.keyUsage = ku;
    this.netscapeCertType = nsType;
    this.criticalExtensions = critical;
    this.subjectKeyIdentifier = ski;
    const spki = c.subjectPublicKeyInfo;
    this.publicKeyAlgorithmOid = spki.algorithm.algorithmId;
    const params = spki.algorithm.algorithmParams;
    this.explicitCurve = this.publicKeyAlgorithmOid === OID.ecPublicKey && !(params instanceof asn1js.ObjectIdentifier);
    this.spkiDer = new Uint8Array(spki.toSchema().toBER(false));
  }

  /**
   * Every fingerprint under which a distrust list may know this certificate: its SHA-256 and SHA-1,
   * and for an ECDSA-signed certificate those of its twin with the signature's s replaced by n - s
   * (ECDSA signatures are malleable: anyone can make that twin, and it verifies just the same).
   */
  distrustFingerprints(): string[] {
    const out = [this.sha256, this.sha1];
    if (this.signatureAlgorithm?.key !== 'ec') return out;
    try {
      const sig = asn1js.fromBER(this.cert.signatureValue.valueBlock.valueHexView).result as asn1js.Sequence;
      const [r, sv] = sig.valueBlock.value as asn1js.Integer[];
      if (!r || !sv) return out;
      const s = sv.toBigInt();
      for (const n of EC_ORDERS) {
        if (s <= 0n || s >= n) continue;
        const twinSig = new asn1js.Sequence({ value: [asn1js.Integer.fromBigInt(r.toBigInt()), asn1js.Integer.fromBigInt(n - s)] }).toBER(false);
        const outer = asn1js.fromBER(this.der).result as asn1js.Sequence;
        const [tbs, alg] = outer.valueBlock.value;
        const twin = new Uint8Array(new asn1js.Sequence({
          value: [asn1js.fromBER(tbs!.valueBeforeDecodeView).result, asn1js.fromBER(alg!.valueBeforeDecodeView).result, new asn1js.BitString({ valueHex: twinSig, unusedBits: 0 })],
        }).toBER(false));
        out.push(createHash('sha256').update(twin).digest('hex'), createHash('sha1').update(twin).digest('hex'));
      }
    } catch {
      /* an unparsable ECDSA value fails the signature check anyway */
    }
    return out;
  }

  /**
   * The parsed certificate for these bytes, from a small cache: the same publisher and CA
   * certificates arrive with every payload, and parsing them strictly is most of a verdict's cost.
   * Sharing is safe: a CertificateInfo never changes after construction (the key is cached lazily).
   */
  static fromDer(der: Uint8Array): CertificateInfo {
    const key = hash('sha256', der, 'hex');
    return CERT_CACHE.get(key) ?? CERT_CACHE.set(key, new CertificateInfo(der));
  }

  get isSelfIssued(): boolean {
    return Buffer.from(this.subjectDer).equals(Buffer.from(this.issuerDer));
  }

  /** The public key for node:crypto, or null when it cannot or must not be imported. */
  publicKey(): KeyObject | null {
    if (this.keyObject !== undefined) return this.keyObject;
    if (this.explicitCurve) return (this.keyObject = null);
    try {
      this.keyObject = createPublicKey({ key: Buffer.from(this.spkiDer), format: 'der', type: 'spki' });
    } catch {
      this.keyObject = null;
    }
    return this.keyObject;
  }

  /** RSA modulus length in bits, or undefined for other key types. */
  rsaBits(): number | undefined {
    const k = this.publicKey();
    return k?.asymmetricKeyType === 'rsa' ? k.asymmetricKeyDetails?.modulusLength : undefined;
  }

  /** The signature value and the exact signed bytes, for checking this certificate against its issuer. */
  signedPart(): { tbs: Uint8Array; signature: Uint8Array } {
    return { tbs: this.cert.tbsView, signature: this.cert.signatureValue.valueBlock.valueHexView };
  }

  summary(): { subject: string; issuer: string; serial: string; sha256: string; notBefore: string; notAfter: string } {
    return {
      subject: this.subject,
      issuer: this.issuer,
      serial: this.serialHex,
      sha256: this.sha256,
      notBefore: this.notBefore.toISOString(),
      notAfter: this.notAfter.toISOString(),
    };
  }
}
