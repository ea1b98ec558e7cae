import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { OID } from '../oids.js';
import { signatureAlgorithmFromOid, type SignatureAlgorithm } from '../algorithms.js';

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
    const parsed = asn1js.fromBER(der);
    if (parsed.offset === -1 || parsed.offset !== der.byteLength) {
      throw new Error('certificate is not a single well-formed DER element');
    }
    this.cert = new pkijs.Certificate({ schema: parsed.result });
    const c = this.cert;
    this.subject = formatName(c.subject);
    this.issuer = formatName(c.issuer);
    this.subjectDer = bytesOf(c.subject.valueBeforeDecode);
    this.issuerDer = bytesOf(c.issuer.valueBeforeDecode);
    this.serialHex = toHex(c.serialNumber.valueBlock.valueHexView);
    this.notBefore = c.notBefore.value;
    this.notAfter = c.notAfter.value;
    this.signatureAlgorithmOid = c.signatureAlgorithm.algorithmId;
    if (c.signature.algorithmId !== this.signatureAlgorithmOid) {
      throw new Error('certificate signature algorithm differs from the one inside tbsCertificate');
    }
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
