import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { REPO } from '../support/fixtures.js';

/** Markdown files whose links are checked: the README and every page of docs/. */
const pages = ['README.md', ...readdirSync(join(REPO, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))];

/** Lines outside fenced code blocks. */
function prose(text: string): string[] {
  let fenced = false;
  return text.split('\n').filter((line) => {
    if (line.trimStart().startsWith('```')) { fenced = !fenced; return false; }
    return !fenced;
  });
}

/** The anchors GitHub gives a page's headings (lower case, punctuation dropped, "-1" for repeats). */
function anchors(file: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const line of prose(readFileSync(file, 'utf8'))) {
    const m = /^#{1,6} (.*)$/.exec(line);
    if (!m) continue;
    const base = m[1]!.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

describe('README.md and docs/ links', () => {
  it('every relative link reaches a file of the repository, and every #anchor a heading', () => {
    const broken: string[] = [];
    for (const page of pages) {
      const text = prose(readFileSync(join(REPO, page), 'utf8')).join('\n').replace(/`[^`\n]*`/g, (code) => (code.includes('](') ? '' : code));
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
        const [path, anchor] = target.split('#') as [string, string | undefined];
        const file = path === '' ? join(REPO, page) : join(REPO, dirname(page), path);
        if (!existsSync(file)) { broken.push(`${page}: ${target} (no such file)`); continue; }
        if (anchor !== undefined && (statSync(file).isDirectory() || !file.endsWith('.md') || !anchors(file).has(anchor))) {
          broken.push(`${page}: ${target} (no heading #${anchor} in ${relative(REPO, file)})`);
        }
      }
    }
    expect(broken).toEqual([]);
  });

  it('the README stays short: a pitch, a quick start, the commands and links', () => {
    expect(readFileSync(join(REPO, 'README.md'), 'utf8').split('\n').length).toBeLessThanOrEqual(200);
  });
});
