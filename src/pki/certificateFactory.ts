/**
 * A small, synchronous X.509 certificate factory on pkijs/asn1js and node:crypto, shared by the
 * proxy's TLS interception CA and the Flame lab's PKI (which needs odd certificates on purpose:
 * version 1 without extensions, MD5 and SHA-1 signatures, intermediates with surprising EKUs).
 *
 * How a certificate is made: the TBSCertificate is built with pkijs (`Certificate.encodeTBS()`), its
 * DER is signed with node:crypto `sign()` (which, unlike WebCrypto, can do md5WithRSAEncryption and
 * is synchronous for RSA and ECDSA alike), and signatureAlgorithm/signatureValue are filled in as
 * pkijs/asn1js objects. No DER is encoded by hand: every structure is an asn1js/pkijs object.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  KeyObject,
  randomBytes,
  sign as cryptoSign,
} from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';

// ---------------------------------------------------------------------------------------------
// Types

export type RsaBits = 512 | 1024 | 2048 | 3072 | 4096;
export type KeySpec = { type: 'ec'; namedCurve?: 'P-256' | 'P-384' } | { type: 'rsa'; bits?: RsaBits };
export type SignatureHash = 'md5' | 'sha1' | 'sha256' | 'sha384' | 'sha512';

/** Attribute short names this factory knows; any other attribute type is given by its OID. */
export type NameAttributeType = 'C' | 'ST' | 'L' | 'O' | 'OU' | 'CN' | 'emailAddress' | string;
/**
 * A distinguished name. The object form is written in the order C, ST, L, O, OU, CN (one attribute
 * per RDN); the array form is written exactly in the order given (for names that must match a
 * real certificate's). Values are UTF8String, except C (PrintableString) and emailAddress (IA5String).
 */
export type NameSpec =
  | { C?: string; ST?: string; L?: string; O?: string; OU?: string; CN?: string }
  | { type: NameAttributeType; value: string }[];

export type KeyUsageName =
  | 'digitalSignature'
  | 'nonRepudiation'
  | 'keyEncipherment'
  | 'dataEncipherment'
  | 'keyAgreement'
  | 'keyCertSign'
  | 'cRLSign'
  | 'encipherOnly'
  | 'decipherOnly';

export type ExtendedKeyUsageName =
  | 'serverAuth'
  | 'clientAuth'
  | 'codeSigning'
  | 'emailProtection'
  | 'timeStamping'
  | 'OCSPSigning'
  | 'anyExtendedKeyUsage'
  | 'lifetimeSigning';

/** Names for SAN and name constraints. `ip` entries in name constraints take an optional `/prefix`. */
export interface GeneralNamesSpec {
  dns?: string[];
  ip?: string[];
}

export interface ExtensionsSpec {
  /** Default critical: true. */
  basicConstraints?: { cA: boolean; pathLen?: number; critical?: boolean };
  /** Default critical: true. */
  keyUsage?: { usages: KeyUsageName[]; critical?: boolean };
  /** Names or dotted OIDs. Absent: no EKU extension at all. Default critical: false. */
  extendedKeyUsage?: { purposes: (ExtendedKeyUsageName | string)[]; critical?: boolean };
  /** Default critical: false. */
  subjectAltName?: GeneralNamesSpec & { critical?: boolean };
  /**
   * Permitted and excluded subtrees. dNSName `example.com` covers example.com and every name below it
   * (RFC 5280 4.2.1.10); an empty dNSName covers every DNS name. iPAddress takes `a.b.c.d/len` or an
   * IPv6 `addr/len`; without `/len` the address alone (/32 or /128). Default critical: true.
   */
  nameConstraints?: { permitted?: GeneralNamesSpec; excluded?: GeneralNamesSpec; critical?: boolean };
  /** true (default for v3): SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2 method 1). */
  subjectKeyIdentifier?: boolean | Uint8Array;
  /** true (default for v3): the issuer's key identifier (its SKI extension, else computed). */
  authorityKeyIdentifier?: boolean | Uint8Array;
  /** Appended as given, after the ones above (for lab certificates that need something unusual). */
  extra?: pkijs.Extension[];
}

