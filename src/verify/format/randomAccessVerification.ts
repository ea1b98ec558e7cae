import type { ApprovedCaPolicy } from '../approvedCaPolicy.js';
import { authenticodeVerdict } from '../authenticodeVerification.js';
import { MalformedError } from '../malformed.js';
import { reason, type Verdict } from '../verdict.js';
import type { RandomAccessFormat, RandomAccessSource } from './signedFileFormat.js';

export type VerdictBody = Omit<Verdict, 'format' | 'sha256' | 'size'>;

/**
 * Verifies a random-access format over its finished bytes: the format parses its container and
 * hashes what its signature binds; the Authenticode pipeline judges the signatures against those
 * digests. Never throws: a parse error is MALFORMED, anything else INTERNAL_ERROR.
 */
export async function verifyRandomAccess(format: RandomAccessFormat, source: RandomAccessSource, policy: ApprovedCaPolicy, now: Date): Promise<VerdictBody> {
  try {
    const content = await format.read(source, policy.limits, policy.fileDigests);
    if (content.kind === 'blocked') return { verdict: 'block', reasons: content.reasons };
    const { dataType, sipGuid, fileDigests } = content.binding;
    const v = authenticodeVerdict(content.signatures, { dataType, sipGuid, fileDigests }, policy, now);
    if (!content.problems.length) return v;
    return { ...v, verdict: 'block', reasons: [...content.problems, ...v.reasons] };
  } catch (err) {
    const code = err instanceof MalformedError ? 'MALFORMED' : 'INTERNAL_ERROR';
    return { verdict: 'block', reasons: [reason(code, `${format.name.toUpperCase()}: ${(err as Error).message}`)] };
  }
}
