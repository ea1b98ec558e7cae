// Scenario 8: the verdict cost of a random-access format after the last byte. An MSI's digest
// covers its streams in MSI order, an MSIX's its ZIP parts and every block against the block map,
// so neither can be hashed as bytes arrive: the gate reads the finished spool back. Measured in
// process on the compiled core: a signed package (build-msi.mjs or build-appx.mjs + osslsigncode,
// payload of SIZE) is streamed through IncrementalVerifier as the gate does
// (whole-file SHA-256), written to a file as the spool would be, then finishFrom() reads it back
// a piece at a time. Reported: ms from the last byte to the verdict, the MSI digest's MB/s, and the
// RSS growth over the verdict (memory must not grow with the size).
import { execFileSync } from 'node:child_process';
import { createReadStream, mkdirSync, readFileSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createHash } from 'node:crypto';
import { REPO, DIST, PKI, MiB, nowMs, round } from './common.mjs';

export async function runMsiScenario({ tmp, size, log, kind = 'msi' }) {
  const dir = join(tmp, kind);
  mkdirSync(dir, { recursive: true });
  const unsigned = join(dir, `unsigned.${kind}`);
  const signed = join(dir, `signed.${kind}`);
  execFileSync(process.execPath, [join(REPO, 'test', 'fixtures', kind === 'msi' ? 'build-msi.mjs' : 'build-appx.mjs'), unsigned, '--payload-size', String(size)]);
  execFileSync('osslsigncode', ['sign', '-certs', join(PKI, 'publisher-certs.pem'), '-key', join(PKI, 'publisher.key'), ...(kind === 'msi' ? ['-add-msi-dse'] : []), '-in', unsigned, '-out', signed], { stdio: 'ignore' });
  const dist = (p) => import(pathToFileURL(join(DIST, p)).href);
  const [{ IncrementalVerifier }, { emptyPolicy, fileDigestsFor }, { pinCertificateFile }] = await Promise.all([
    dist('verify/incrementalVerifier.js'), dist('verify/approvedCaPolicy.js'), dist('policy/trustMaterial.js'),
  ]);
  const policy = emptyPolicy({ anchors: pinCertificateFile(join(PKI, 'updateca.pem')), tsaAnchors: [], fileDigests: fileDigestsFor(false) });
  const bytes = statSync(signed).size;
  const runs = [];
  for (let rep = 0; rep < 3; rep++) {
    const v = new IncrementalVerifier(policy, {});
    for await (const chunk of createReadStream(signed, { highWaterMark: 1 << 20 })) v.update(chunk);
    if (!v.needsRandomAccess) throw new Error(`the ${kind} was not recognised as random-access`);
    global.gc?.();
    const rss0 = process.memoryUsage().rss;
    let peak = rss0;
    const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 5);
    const fh = await open(signed, 'r');
    const t0 = nowMs();
    const verdict = await v.finishFrom({
      size: bytes,
      readAt: async (offset, length) => {
        const buf = Buffer.allocUnsafe(length);
        await fh.read(buf, 0, length, offset);
        return buf;
      },
    });
    const ms = nowMs() - t0;
    clearInterval(sampler);
    peak = Math.max(peak, process.memoryUsage().rss);
    await fh.close();
    if (verdict.verdict !== 'allow') throw new Error(`signed ${kind} blocked: ${JSON.stringify(verdict.reasons)}`);
    runs.push({ ms, rssGrowth: (peak - rss0) / MiB });
  }
  const whole = readFileSync(signed);
  const s0 = nowMs();
  createHash('sha256').update(whole).digest();
  const shaMs = nowMs() - s0;
  const best = runs.reduce((a, b) => (b.ms < a.ms ? b : a));
  log(`  ${kind} ${size / MiB} MiB: verdict ${runs.map((r) => round(r.ms, 1)).join('/')} ms after the last byte`);
  return {
    name: `8 ${kind === 'msi' ? 'MSI' : 'MSIX'} verdict after last byte (core, file) ${Math.round(size / MiB)} MiB`, bytes, clients: 1,
    'MB/s': round(bytes / 1e6 / (best.ms / 1000), 1), ratio_vs_sha256: round(shaMs / best.ms, 2),
    verify_ms_after_last_byte: round(best.ms, 1), verify_ms_runs: runs.map((r) => round(r.ms, 1)),
    rss_growth_mib_during_verdict: round(Math.max(...runs.map((r) => r.rssGrowth)), 1), sha256_ms: round(shaMs, 1),
  };
}
