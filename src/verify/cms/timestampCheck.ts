import { createHash } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { OID } from '../oids.js';
import type { Verifier } from '../verifier.js';
import { reason, type VerdictReason } from '../verdict.js';
import { MalformedError, parsing } from '../malformed.js';
import { validateChain } from '../chain/chainValidator.js';
import type { CertificateInfo } from '../chain/certificateInfo.js';
import { attributeValues, parseSignedData, singleAttribute, type SignedDataParts, type SignerParts } from './signedDataParts.js';
import { checkSigner, judgeDigest } from './signerCheck.js';

export interface AcceptedTimestamp {
  time: Date;
  authority: string;
  kind: 'rfc3161' | 'authenticode';
}

export interface TimestampResult {
  accepted?: AcceptedTimestamp;
  /** Why each timestamp present was not accepted (reported only when the time was needed). */
  rejected: VerdictReason[];
}

/** A timestamp is accepted only if its time is not later than this far beyond "now" (clock skew). */
const FUTURE_SKEW_MS = 5 * 60 * 1000;

/**
 * Looks for RFC 3161 timestamps (Microsoft's nested attribute) and Authenticode countersignatures on
 * a signer, and accepts the first that fully verifies: signature, imprint over the signer's signature
 * value, and a timeStamping chain to a pinned TSA anchor valid at the time it asserts.
 */
export function checkTimestamps(outer: SignedDataParts, signer: SignerParts, verifier: Verifier, now: Date): TimestampResult {
  const rejected: VerdictReason[] = [];
  const signatureValue = signer.info.signature.valueBlock.valueHexView;
  const candidates: (() => AcceptedTimestamp)[] = [];
  const tokens = [...attributeValues(signer.info.unsignedAttrs, OID.msRfc3161Timestamp), ...attributeValues(signer.info.unsignedAttrs, OID.timeStampToken)];
  for (const el of tokens) {
    candidates.push(() => checkRfc3161(new Uint8Array(el.valueBeforeDecodeView), signatureValue, verifier, now));
  }
  for (const el of attributeValues(signer.info.unsignedAttrs, OID.counterSignature)) {
    candidates.push(() => checkCountersignature(el, outer, signatureValue, verifier, now));
  }
  for (const candidate of candidates) {
    try {
      return { accepted: candidate(), rejected };
    } catch (err) {
      rejected.push(...(err instanceof TimestampRejected ? err.reasons : [reason('MALFORMED', `timestamp: ${(err as Error).message}`)]));
    }
  }
  return { rejected };
}

class TimestampRejected extends Error {
  constructor(readonly reasons: VerdictReason[]) {
    super(reasons.map((r) => r.message).join('; '));
  }
}

function finish(tsaSigner: CertificateInfo | undefined, signerReasons: VerdictReason[], bag: readonly CertificateInfo[], time: Date, verifier: Verifier, now: Date, kind: AcceptedTimestamp['kind']): AcceptedTimestamp {
  const out = [...signerReasons];
  if (time.getTime() > now.getTime() + FUTURE_SKEW_MS) out.push(reason('SIGNATURE_INVALID', `timestamp: time ${time.toISOString()} is in the future`));
  if (!tsaSigner) throw new TimestampRejected(out.length ? out : [reason('SIGNATURE_INVALID', 'timestamp: signer certificate missing')]);
  const chain = validateChain(tsaSigner, bag, verifier.anchors.timestamp, 'timeStamping', time, verifier);
  out.push(...chain.reasons);
  if (out.length) throw new TimestampRejected(out);
  return { time, authority: tsaSigner.subject, kind };
}

function checkRfc3161(der: Uint8Array, imprintOf: Uint8Array, verifier: Verifier, now: Date): AcceptedTimestamp {
  const parts = parseSignedData(der, 'RFC 3161 timestamp token');
  if (parts.eContentType !== OID.tstInfo || !parts.eContentValue) throw new MalformedError('timestamp token does not hold a TSTInfo');
  if (parts.signers.length !== 1) throw new MalformedError('timestamp token must have one signer');
  const tst = parsing('TSTInfo', () => pkijs.TSTInfo.fromBER(new Uint8Array(parts.eContentValue!)));
  const out: VerdictReason[] = [];
  const imprintDigest = judgeDigest(tst.messageImprint.hashAlgorithm.algorithmId, verifier.policy, 'imprint digest', out, 'timestamp: ');
  if (imprintDigest && imprintDigest !== 'md5') {
    const expected = Buffer.from(tst.messageImprint.hashedMessage.valueBlock.valueHexView);
    if (!createHash(imprintDigest).update(imprintOf).digest().equals(expected)) {
      out.push(reason('SIGNATURE_INVALID', 'timestamp: the imprint does not match the signature it claims to time'));
    }
  }
  const signer = checkSigner(parts, parts.signers[0]!, verifier, { prefix: 'timestamp: ' });
  out.push(...signer.reasons);
  return finish(signer.signer, out, parts.certificates, tst.genTime, verifier, now, 'rfc3161');
}

function checkCountersignature(el: asn1js.AsnType, outer: SignedDataParts, signatureValue: Uint8Array, verifier: Verifier, now: Date): AcceptedTimestamp {
  const info = parsing('countersignature', () => new pkijs.SignerInfo({ schema: el }));
  let signedAttrsDer: Uint8Array | undefined;
  for (const part of (el as asn1js.Sequence).valueBlock.value) {
    if (part.idBlock.tagClass === 3 && part.idBlock.tagNumber === 0 && part.idBlock.isConstructed) {
      signedAttrsDer = new Uint8Array(part.valueBeforeDecodeView);
      signedAttrsDer[0] = 0x31;
    }
  }
  // A countersignature signs the outer signature value; its certificates travel in the outer bag.
  const pseudo: SignedDataParts = {
    eContentType: OID.data,
    eContentValue: signatureValue,
    eContentElement: undefined,
    certificates: outer.certificates,
    digestAlgorithmOids: [info.digestAlgorithm.algorithmId],
    signers: [{ info, signedAttrsDer }],
  };
  const ct = singleAttribute(info.signedAttrs, OID.contentType, 'contentType');
  if (!ct) {
    // RFC 5652 countersignatures omit contentType; Authenticode's carry id-data. Both are fine.
    info.signedAttrs?.attributes.push(new pkijs.Attribute({ type: OID.contentType, values: [new asn1js.ObjectIdentifier({ value: OID.data })] }));
  }
  const signer = checkSigner(pseudo, pseudo.signers[0]!, verifier, { prefix: 'timestamp: ' });
  const st = singleAttribute(info.signedAttrs, OID.signingTime, 'signingTime');
  if (!(st instanceof asn1js.UTCTime || st instanceof asn1js.GeneralizedTime)) {
    throw new TimestampRejected([reason('MALFORMED', 'timestamp: countersignature has no signingTime')]);
  }
  return finish(signer.signer, signer.reasons, outer.certificates, st.toDate(), verifier, now, 'authenticode');
}
