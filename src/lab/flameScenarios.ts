import type { GateReasonCode } from '../verify/reasonCodes.js';
import type { WpadFinding } from '../audit/auditRecord.js';
import type { LabPki } from './labPki.js';
import type { IssuedCertificate } from '../pki/certificateFactory.js';
import type { AuthenticodeDigest } from './authenticodeSigner.js';
import { createSyntheticSignedPe } from './syntheticPe.js';

export const SCENARIO_NAMES = ['forged-md5', 'rogue-root', 'tampered', 'no-eku', 'sha1-downgrade', 'expired', 'range-splice', 'wpad-guard'] as const;
export type ScenarioName = (typeof SCENARIO_NAMES)[number];

export interface FlameScenario {
  name: ScenarioName;
  title: string;
  /** What the attacker serves for the targeted update, in one sentence. */
  attack: string;
  /** Reason codes the gate must block with (exactly these). */
  expectedCodes: GateReasonCode[];
  /** The attacker answers every request for the target with 206 and a spliced body (BITS-style). */
  rangeSplice: boolean;
  /** The payload the attacker serves for the targeted URL. */
  forgedPayload(pki: LabPki, genuineTarget: Buffer): Buffer;
  /** Also run a round of `patchgate wpad-guard` against the lab's rogue responder: the findings it must report (exactly these). */
  wpadFindings?: WpadFinding[];
}

/** A small signed PE (PE32+, 256 KiB) built in memory; the seed picks its "code". */
export function labPayload(signer: IssuedCertificate, chain: IssuedCertificate[], seed: number, digest: AuthenticodeDigest = 'sha256', corruptByteAt?: number): Buffer {
  const pe = createSyntheticSignedPe({
    size: 256 * 1024, seed, corruptByteAt,
    signer: { signerCertDer: signer.der, signerKey: signer.keyObject, extraCertsDer: chain.map((c) => c.der), digest },
  });
  return Buffer.concat([...pe.chunks()].map((c) => Buffer.from(c)));
}

/** Flame's own payload: different code (seed 666) wearing the forged certificate. */
const FLAME_SEED = 666;
export const GENUINE_SEED_TARGET = 2000;
export const GENUINE_SEED_OTHER = 1000;

export const SCENARIOS: Record<ScenarioName, FlameScenario> = {
  'forged-md5': {
    name: 'forged-md5',
    title: "Flame's forged certificate",
    attack: 'a payload signed by "MS", a certificate forged with MD5 under the vendor\'s licensing intermediate, which was never meant to sign code',
    expectedCodes: ['NO_CODESIGN_EKU', 'UNTRUSTED_ROOT', 'WEAK_ALGORITHM'],
    rangeSplice: false,
    forgedPayload: (pki) => labPayload(pki.forgedLeaf, [pki.licensingCa], FLAME_SEED),
  },
  'rogue-root': {
    name: 'rogue-root',
    title: 'A root the client trusts, not the approved update CA',
    attack: 'a payload signed under a rogue root that sits in the client\'s trust store (a DigiNotar-style compromised CA)',
    expectedCodes: ['UNTRUSTED_ROOT'],
    rangeSplice: false,
    forgedPayload: (pki) => labPayload(pki.roguePublisher, [pki.rogueCa], FLAME_SEED),
  },
  tampered: {
    name: 'tampered',
    title: 'A genuine signature over changed code',
    attack: 'the genuine update with one code byte changed after signing (the signature blob is intact)',
    expectedCodes: ['DIGEST_MISMATCH'],
    rangeSplice: false,
    forgedPayload: (pki) => labPayload(pki.publisher, [pki.updateCa], GENUINE_SEED_TARGET, 'sha256', 0x2000),
  },
  'no-eku': {
    name: 'no-eku',
    title: 'A vendor certificate without codeSigning',
    attack: 'a payload signed by a vendor certificate under the update CA that has no codeSigning EKU',
    expectedCodes: ['NO_CODESIGN_EKU'],
    rangeSplice: false,
    forgedPayload: (pki) => labPayload(pki.noEkuPublisher, [pki.updateCa], FLAME_SEED),
  },
  'sha1-downgrade': {
    name: 'sha1-downgrade',
    title: 'A SHA-1 signature',
    attack: 'a payload whose Authenticode digest and signer use SHA-1 (collision-prone), by the genuine publisher key',
    expectedCodes: ['WEAK_ALGORITHM'],
    rangeSplice: false,
    forgedPayload: (pki) => labPayload(pki.publisher, [pki.updateCa], FLAME_SEED, 'sha1'),
  },
  expired: {
    name: 'expired',
    title: 'An old update replayed',
    attack: 'an old, vulnerable update signed by a publisher certificate that expired years ago, with no timestamp',
    expectedCodes: ['CERT_EXPIRED'],
    rangeSplice: false,
    forgedPayload: (pki) => labPayload(pki.expiredPublisher, [pki.updateCa], 1999),
  },
  'range-splice': {
    name: 'range-splice',
    title: 'BITS ranges spliced',
    attack: 'every request answered 206 with ranges of the genuine file spliced with other code',
    expectedCodes: ['UPSTREAM_ERROR'],
    rangeSplice: true,
    forgedPayload: (_pki, genuine) => {
      const spliced = Buffer.from(genuine);
      Buffer.alloc(0x4000, 0xcc).copy(spliced, 0x1000); // int3 sled where the genuine code was
      return spliced;
    },
  },
  'wpad-guard': {
    name: 'wpad-guard',
    title: "Flame's forged certificate, and the rogue WPAD responder caught",
    attack: "Flame's forged-certificate payload, served after the rogue name responder made the attacker everyone's proxy; patchgate wpad-guard asks for wpad itself and reports the responder and its PAC",
    expectedCodes: ['NO_CODESIGN_EKU', 'UNTRUSTED_ROOT', 'WEAK_ALGORITHM'],
    rangeSplice: false,
    forgedPayload: (pki) => labPayload(pki.forgedLeaf, [pki.licensingCa], FLAME_SEED),
    wpadFindings: ['unexpected-wpad-responder', 'pac-diverts-updates'],
  },
};
