/**
 * Stable reason codes. Users grep these in audit logs and docs/reason-codes.md lists them: never
 * rename one. The text here is that table's description of each code (`npm run docs:reason-codes`).
 */
export const REASON_CODES = {
  NOT_SIGNED: 'The payload carries no signature (an unsigned PE or CAB, an empty certificate table, an MSI without a DigitalSignature stream, a package without AppxSignature.p7x).',
  MALFORMED: 'The file or its signature cannot be parsed (bad PE/CAB headers, bad ASN.1, truncated, inconsistent structure).',
  DIGEST_MISMATCH: 'The digest computed over the file differs from the one the signature signs (the file was modified after signing).',
  SIGNATURE_INVALID: 'A cryptographic signature does not verify (signer over its signed attributes, messageDigest attribute, or a certificate over its child), or the signer certificate is missing.',
  UNTRUSTED_ROOT: 'The certificates carried by the signature do not lead to any pinned, approved anchor.',
  NO_CODESIGN_EKU: 'The leaf, or a CA between the leaf and the anchor, does not list the codeSigning EKU (for a timestamp: timeStamping; for a certificate trust list: the root-list-signer EKU 1.3.6.1.4.1.311.10.3.9); strict mode treats a missing EKU extension on a CA as a failure: that is how Flame passed.',
  WEAK_ALGORITHM: 'MD5 anywhere, or SHA-1 where the rules do not allow it, or an RSA key below the rules\' minimum size.',
  UNSUPPORTED_ALGORITHM: 'An algorithm the verifier does not implement (a digest, signature scheme or key type it cannot check).',
  EXPLICIT_CURVE: 'An EC public key with explicit curve parameters instead of a named curve (CVE-2020-0601, the "CurveBall" impersonation).',
  CERT_EXPIRED: 'A certificate of the chain (anchor included) is outside its validity at the time of verification: the timestamp\'s time if a valid timestamp proves one, else now or --at.',
  DISTRUSTED_CERT: 'A certificate on the chain is on the distrust list (the distrust list beats everything else).',
  BASIC_CONSTRAINTS: 'A certificate that issues another is not a CA (basicConstraints cA false or absent) or a path length constraint is exceeded.',
  KEY_USAGE: 'A key usage extension forbids the use: the leaf lacks digitalSignature or an issuing CA lacks keyCertSign.',
  CRITICAL_EXTENSION: 'A certificate carries a critical extension the verifier does not understand.',
  TRAILING_DATA: 'Bytes after the certificate table, the CAB signature or the PKCS#7 blob of an MSI DigitalSignature stream or the last sector an MSI allocates (CVE-2020-1464), padding inside WIN_CERTIFICATE beyond 8-byte alignment (CVE-2013-3900), or extra WIN_CERTIFICATE entries.',
  UNSUPPORTED_FORMAT: 'The bytes are not a format the verifier checks (not PE, CAB, MSI/MSP, APPX/MSIX, a certificate trust list or catalog, or a detached CMS pair), a ZIP that is no package, or an encrypted package.',
  OVERSIZE: 'The payload, its headers or its signature exceed a configured size limit.',
  BAD_REQUEST: 'The client\'s request names no resource the gate can serve (a request target that is neither /path nor http:// absolute-form: `*`, `HTTP://…`, `https://…` without CONNECT, `ftp://…`): refused 400, never forwarded.',
  UPSTREAM_ERROR: 'The upstream server failed or closed the connection before the whole payload arrived.',
  TIMEOUT: 'The upstream stalled past the idle timeout, or the transfer exceeded the total time limit.',
  INTERNAL_ERROR: 'patchgate itself failed while verifying: the payload is blocked (fail closed).',
  ACCESS_DENIED: 'The gate refused the request itself: the client\'s address is not in `clients`, or the destination is one the rules do not let it proxy (a port not listed, a loopback or link-local address no rule names, the gate\'s own addresses, a host neither inspected nor pinned under `passThrough: deny`), or the Host inside a CONNECT names another host.',
} as const;

/**
 * Codes only the shell produces (the proxy, the ICAP service, the inspection pipeline they share):
 * about the request or the transfer, never about the payload's bytes. The core never emits one.
 */
export const SHELL_REASON_CODES = ['BAD_REQUEST', 'UPSTREAM_ERROR', 'TIMEOUT', 'ACCESS_DENIED'] as const satisfies readonly (keyof typeof REASON_CODES)[];

export type ShellReasonCode = (typeof SHELL_REASON_CODES)[number];

/** Every code an audit record may carry: the core's and the shell's (REASON_CODES lists them all for users). */
export type GateReasonCode = keyof typeof REASON_CODES;

/** The core's codes: the only ones a Verdict can carry. */
export type ReasonCode = Exclude<GateReasonCode, ShellReasonCode>;

export const ALL_REASON_CODES = Object.keys(REASON_CODES) as GateReasonCode[];

const SHELL_ONLY: ReadonlySet<string> = new Set(SHELL_REASON_CODES);
export const CORE_REASON_CODES = ALL_REASON_CODES.filter((c): c is ReasonCode => !SHELL_ONLY.has(c));