/** The result of `issueCertificate`: usable directly as the issuer of another certificate. */
export interface IssuedCertificate {
  der: Uint8Array;
  pem: string;
  /** PKCS#8 PEM of the subject's private key. */
  keyPem: string;
  /** The subject's private key. */
  keyObject: KeyObject;
  /** The pkijs object the DER was made from. */
  certificate: pkijs.Certificate;
}

/**
 * Who signs: an issued certificate (its subject becomes the issuer name, byte for byte), a
 * certificate (DER or PEM) with its private key, or a bare name with a key (for lab forgeries: no
 * certificate needed, nothing checked).
 */
export type IssuerSpec =
  | IssuedCertificate
  | PreparedIssuer
  | { certificate: Uint8Array | string; key: KeyObject }
  | { name: NameSpec; key: KeyObject; keyIdentifier?: Uint8Array };

/** An issuer resolved once (see `prepareIssuer`), for issuing many certificates quickly. */
export interface PreparedIssuer {
  readonly prepared: true;
  readonly name: pkijs.RelativeDistinguishedNames;
  readonly key: KeyObject;
  readonly keyIdentifier: Uint8Array;
}

export interface CertificateOptions {
  subject: NameSpec;
  /** The subject key: generated from a spec (default EC P-256) or a private KeyObject to certify. */
  key?: KeySpec | KeyObject;
  /** Absent: self-signed with the subject key. */
  issuer?: IssuerSpec;
  /** Default: 16 random bytes, made positive and minimal (126 random bits). */
  serialNumber?: Uint8Array | bigint;
  /** Default: now − 1 h. Truncated to whole seconds. */
  notBefore?: Date;
  /** Default: notBefore + 365 days. Truncated to whole seconds. */
  notAfter?: Date;
  /** 3 (default) or 1: a version 1 certificate has no extensions, and `extensions` must be absent. */
  version?: 1 | 3;
  /** Default sha256. md5 needs an RSA issuer key. */
  signatureHash?: SignatureHash;
  extensions?: ExtensionsSpec;
}

export class CertificateFactoryError extends Error {
  override name = 'CertificateFactoryError';
}

// ---------------------------------------------------------------------------------------------
// OIDs

const ATTRIBUTE_OID: Record<string, string> = {
  C: '2.5.4.6',
  ST: '2.5.4.8',
  L: '2.5.4.7',
  O: '2.5.4.10',
  OU: '2.5.4.11',
  CN: '2.5.4.3',
  emailAddress: '1.2.840.113549.1.9.1',
};
const NAME_ORDER = ['C', 'ST', 'L', 'O', 'OU', 'CN'] as const;

export const EKU_OID: Record<ExtendedKeyUsageName, string> = {
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  codeSigning: '1.3.6.1.5.5.7.3.3',
  emailProtection: '1.3.6.1.5.5.7.3.4',
  timeStamping: '1.3.6.1.5.5.7.3.8',
  OCSPSigning: '1.3.6.1.5.5.7.3.9',
  anyExtendedKeyUsage: '2.5.29.37.0',
  lifetimeSigning: '1.3.6.1.4.1.311.10.3.13',
};

const KEY_USAGE_BIT: Record<KeyUsageName, number> = {
  digitalSignature: 0,
  nonRepudiation: 1,
  keyEncipherment: 2,
  dataEncipherment: 3,
  keyAgreement: 4,
  keyCertSign: 5,
  cRLSign: 6,
  encipherOnly: 7,
  decipherOnly: 8,
};

const EXT = {
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  nameConstraints: '2.5.29.30',
  authorityKeyIdentifier: '2.5.29.35',
  extendedKeyUsage: '2.5.29.37',
} as const;

const RSA_SIGNATURE_OID: Record<SignatureHash, string> = {
  md5: '1.2.840.113549.1.1.4',
  sha1: '1.2.840.113549.1.1.5',
  sha256: '1.2.840.113549.1.1.11',
  sha384: '1.2.840.113549.1.1.12',
  sha512: '1.2.840.113549.1.1.13',
};
const ECDSA_SIGNATURE_OID: Partial<Record<SignatureHash, string>> = {
  sha1: '1.2.840.10045.4.1',
  sha256: '1.2.840.10045.4.3.2',
  sha384: '1.2.840.10045.4.3.3',
  sha512: '1.2.840.10045.4.3.4',
};

