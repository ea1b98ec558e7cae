import type { Verifier } from '../verifier.js';
import { authenticodeVerdict } from '../authenticodeVerification.js';
import { MalformedError } from '../malformed.js';
import { reason, type Verdict } from '../verdict.js';
import type { RandomAccessFormat, RandomAccessSource, SignedContent } from './signedFileFormat.js';

export type VerdictBody = Omit<Verdict, 'format' | 'sha256' | 'size'>;

/**
 * What a format found, judged: its signatures through the Authenticode pipeline against the digests
 * it computed, its structural problems in front. The one path every format's verdict takes.
 */
export function signedContentVerdict(content: SignedContent, verifier: Verifier, now: Date): VerdictBody {
  if (content.kind === 'blocked') return { verdict: 'block', reasons: content.reasons };
  const { dataType, sipGuid, fileDigests } = content.binding;
  const v = authenticodeVerdict(content.signatures, { dataType, sipGuid, fileDigests }, verifier, now);
  const innerReasons = (content.inner ?? []).flatMap(({ name, content: c }) => {
    const iv = signedContentVerdict(c, verifier, now);
    return iv.verdict === 'allow' ? [] : iv.reasons.map((r) => ({ code: r.code, message: `package ${name}: ${r.message}` }));
  });
  if (!content.problems.length && !innerReasons.length) return v;
  return { ...v, verdict: 'block', reasons: [...content.problems, ...v.reasons, ...innerReasons] };
}

/**
 * Verifies a random-access format over its finished bytes: the format parses its container and
 * hashes what its signature binds. Never throws: a parse error is MALFORMED, anything else INTERNAL_ERROR.
 */
export async function verifyRandomAccess(format: RandomAccessFormat, source: RandomAccessSource, verifier: Verifier, now: Date): Promise<VerdictBody> {
  try {
    return signedContentVerdict(await format.read(source, verifier.policy.limits, verifier.policy.fileDigests), verifier, now);
  } catch (err) {
    const code = err instanceof MalformedError ? 'MALFORMED' : 'INTERNAL_ERROR';
    return { verdict: 'block', reasons: [reason(code, `${format.name.toUpperCase()}: ${(err as Error).message}`)] };
  }
}
