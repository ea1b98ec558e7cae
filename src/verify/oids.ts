/** Object identifiers used by Authenticode, CMS and X.509 checks. */
export const OID = {
  // CMS / PKCS#7
  data: '1.2.840.113549.1.7.1',
  signedData: '1.2.840.113549.1.7.2',
  contentType: '1.2.840.113549.1.9.3',
  messageDigest: '1.2.840.113549.1.9.4',
  signingTime: '1.2.840.113549.1.9.5',
  counterSignature: '1.2.840.113549.1.9.6',
  tstInfo: '1.2.840.113549.1.9.16.1.4',
  timeStampToken: '1.2.840.113549.1.9.16.2.14',
  // Authenticode
  spcIndirectData: '1.3.6.1.4.1.311.2.1.4',
  spcPeImageData: '1.3.6.1.4.1.311.2.1.15',
  spcCabData: '1.3.6.1.4.1.311.2.1.25',
  /** SpcSipInfo: the data type of MSI (and APPX) signatures, naming the SIP by GUID. */
  spcSipInfo: '1.3.6.1.4.1.311.2.1.30',
  spcNestedSignature: '1.3.6.1.4.1.311.2.4.1',
  msRfc3161Timestamp: '1.3.6.1.4.1.311.3.3.1',
  // Certificate trust lists and catalogs (MS-CAESO)
  certTrustList: '1.3.6.1.4.1.311.10.1',
  catalogList: '1.3.6.1.4.1.311.12.1.1',
  catalogListMember: '1.3.6.1.4.1.311.12.1.2',
  catalogListMemberV2: '1.3.6.1.4.1.311.12.1.3',
  // EKUs
  ekuCodeSigning: '1.3.6.1.5.5.7.3.3',
  ekuTimeStamping: '1.3.6.1.5.5.7.3.8',
  ekuAny: '2.5.29.37.0',
  ekuLifetimeSigning: '1.3.6.1.4.1.311.10.3.13',
  /** Microsoft root list signer: what signs authroot.stl / disallowedcert.stl (CTLs). */
  ekuRootListSigner: '1.3.6.1.4.1.311.10.3.9',
  // X.509 extensions
  extSubjectKeyIdentifier: '2.5.29.14',
  extKeyUsage: '2.5.29.15',
  extSubjectAltName: '2.5.29.17',
  extBasicConstraints: '2.5.29.19',
  extCrlDistributionPoints: '2.5.29.31',
  extCertificatePolicies: '2.5.29.32',
  extAuthorityKeyIdentifier: '2.5.29.35',
  extExtendedKeyUsage: '2.5.29.37',
  extAuthorityInfoAccess: '1.3.6.1.5.5.7.1.1',
  extNetscapeCertType: '2.16.840.1.113730.1.1',
  // Public keys
  rsaEncryption: '1.2.840.113549.1.1.1',
  ecPublicKey: '1.2.840.10045.2.1',
  ed25519: '1.3.101.112',
} as const;