// ---------------------------------------------------------------------------------------------
// Keys

/** Generates a private key (synchronously: EC P-256 takes well under a millisecond). */
export function generateKey(spec: KeySpec = { type: 'ec' }): KeyObject {
  if (spec.type === 'ec') {
    return generateKeyPairSync('ec', { namedCurve: spec.namedCurve ?? 'P-256' }).privateKey;
  }
  return generateKeyPairSync('rsa', { modulusLength: spec.bits ?? 2048, publicExponent: 0x10001 }).privateKey;
}

/** PKCS#8 PEM of a private key. */
export function privateKeyPem(key: KeyObject): string {
  return key.export({ type: 'pkcs8', format: 'pem' }).toString();
}

/** Loads a PEM or DER private key (PKCS#8, or PKCS#1/SEC1 in PEM). */
export function loadPrivateKey(pemOrDer: string | Uint8Array): KeyObject {
  if (typeof pemOrDer === 'string') return createPrivateKey(pemOrDer);
  return createPrivateKey({ key: Buffer.from(pemOrDer), format: 'der', type: 'pkcs8' });
}

const EC_CURVE_OID: Record<string, string> = {
  'P-256': '1.2.840.10045.3.1.7',
  'P-384': '1.3.132.0.34',
  'P-521': '1.3.132.0.35',
};

