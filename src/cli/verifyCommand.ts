import { createReadStream, readFileSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { Verifier } from '../verify/verifier.js';
import type { Verdict } from '../verify/verdict.js';
import { loadRulesFile, RulesError } from '../policy/rulesFile.js';
import { buildPolicy } from '../policy/buildPolicy.js';
import { formatVerdictText } from './verdictTable.js';
import { buildTrustChannels } from '../policy/trustChannels.js';
import { UsageError } from './usageError.js';

export interface VerifyArgs {
  files: string[];
  rules: string;
  anchor?: string[];
  tsaAnchor?: string[];
  distrust?: string;
  allowSha1?: boolean;
  at?: string;
  detached?: string;
  /** Judge as the gate would for this URL (its trust channel). */
  url?: string;
  /** A signed catalog: FILEs pass by membership in it. */
  catalog?: string;
  json?: boolean;
  ekuMode?: 'strict' | 'nested';
  signatureMode?: 'primary' | 'best' | 'all';
}

/** Streams a file through the incremental verifier (MSI: then reads its streams): memory stays bounded whatever its size. */
export async function verifyFile(path: string, trust: Verifier, now: Date, detachedSignature?: Uint8Array): Promise<Verdict> {
  const verifier = trust.stream({ now, detachedSignature });
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    verifier.update(chunk as Buffer);
    if (verifier.earlyBlock) break;
  }
  if (!verifier.needsRandomAccess) return verifier.finish();
  // MSI: the digest covers streams scattered over the file; read them where they lie.
  const file = await open(path, 'r');
  try {
    const size = (await file.stat()).size;
    return await verifier.finishFrom({
      size,
      readAt: async (offset, length) => {
        const buf = Buffer.allocUnsafe(length);
        const { bytesRead } = await file.read(buf, 0, length, offset);
        if (bytesRead !== length) throw new Error(`${path}: short read (the file changed while it was verified)`);
        return buf;
      },
    });
  } finally {
    await file.close();
  }
}

export function parseAt(at: string | undefined): Date {
  if (at === undefined) return new Date();
  const d = new Date(at);
  if (!/^\d{4}-\d{2}-\d{2}/.test(at) || Number.isNaN(d.getTime())) throw new UsageError(`--at: "${at}" is not an ISO-8601 time`);
  return d;
}

export async function runVerify(args: VerifyArgs, out: (line: string) => void): Promise<number> {
  const now = parseAt(args.at);
  const loaded = loadRulesFile(args.rules);
  const policy = buildPolicy(loaded, {
    anchorFiles: args.anchor, tsaAnchorFiles: args.tsaAnchor, distrustFile: args.distrust,
    allowSha1: args.allowSha1, ekuMode: args.ekuMode, signatureMode: args.signatureMode,
  });
  let trust: Verifier;
  if (args.url === undefined) trust = new Verifier(policy);
  else {
    let u: URL;
    try {
      u = new URL(args.url);
    } catch {
      throw new UsageError(`--url: "${args.url}" is not a URL`);
    }
    trust = buildTrustChannels(loaded, policy).trustFor(u.hostname, u.pathname).verifier;
  }
  if (args.detached && args.files.length !== 1) throw new UsageError('--detached takes exactly one FILE');
  if (args.detached && args.catalog) throw new UsageError('--detached and --catalog exclude each other');
  let catalog: Uint8Array | undefined;
  if (args.catalog) {
    try {
      catalog = new Uint8Array(readFileSync(args.catalog));
    } catch (err) {
      throw new UsageError(`cannot read --catalog ${args.catalog}: ${(err as NodeJS.ErrnoException).code}`);
    }
  }
  let detached: Uint8Array | undefined;
  if (args.detached) {
    try {
      detached = new Uint8Array(readFileSync(args.detached));
    } catch (err) {
      throw new UsageError(`cannot read --detached ${args.detached}: ${(err as NodeJS.ErrnoException).code}`);
    }
  }
  for (const f of args.files) {
    let isFile = false;
    try { isFile = statSync(f).isFile(); } catch { /* reported below */ }
    if (!isFile) throw new UsageError(`${f}: no such file`);
  }
  let blocked = false;
  for (const file of args.files) {
    // A catalog member is hashed whole in memory (SIP digest); payload-sized files go through the gate instead.
    const verdict = catalog ? trust.catalogFile(catalog, readFileSync(file), { now }) : await verifyFile(file, trust, now, detached);
    if (verdict.verdict !== 'allow') blocked = true;
    out(args.json ? JSON.stringify({ file, ...verdict }) : formatVerdictText(file, verdict));
  }
  return blocked ? 1 : 0;
}

export { RulesError };