function publicKeyInfoOf(key: KeyObject): pkijs.PublicKeyInfo {
  const pub = key.type === 'public' ? key : createPublicKey(key);
  if (pub.asymmetricKeyType === 'ec') {
    // Built from the key's components: parsing node's SPKI DER with asn1js costs ~0.5 ms, which
    // matters when leaves are issued on a CONNECT.
    const jwk = pub.export({ format: 'jwk' });
    const curve = jwk.crv ? EC_CURVE_OID[jwk.crv] : undefined;
    if (curve && jwk.x && jwk.y) {
      const x = Buffer.from(jwk.x, 'base64url');
      const y = Buffer.from(jwk.y, 'base64url');
      const point = new Uint8Array(1 + x.byteLength + y.byteLength);
      point[0] = 0x04; // SEC 1 2.3.3: uncompressed point
      point.set(x, 1);
      point.set(y, 1 + x.byteLength);
      return new pkijs.PublicKeyInfo({
        algorithm: new pkijs.AlgorithmIdentifier({
          algorithmId: '1.2.840.10045.2.1',
          algorithmParams: new asn1js.ObjectIdentifier({ value: curve }),
        }),
        subjectPublicKey: new asn1js.BitString({ valueHex: point }),
      });
    }
  }
  const spki = pub.export({ type: 'spki', format: 'der' });
  return pkijs.PublicKeyInfo.fromBER(new Uint8Array(spki));
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value (without unused-bits). */
export function keyIdentifierOf(spki: pkijs.PublicKeyInfo): Uint8Array {
  return new Uint8Array(createHash('sha1').update(spki.subjectPublicKey.valueBlock.valueHexView).digest());
}

// ---------------------------------------------------------------------------------------------
// Small encoders (asn1js objects, never hand-made DER)

function pemOf(der: Uint8Array, label: string): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN ${label}-----\n${b64.replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;
}

/** DER of the first PEM block with the given label, or the input if it is already DER. */
export function derFromPem(input: string | Uint8Array, label = 'CERTIFICATE'): Uint8Array {
  if (typeof input !== 'string') return input;
  const m = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`).exec(input);
  if (!m?.[1]) throw new CertificateFactoryError(`no ${label} PEM block found`);
  return new Uint8Array(Buffer.from(m[1].replace(/\s+/g, ''), 'base64'));
}

/** Positive, minimal INTEGER content bytes for a serial number. */
function serialBytes(serial: Uint8Array | bigint | undefined): Uint8Array {
  if (serial === undefined) {
    const b = new Uint8Array(randomBytes(16));
    // Top bit clear (positive), next bit set (no leading zero byte, always 16 bytes): 126 random bits.
    b[0] = ((b[0] ?? 0) & 0x7f) | 0x40;
    return b;
  }
  if (typeof serial === 'bigint') {
    if (serial <= 0n) throw new CertificateFactoryError('serial number must be positive');
    let hex = serial.toString(16);
    if (hex.length % 2) hex = '0' + hex;
    if (parseInt(hex.slice(0, 2), 16) >= 0x80) hex = '00' + hex;
    return new Uint8Array(Buffer.from(hex, 'hex'));
  }
  if (serial.byteLength === 0 || serial.byteLength > 20) throw new CertificateFactoryError('serial number must be 1..20 bytes');
  // Given bytes are an unsigned big-endian number: strip leading zeros, re-add one if the top bit is set.
  let start = 0;
  while (start < serial.byteLength - 1 && serial[start] === 0) start++;
  const body = serial.subarray(start);
  if (body.byteLength === 1 && body[0] === 0) throw new CertificateFactoryError('serial number must be positive');
  if ((body[0] ?? 0) & 0x80) {
    const out = new Uint8Array(body.byteLength + 1);
    out.set(body, 1);
    return out;
  }
  return new Uint8Array(body);
}

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds only. */
function timeOf(d: Date): pkijs.Time {
  if (Number.isNaN(d.getTime())) throw new CertificateFactoryError('invalid date');
  const whole = new Date(Math.floor(d.getTime() / 1000) * 1000);
  const year = whole.getUTCFullYear();
  if (year < 1950 || year > 9999) throw new CertificateFactoryError(`date out of range: ${whole.toISOString()}`);
  return new pkijs.Time({ type: year < 2050 ? 0 : 1, value: whole });
}

function attributeValue(type: string, value: string): asn1js.BaseBlock {
  if (type === 'C') return new asn1js.PrintableString({ value });
  if (type === 'emailAddress') return new asn1js.IA5String({ value });
  return new asn1js.Utf8String({ value });
}

/** A Name with one attribute per RDN (pkijs alone would put them all in one multi-valued RDN). */
export function buildName(spec: NameSpec): pkijs.RelativeDistinguishedNames {
  const attrs: { type: string; value: string }[] = Array.isArray(spec)
    ? spec
    : NAME_ORDER.flatMap((t) => {
        const v = spec[t];
        return v === undefined ? [] : [{ type: t, value: v }];
      });
  const typesAndValues = attrs.map(({ type, value }) => {
    const oid = ATTRIBUTE_OID[type] ?? type;
    if (!/^\d+(\.\d+)+$/.test(oid)) throw new CertificateFactoryError(`unknown name attribute ${type}`);
    return new pkijs.AttributeTypeAndValue({ type: oid, value: attributeValue(type, value) as never });
  });
  const der = new asn1js.Sequence({ value: typesAndValues.map((atv) => new asn1js.Set({ value: [atv.toSchema()] })) }).toBER(false);
  // valueBeforeDecode makes pkijs write exactly this encoding (one attribute per RDN).
  return new pkijs.RelativeDistinguishedNames({
    typesAndValues,
    valueBeforeDecode: der,
  });
}

/** IPv4 (4 bytes) or IPv6 (16 bytes) address bytes; throws on anything else. */
export function ipAddressBytes(ip: string): Uint8Array {
  if (isIPv4(ip)) return new Uint8Array(ip.split('.').map((p) => Number(p)));
  if (isIPv6(ip) && !ip.includes('%')) {
    let head = ip;
    let v4: number[] = [];
    const lastColon = ip.lastIndexOf(':');
    const tail = ip.slice(lastColon + 1);
    if (tail.includes('.')) {
      v4 = tail.split('.').map((p) => Number(p));
      head = ip.slice(0, lastColon + 1) + '0:0';
    }
    const [left, right] = head.includes('::') ? head.split('::') : [head, undefined];
    const groups = (s: string | undefined) => (s ? s.split(':').filter((g) => g !== '') : []);
    const l = groups(left);
    const r = groups(right);
    const fill = right === undefined ? 0 : 8 - l.length - r.length;
    const all = [...l, ...Array<string>(fill).fill('0'), ...r];
    if (all.length !== 8) throw new CertificateFactoryError(`bad IPv6 address ${ip}`);
    const out = new Uint8Array(16);
    all.forEach((g, i) => {
      const n = parseInt(g, 16);
      out[i * 2] = n >> 8;
      out[i * 2 + 1] = n & 0xff;
    });
    if (v4.length === 4) out.set(v4, 12);
    return out;
  }
  throw new CertificateFactoryError(`not an IP address: ${ip}`);
}

/** iPAddress name-constraint bytes: address then mask (RFC 5280 4.2.1.10). */
export function ipSubtreeBytes(cidr: string): Uint8Array {
  const slash = cidr.lastIndexOf('/');
  const addr = ipAddressBytes(slash < 0 ? cidr : cidr.slice(0, slash));
  const bits = addr.byteLength * 8;
  const prefix = slash < 0 ? bits : Number(cidr.slice(slash + 1));
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > bits || (slash >= 0 && !/^\d+$/.test(cidr.slice(slash + 1)))) {
    throw new CertificateFactoryError(`bad prefix length in ${cidr}`);
  }
  const mask = new Uint8Array(addr.byteLength);
  for (let i = 0; i < bits; i++) if (i < prefix) mask[i >> 3] = (mask[i >> 3] ?? 0) | (0x80 >> (i & 7));
  const out = new Uint8Array(addr.byteLength * 2);
  out.set(addr.map((b, i) => b & (mask[i] ?? 0)), 0);
  out.set(mask, addr.byteLength);
  return out;
}

function generalNames(spec: GeneralNamesSpec, ipEncoder: (ip: string) => Uint8Array): pkijs.GeneralName[] {
  const names: pkijs.GeneralName[] = [];
  for (const d of spec.dns ?? []) {
    if (!/^[\x21-\x7e]*$/.test(d)) throw new CertificateFactoryError(`dNSName must be printable ASCII: ${JSON.stringify(d)}`);
    names.push(new pkijs.GeneralName({ type: 2, value: d }));
  }
  for (const ip of spec.ip ?? []) {
    names.push(new pkijs.GeneralName({ type: 7, value: new asn1js.OctetString({ valueHex: ipEncoder(ip) }) }));
  }
  return names;
}

function keyUsageBits(usages: KeyUsageName[]): asn1js.BitString {
  if (usages.length === 0) throw new CertificateFactoryError('keyUsage needs at least one usage');
  const bits = usages.map((u) => KEY_USAGE_BIT[u]);
  const highest = Math.max(...bits);
  const bytes = new Uint8Array((highest >> 3) + 1);
  for (const b of bits) bytes[b >> 3] = (bytes[b >> 3] ?? 0) | (0x80 >> (b & 7));
  // DER (X.690 11.2.2): named bit lists drop trailing zero bits.
  return new asn1js.BitString({ valueHex: bytes, unusedBits: 7 - (highest & 7) });
}

function extension(extnID: string, critical: boolean, value: { toBER(sizeOnly?: boolean): ArrayBuffer }): pkijs.Extension {
  return new pkijs.Extension({ extnID, critical, extnValue: value.toBER(false) });
}

// ---------------------------------------------------------------------------------------------
// Issuing

type ResolvedIssuer = Omit<PreparedIssuer, 'prepared'>;

/**
 * Resolves an issuer once: parses its certificate, checks that the key matches it, takes its subject
 * (byte for byte) and its key identifier. Pass the result as `issuer` to skip that work per certificate.
 */
export function prepareIssuer(spec: IssuerSpec): PreparedIssuer {
  return { prepared: true, ...resolveIssuer(spec) };
}

function resolveIssuer(spec: IssuerSpec): ResolvedIssuer {
  if ('prepared' in spec) return spec;
  if ('name' in spec) {
    return {
      name: buildName(spec.name),
      key: spec.key,
      keyIdentifier: spec.keyIdentifier ?? keyIdentifierOf(publicKeyInfoOf(spec.key)),
    };
  }
  // Re-parsed from DER so that the subject keeps its exact encoding and extensions are decoded.
  const cert = pkijs.Certificate.fromBER(new Uint8Array('der' in spec ? spec.der : derFromPem(spec.certificate)));
  const key = 'der' in spec ? spec.keyObject : spec.key;
  const issuerSpki = publicKeyInfoOf(key);
  const certSpki = new Uint8Array(cert.subjectPublicKeyInfo.toSchema().toBER(false));
  if (!Buffer.from(certSpki).equals(Buffer.from(issuerSpki.toSchema().toBER(false)))) {
    throw new CertificateFactoryError('the issuer key does not match the issuer certificate');
  }
  const ski = cert.extensions?.find((e) => e.extnID === EXT.subjectKeyIdentifier);
  const skiValue = ski?.parsedValue instanceof asn1js.OctetString ? new Uint8Array(ski.parsedValue.valueBlock.valueHexView) : undefined;
  // The issuer's subject, re-used byte for byte (pkijs keeps the decoded encoding).
  return { name: cert.subject, key, keyIdentifier: skiValue ?? keyIdentifierOf(cert.subjectPublicKeyInfo) };
}

function signatureAlgorithmFor(key: KeyObject, hash: SignatureHash): pkijs.AlgorithmIdentifier {
  if (key.asymmetricKeyType === 'rsa') {
    // PKCS#1 v1.5 signature AlgorithmIdentifiers carry NULL parameters (RFC 4055 5).
    return new pkijs.AlgorithmIdentifier({ algorithmId: RSA_SIGNATURE_OID[hash], algorithmParams: new asn1js.Null() });
  }
  if (key.asymmetricKeyType === 'ec') {
    const oid = ECDSA_SIGNATURE_OID[hash];
    if (!oid) throw new CertificateFactoryError(`ECDSA cannot sign with ${hash}`);
    // ecdsa-with-SHA* AlgorithmIdentifiers have absent parameters (RFC 5758 3.2).
    return new pkijs.AlgorithmIdentifier({ algorithmId: oid });
  }
  throw new CertificateFactoryError(`unsupported issuer key type ${key.asymmetricKeyType ?? 'unknown'}`);
}

/**
 * Issues one certificate, synchronously. Everything not asked for is left out; v3 certificates get
 * SKI and AKI unless told otherwise.
 */
export function issueCertificate(options: CertificateOptions): IssuedCertificate {
  const version = options.version ?? 3;
  if (version === 1 && options.extensions) {
    throw new CertificateFactoryError('a version 1 certificate cannot carry extensions');
  }
  const subjectKey = options.key instanceof KeyObject ? options.key : generateKey(options.key ?? { type: 'ec' });
  if (subjectKey.type !== 'private') throw new CertificateFactoryError('the subject key must be a private key');
  const subjectSpki = publicKeyInfoOf(subjectKey);
  const subjectName = buildName(options.subject);

  const issuer: ResolvedIssuer = options.issuer
    ? resolveIssuer(options.issuer)
    : { name: subjectName, key: subjectKey, keyIdentifier: keyIdentifierOf(subjectSpki) };
  const hash = options.signatureHash ?? 'sha256';
  const sigAlg = signatureAlgorithmFor(issuer.key, hash);

  const notBefore = options.notBefore ?? new Date(Date.now() - 3600_000);
  const notAfter = options.notAfter ?? new Date(notBefore.getTime() + 365 * 86400_000);
  if (notAfter.getTime() < notBefore.getTime()) throw new CertificateFactoryError('notAfter is before notBefore');

  const cert = new pkijs.Certificate({
    version: version === 3 ? 2 : 0,
    serialNumber: new asn1js.Integer({ valueHex: serialBytes(options.serialNumber) }),
    signature: sigAlg,
    issuer: issuer.name,
    notBefore: timeOf(notBefore),
    notAfter: timeOf(notAfter),
    subject: subjectName,
    subjectPublicKeyInfo: subjectSpki,
    signatureAlgorithm: sigAlg,
  });

  if (version === 3) {
    const exts = buildExtensions(options.extensions ?? {}, subjectSpki, issuer);
    if (exts.length > 0) cert.extensions = exts;
  }

  const tbsSchema = cert.encodeTBS();
  const tbs = new Uint8Array(tbsSchema.toBER(false));
  cert.tbsView = tbs;
  const signature = cryptoSign(hash, tbs, issuer.key);
  cert.signatureValue = new asn1js.BitString({ valueHex: new Uint8Array(signature) });
  // What cert.toSchema() would give, without re-parsing the TBS it just encoded.
  const der = new Uint8Array(
    new asn1js.Sequence({ value: [tbsSchema, cert.signatureAlgorithm.toSchema(), cert.signatureValue] }).toBER(false),
  );
  return {
    der,
    pem: pemOf(der, 'CERTIFICATE'),
    keyPem: privateKeyPem(subjectKey),
    keyObject: subjectKey,
    certificate: cert,
  };
}

function buildExtensions(spec: ExtensionsSpec, subjectSpki: pkijs.PublicKeyInfo, issuer: ResolvedIssuer): pkijs.Extension[] {
  const out: pkijs.Extension[] = [];
  if (spec.basicConstraints) {
    const { cA, pathLen, critical = true } = spec.basicConstraints;
    if (pathLen !== undefined && (!cA || !Number.isInteger(pathLen) || pathLen < 0)) {
      throw new CertificateFactoryError('pathLen needs cA and a non-negative integer');
    }
    const bc = new pkijs.BasicConstraints(pathLen === undefined ? { cA } : { cA, pathLenConstraint: pathLen });
    out.push(extension(EXT.basicConstraints, critical, bc.toSchema()));
  }
  if (spec.keyUsage) {
    out.push(extension(EXT.keyUsage, spec.keyUsage.critical ?? true, keyUsageBits(spec.keyUsage.usages)));
  }
  if (spec.extendedKeyUsage) {
    const purposes = spec.extendedKeyUsage.purposes.map((p) => EKU_OID[p as ExtendedKeyUsageName] ?? p);
    if (purposes.length === 0) throw new CertificateFactoryError('extendedKeyUsage needs at least one purpose');
    for (const p of purposes) if (!/^\d+(\.\d+)+$/.test(p)) throw new CertificateFactoryError(`unknown EKU ${p}`);
    const eku = new pkijs.ExtKeyUsage({ keyPurposes: purposes });
    out.push(extension(EXT.extendedKeyUsage, spec.extendedKeyUsage.critical ?? false, eku.toSchema()));
  }
  if (spec.subjectAltName) {
    const names = generalNames(spec.subjectAltName, ipAddressBytes);
    if (names.length === 0) throw new CertificateFactoryError('subjectAltName needs at least one name');
    const gn = new pkijs.GeneralNames({ names });
    out.push(extension(EXT.subjectAltName, spec.subjectAltName.critical ?? false, gn.toSchema()));
  }
  if (spec.nameConstraints) {
    const { permitted, excluded, critical = true } = spec.nameConstraints;
    const subtrees = (s: GeneralNamesSpec | undefined) =>
      s ? generalNames(s, ipSubtreeBytes).map((base) => new pkijs.GeneralSubtree({ base })) : [];
    const p = subtrees(permitted);
    const x = subtrees(excluded);
    if (p.length + x.length === 0) throw new CertificateFactoryError('nameConstraints needs a subtree');
    const nc = new pkijs.NameConstraints({
      ...(p.length ? { permittedSubtrees: p } : {}),
      ...(x.length ? { excludedSubtrees: x } : {}),
    });
    out.push(extension(EXT.nameConstraints, critical, nc.toSchema()));
  }
  const ski = spec.subjectKeyIdentifier ?? true;
  if (ski !== false) {
    const id = ski === true ? keyIdentifierOf(subjectSpki) : ski;
    out.push(extension(EXT.subjectKeyIdentifier, false, new asn1js.OctetString({ valueHex: id })));
  }
  const aki = spec.authorityKeyIdentifier ?? true;
  if (aki !== false) {
    const id = aki === true ? issuer.keyIdentifier : aki;
    const value = new pkijs.AuthorityKeyIdentifier({ keyIdentifier: new asn1js.OctetString({ valueHex: id }) });
    out.push(extension(EXT.authorityKeyIdentifier, false, value.toSchema()));
  }
  out.push(...(spec.extra ?? []));
  return out;
}

/** Parses a certificate (DER or PEM) with pkijs. */
export function parseCertificate(input: Uint8Array | string): pkijs.Certificate {
  return pkijs.Certificate.fromBER(new Uint8Array(derFromPem(input)));
}
